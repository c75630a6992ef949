"""Per-shard work as tasks: plan -> run one shard -> finalize (docs/architecture.md#scale-out).

A sharded stage is written in three parts:

- **plan** (in the driver, inside the version's writer: under its lock on a local root): the stage's
  shards as :class:`ShardJob` s — the output shard's name and a small picklable payload saying what it
  reads. Shards whose marker ``_shards/NAME.json`` exists are done and are not run again.
- **run one shard**: a :class:`ShardTask` — a module-level, picklable object, so a Dask worker can
  import and run it — reads its inputs from the store, writes its payload files, then its marker last.
  A task whose marker already exists returns the marker's record and writes nothing: a retried or
  rerun task is idempotent, and a task killed mid-shard leaves no marker (its files are overwritten
  with the same bytes by the rerun).
- **finalize** (in the driver): index + manifest from the shards' records in plan order, then the
  commit record.

Where the shards run is a :data:`ShardMap`: :func:`local_map` (in this process, in order — the
embedded default) or the Prefect-on-Dask map of ``flows/engine.py``. Tasks return small records
(manifest rows and index rows); the data moves only through the store. Nothing here depends on which
map ran the shards, so artifacts are byte-identical whatever the engine.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from storage.store import Artifact, ArtifactStore, ArtifactWriter, StageSpec

log = logging.getLogger("vta.sharded")

Progress = Callable[[int, int], None]
Record = dict[str, Any]  # a shard marker's content: {"shard", "rows", "files", **stage-specific index}


@dataclass(frozen=True)
class ArtifactRef:
    """A committed artifact by name (cheap to send to a worker; the record is read there, once per process)."""

    root: str
    stage: str
    version: str

    @classmethod
    def of(cls, art: Artifact) -> ArtifactRef:
        return cls(art.root, art.stage, art.version)

    def load(self) -> Artifact:
        return load_artifact(self.root, self.stage, self.version)


@functools.lru_cache(maxsize=16)
def open_store(root: str) -> ArtifactStore:
    """One store object per root and process (a worker runs many shards)."""
    return ArtifactStore(root)


@functools.lru_cache(maxsize=64)
def load_artifact(root: str, stage: str, version: str) -> Artifact:
    art = open_store(root).get(stage, version)
    if art is None:
        raise ValueError(f"{stage}@{version} is not committed under {root}")
    return art


@functools.lru_cache(maxsize=4)
def kept_keys_of(filter_art: ArtifactRef | None) -> frozenset[str] | None:
    """``storage.lineage.kept_keys`` of a filter artifact by reference, read once per process (None: no filter)."""
    from storage.lineage import kept_keys

    keep = kept_keys(filter_art.load() if filter_art is not None else None)
    return None if keep is None else frozenset(keep)


@dataclass(frozen=True)
class ShardJob:
    """One output shard of one stage version: where to write it and what it reads (``payload``)."""

    root: str
    spec: StageSpec
    shard: str
    payload: Any = None

    @property
    def label(self) -> str:
        return f"{self.spec.stage}-{self.shard}"


class ShardTask:
    """The work of one shard. Subclasses are module-level dataclasses holding only small settings
    (encoder specs, devices, thresholds); models are loaded on first use, once per process.

    ``load(job)`` reads the shard's inputs (the local map reads the next shard in a thread while this
    one computes when ``read_ahead``); ``compute(job, loaded, writer)`` writes the payload files with
    ``writer.write_bytes`` and returns the marker record: ``{"rows": [...], "files": {...}, **index}``.
    ``resources``: Dask resources a worker must have to run it (``{"GPU": 1}`` for CUDA encoders).
    """

    read_ahead: bool = False

    @property
    def resources(self) -> dict[str, float] | None:
        return None

    def load(self, job: ShardJob) -> Any:
        return None

    def compute(self, job: ShardJob, loaded: Any, writer: ArtifactWriter) -> Record:
        raise NotImplementedError

    def __call__(self, job: ShardJob, loaded: Any = None) -> Record:
        """Run one shard (idempotent): the marker's record if it is done, else compute, payload first, marker last."""
        writer = shard_writer(job)
        if (done := writer.shard_done(job.shard)) is not None:
            log.info("%s: already committed, skipping", job.label)
            return done
        record = self.compute(job, self.load(job) if loaded is None else loaded, writer)
        writer.commit_shard(job.shard, **record)  # marker last: the shard is now durable
        return {"shard": job.shard, **record}


def shard_writer(job: ShardJob) -> ArtifactWriter:
    """A writer for one shard of ``job``'s version, without the version lock (the driver holds it)."""
    store = open_store(job.root)
    return ArtifactWriter(store, job.spec, job.spec.version, store._dir(job.spec.stage, job.spec.version))


class ShardMap(Protocol):
    """Runs ``task`` on each job; returns the records in job order; calls ``progress(done, total)``."""

    def __call__(self, task: ShardTask, jobs: Sequence[ShardJob], *, progress: Progress | None = None) -> list[Record]: ...


def local_map(task: ShardTask, jobs: Sequence[ShardJob], *, progress: Progress | None = None) -> list[Record]:
    """In this process, in order; with ``task.read_ahead`` the next shard is read while this one computes."""
    out: list[Record] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-read") as reader:
        ahead = reader.submit(task.load, jobs[0]) if jobs and task.read_ahead else None
        for k, job in enumerate(jobs):
            loaded = ahead.result() if ahead is not None else None
            ahead = reader.submit(task.load, jobs[k + 1]) if task.read_ahead and k + 1 < len(jobs) else None
            out.append(task(job, loaded))
            if progress:
                progress(k + 1, len(jobs))
    return out


def run_sharded(
    store: ArtifactStore,
    *,
    spec: StageSpec,
    plan: Callable[[], Sequence[ShardJob]],
    task: ShardTask,
    finalize: Callable[[ArtifactWriter, list[Record]], Artifact],
    shard_map: ShardMap | None = None,
    progress: Progress | None = None,
) -> Artifact:
    """Plan, run the shards not yet done (through ``shard_map``, default :func:`local_map`), finalize.

    ``plan()`` is called only when the version is not committed; ``finalize(writer, records)`` gets
    every shard's record in plan order and commits. ``progress(done, total)`` counts shards, done
    ones included.
    """
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact (%s)", w.artifact.ref, w.artifact.counts)
            return w.artifact
        jobs = list(plan())
        if len({j.shard for j in jobs}) != len(jobs):
            raise ValueError(f"{spec.stage}: shard names collide in the plan")
        records: dict[str, Record] = {}
        for job in jobs:
            if (done := w.shard_done(job.shard)) is not None:
                records[job.shard] = done
        todo = [j for j in jobs if j.shard not in records]
        if records:
            log.info("%s@%s: %d of %d shard(s) already committed, resuming", spec.stage, w.version, len(records), len(jobs))
        skipped = len(records)
        report = (lambda d, _t: progress(skipped + d, len(jobs))) if progress else None
        for job, record in zip(todo, (shard_map or local_map)(task, todo, progress=report), strict=True):
            if record.get("shard") != job.shard:
                raise RuntimeError(f"{job.label}: the task returned the record of {record.get('shard')!r}")
            w.files.update(record["files"])
            records[job.shard] = record
        if progress and not todo:
            progress(len(jobs), len(jobs))
        return finalize(w, [records[j.shard] for j in jobs])
