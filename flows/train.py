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
from storage import ArtifactStore


def _init_source(store: ArtifactStore, init: str | None):
    """``--init``: a checkpoint/train-artifact folder on disk, else a ``train[@VERSION]`` ref."""
    if init is None:
        return None
    if Path(init).exists():
        return str(Path(init).resolve())
    return store.resolve(init)


@task(name="train", **TASK_OPTIONS)
def train_task(root: str, shards: str, options: dict[str, Any]) -> dict[str, Any]:
    from stages.train import CHECKPOINT, train_stage

    store = ArtifactStore(root)
    opts = dict(options)
    init = _init_source(store, opts.pop("init", None))
    vae = opts.pop("vae", None)
    art = train_stage(store, shards=store.resolve(shards), init=init, vae=str(Path(vae).resolve()) if vae else None,
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
