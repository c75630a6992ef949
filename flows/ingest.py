"""Prefect flows: ``ingest`` (optional synth -> decode) and ``demo`` (synth -> ingest).

Flows only orchestrate: each task calls one stage callable and returns a small JSON-able summary.
Stage results are cached by the artifact store (versions), so Prefect's own caching is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.progress import progress_callback
from stages.decode import DecodeParams, decode_stage
from stages.synth_stage import synth_paths, synth_stage
from storage import Artifact, ArtifactStore
from vta_core.geometry import geometry_for


def summary(art: Artifact) -> dict[str, Any]:
    return {"stage": art.stage, "version": art.version, "ref": art.ref, "path": art.path, "reused": art.reused,
            "counts": art.counts}


def decode_params(preset: str, *, max_windows: int | None = None) -> DecodeParams:
    """Decode geometry of a preset: frames at its fps/size, audio at its rate, windows of its length."""
    g = geometry_for(preset)
    return DecodeParams(fps=g.fps, size=g.frame_size, sample_rate=g.sample_rate, duration_s=g.duration_s,
                        max_windows=max_windows)


def _log_result(art: Artifact) -> None:
    logger = get_run_logger()
    if art.reused:
        logger.info("%s: reused the committed artifact, nothing recomputed (%s)", art.ref, art.counts)
    else:
        logger.info("%s: computed and committed (%s)", art.ref, art.counts)


@task(name="synth", cache_policy=NO_CACHE)
def synth_task(root: str, clips: int, seed: int) -> dict[str, Any]:
    art = synth_stage(ArtifactStore(root), clips=clips, seed=seed)
    _log_result(art)
    return {**summary(art), **synth_paths(art)}


@task(name="decode", cache_policy=NO_CACHE)
def decode_task(root: str, videos_dir: str, labels_csv: str | None, preset: str, max_windows: int | None,
                workers: int, lineage: dict[str, str] | None = None) -> dict[str, Any]:
    art = decode_stage(
        ArtifactStore(root), videos_dir=videos_dir, labels_csv=labels_csv,
        params=decode_params(preset, max_windows=max_windows), workers=workers,
        progress=progress_callback("decode", logger=get_run_logger()), lineage=lineage,
    )
    _log_result(art)
    return summary(art)


@flow(name="ingest", log_prints=True)
def ingest_flow(
    videos_dir: str | None = None,
    labels_csv: str | None = None,
    root: str | None = None,
    preset: str = "demo",
    synth_clips: int = 0,
    synth_seed: int = 0,
    max_windows: int | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Videos (and/or generated synthetic clips) -> committed stage artifacts.

    With ``synth_clips > 0`` and no ``videos_dir``, the synthetic clips are the input; with both,
    the two are ingested as two decode artifacts.
    """
    store = ArtifactStore(root)
    results: dict[str, Any] = {"root": store.root, "stages": []}
    if synth_clips > 0:
        syn = synth_task(store.root, synth_clips, synth_seed)
        results["stages"].append(syn)
        dec = decode_task(store.root, syn["videos_dir"], syn["labels_csv"], preset, max_windows, workers,
                          lineage={"synth": syn["ref"]})
        results["stages"].append(dec)
    if videos_dir is not None:
        dec = decode_task(store.root, str(Path(videos_dir).resolve()),
                          str(Path(labels_csv).resolve()) if labels_csv else None, preset, max_windows, workers)
        results["stages"].append(dec)
    if not results["stages"]:
        raise ValueError("ingest needs videos_dir or synth_clips > 0")
    return results


@flow(name="demo", log_prints=True)
def demo_flow(root: str | None = None, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """The whole DAG on generated data. Today: synth -> decode (later stages join as they land)."""
    clips = 8 if quick else 64
    return ingest_flow(root=root, preset="demo", synth_clips=clips, synth_seed=seed)
