"""Prefect flow ``ingest``: optional synth, then the ingest DAG of flows/dag.py (decode -> features ->
flow -> align -> filter -> augment -> [vae] -> latents -> shards) with each stage a Prefect task;
``demo`` lives in flows/demo.py.

Flows only orchestrate: each task runs one stage call and logs what it did; stage results are cached
by the artifact store (versions), so Prefect's own caching is off.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.dag import IngestConfig, Step, run_ingest
from flows.engine import Runner
from flows.progress import progress_callback
from flows.retries import TASK_OPTIONS
from storage import Artifact, ArtifactStore

__all__ = ["IngestConfig", "ingest_flow", "prefect_step", "summary"]


def summary(art: Artifact) -> dict[str, Any]:
    return {"stage": art.stage, "version": art.version, "ref": art.ref, "path": art.path, "reused": art.reused,
            "counts": art.counts}


def prefect_step(name: str, step: Step) -> Artifact:
    """Run one DAG step as the Prefect task ``name`` (retries for transient errors, progress logged)."""

    def run() -> Artifact:
        logger = get_run_logger()
        art = step(progress_callback(name, logger=logger))
        if art.reused:
            logger.info("%s: reused the committed artifact, nothing recomputed (%s)", art.ref, art.counts)
        else:
            logger.info("%s: computed and committed (%s)", art.ref, art.counts)
        return art

    return task(name=name, **TASK_OPTIONS)(run)()


@flow(name="ingest", log_prints=True)
def ingest_flow(
    videos_dir: str | None = None,
    labels_csv: str | None = None,
    root: str | None = None,
    preset: str = "demo",
    synth_clips: int = 0,
    synth_seed: int = 0,
    overrides: dict[str, Any] | None = None,
    runner: str = "local",
    synth_noisy_share: float = 0.0,
    synth_world: list[str] | None = None,
) -> dict[str, Any]:
    """Videos (and/or generated synthetic clips) -> training shards, every stage a committed artifact.

    ``synth_noisy_share``: the share of synthetic train clips made noisy pairs (shifted, swapped or
    off-screen audio: vta_core/synth_world.py); 0 is the clean world. ``synth_world``: the harder worlds'
    options (``lookalike``, ``overlap``, ``moving``).

    ``runner``: where the per-shard tasks run; the flow must have been given that runner's task runner
    (``flows.engine.with_runner``), as ``vta ingest --runner`` and the ``ingest`` deployment do."""
    from stages.synth import synth_paths, synth_stage
    from vta_core.synth_world import world_kwargs

    shard_map = Runner(runner).shard_map()
    store = ArtifactStore(root)
    cfg = IngestConfig.for_preset(preset, **(overrides or {}))
    results: dict[str, Any] = {"root": store.root, "config": dataclasses.asdict(cfg), "stages": []}
    if synth_clips > 0:
        noisy = {"noisy_share": synth_noisy_share} if synth_noisy_share else {}  # the clean world keeps its version
        world = world_kwargs(synth_world)
        syn = prefect_step("synth", lambda _: synth_stage(store, clips=synth_clips, seed=synth_seed, **noisy, **world))
        paths = synth_paths(syn)
        results["stages"].append({**summary(syn), **paths})
        arts = run_ingest(store, videos_dir=paths["videos_dir"], labels_csv=paths["labels_csv"], config=cfg,
                          lineage={"synth": syn.ref}, run_step=prefect_step, shard_map=shard_map)
        results["stages"] += [summary(a) for a in arts]
    if videos_dir is not None:
        arts = run_ingest(store, videos_dir=str(Path(videos_dir).resolve()),
                          labels_csv=str(Path(labels_csv).resolve()) if labels_csv else None, config=cfg,
                          run_step=prefect_step, shard_map=shard_map)
        results["stages"] += [summary(a) for a in arts]
    if not results["stages"]:
        raise ValueError("ingest needs videos_dir or synth_clips > 0")
    return results
