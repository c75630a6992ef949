"""The synthetic dataset as a versioned artifact ``synth/{version}/`` (see vta_core/synth_world.py)."""

from __future__ import annotations

import logging
from typing import Any

from storage import Artifact, ArtifactStore, StageSpec, local_copy
from vta_core.synth_world import generate_synth

log = logging.getLogger("vta.synth")

STAGE = "synth"
CODE_VERSION = "2"  # 2: boxes.parquet (per-frame boxes of the ball and the objects)


def synth_stage(store: ArtifactStore, *, clips: int, seed: int, progress: bool = False, **synth_kwargs: Any) -> Artifact:
    """Generate (or reuse) ``clips`` synthetic clips; the artifact holds ``videos/``, ``labels.csv``,
    ``events.parquet``, ``boxes.parquet`` and ``synth.json`` exactly as ``vta synth`` writes them. FFmpeg writes real files:
    on an object store they are made in a local staging folder and uploaded before the commit."""
    spec = StageSpec(STAGE, {"clips": clips, "seed": seed, **synth_kwargs}, {}, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact (%d clips)", w.artifact.ref, w.artifact.counts.get("ok", 0))
            return w.artifact
        with w.staging() as folder:
            result = generate_synth(folder, clips=clips, seed=seed, progress=progress, **synth_kwargs)
        return w.commit(counts={"ok": result.n_clips, "failed": 0, "filtered": 0})


def synth_paths(art: Artifact) -> dict[str, str]:
    """Local paths of a synth artifact's videos folder, labels CSV and events table (an object store's
    artifact is first copied into the local cache: :func:`storage.local_copy`)."""
    art = local_copy(art)
    return {"videos_dir": art.file("videos"), "labels_csv": art.file("labels.csv"), "events": art.file("events.parquet")}


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    return synth_stage(out, **art.params)
