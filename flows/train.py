"""Prefect flow ``train``: one task that runs the train stage on committed shards.

The task gets refs (``stage@version``) and plain values; the stage resolves lineage (VAE, encoders)
from the shards. Caching is the artifact store's (same inputs + params = same version = reuse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.ingest import summary
from flows.progress import progress_callback
from flows.retries import TASK_OPTIONS
from storage import Artifact, ArtifactStore
from storage.lineage import resolve_source
from vta_core.presets import get_preset


def _source(store: ArtifactStore, value: str | None, *, stage: str) -> Artifact | Path | None:
    """``--init`` / ``--vae``: a folder on disk (made absolute) or a ``STAGE[@VERSION]`` ref."""
    if value is None:
        return None
    source = resolve_source(store, value, stage=stage)
    return source.resolve() if isinstance(source, Path) else source


@task(name="train", **TASK_OPTIONS)
def train_task(root: str, shards: str, options: dict[str, Any]) -> dict[str, Any]:
    from stages.train import CHECKPOINT, train_stage

    store = ArtifactStore(root)
    opts = dict(options)
    preset = get_preset(opts.pop("preset", "demo"))
    init = _source(store, opts.pop("init", None), stage="train")
    vae = _source(store, opts.pop("vae", None), stage="vae")
    art = train_stage(store, shards=store.resolve(shards), preset=preset, init=init, vae=vae,
                      progress=progress_callback("train", logger=get_run_logger()), **opts)
    logger = get_run_logger()
    logger.info("%s: %s", art.ref, "reused the committed artifact" if art.reused else "trained and committed")
    return {**summary(art), "checkpoint": art.file(CHECKPOINT), "loss_last": art.record.get("loss_last")}


@flow(name="train", log_prints=True)
def train_flow(root: str | None = None, shards: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on ``shards`` (a ref; default the latest committed shards artifact). ``options`` are
    train_stage keyword arguments (preset, mode, steps, batch_size, lr, init, ...), None = default."""
    store = ArtifactStore(root)
    ref = store.resolve(shards or "shards").ref  # one clear error when there are none
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    return {"root": store.root, "shards": ref, "train": train_task(store.root, ref, opts)}
