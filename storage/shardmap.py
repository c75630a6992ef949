"""Per-shard map over a decode artifact: the skeleton shared by stages that work window by window.

Downstream stages read the decode artifact shard by shard (``shard-NNNNN.tar``) and write their own
``shard-NNNNN.tar`` with the same shard names and keys, so later stages join them by key while
streaming (memory stays flat). Each output shard is one task (storage/sharded.py) that commits on its
own (resume after a kill); the manifest has one row per input window (``clip_id`` = window key).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from storage.sharded import ArtifactRef, Record, ShardJob, ShardMap, ShardTask, run_sharded
from storage.store import Artifact, ArtifactStore, ArtifactWriter, StageSpec
from storage.tar import load_npy, read_tar, write_tar

log = logging.getLogger("vta.shardmap")


@dataclass
class Sample:
    """One decoded window (or any keyed sample) with its JSON metadata and raw tar members."""

    key: str
    meta: dict[str, Any]
    members: dict[str, bytes]  # suffix -> bytes, e.g. "frames.npy"

    def array(self, suffix: str) -> np.ndarray:
        return load_npy(self.members[suffix])


def index_table(art: Artifact) -> pa.Table:
    """An artifact's sample index: ``windows.parquet`` (decode) or ``samples.parquet`` (the others)."""
    for index in ("windows.parquet", "samples.parquet"):
        if index in art.record.get("files", {}):
            return art.read_table(index)
    raise ValueError(f"{art.ref} has no windows.parquet/samples.parquet index")


def shard_names(art: Artifact) -> list[str]:
    """Shard names of an artifact with a ``windows.parquet`` (or ``samples.parquet``) index, in order."""
    return sorted(set(index_table(art).column("shard").to_pylist()))


def read_shard(art: Artifact, shard: str) -> list[Sample]:
    """All samples of one shard, in key order."""
    name = f"{shard}.tar"
    if name not in art.record.get("files", {}):
        return []
    with art.open(name) as f:
        grouped = read_tar(f.read())
    return [Sample(k, json.loads(m.get("json", b"{}")), m) for k, m in sorted(grouped.items())]


def iter_samples(art: Artifact) -> Iterator[Sample]:
    """Every sample of an artifact, shard by shard (one shard in memory at a time)."""
    for shard in shard_names(art):
        yield from read_shard(art, shard)


Result = tuple[dict[str, Any], dict[str, bytes]]  # (manifest row, tar members by suffix)


@dataclass(frozen=True, kw_only=True)
class SampleMap(ShardTask):
    """A :class:`~storage.sharded.ShardTask` that maps one input shard's samples to one output shard of
    the same name: subclasses implement ``process(job, samples) -> [(row, members)]`` (e.g. batching
    them through a model, loaded once per process). A job's payload starts ``(source ref, shard name)``.

    ``process`` returns one (row, members) per sample, in any order; rows need ``clip_id`` (= sample
    key) and ``status``. Each row's ``shard`` is the shard its members were written to, None when it has
    none (``row_shard="written"``), or the shard it was read from (``"read"``). ``index_columns`` of ok
    rows are copied into ``samples.parquet`` (always with ``key`` and ``shard``).
    """

    index_columns: tuple[str, ...] = ()
    row_shard: Literal["written", "read"] = "written"

    def process(self, job: ShardJob, samples: Sequence[Sample]) -> Sequence[Result]:
        raise NotImplementedError

    def load(self, job: ShardJob) -> list[Sample]:
        source, shard = job.payload[:2]  # (ArtifactRef, input shard name, ...)
        return read_shard(source.load(), shard)

    def compute(self, job: ShardJob, samples: list[Sample], writer: ArtifactWriter) -> Record:
        shard = job.shard
        results = self.process(job, samples)
        members = [(f"{row['clip_id']}.{suffix}", data) for row, m in results for suffix, data in m.items()]
        files = {f"{shard}.tar": writer.write_bytes(f"{shard}.tar", write_tar(members))} if members else {}
        rows = [{**row, "shard": shard if m or self.row_shard == "read" else None} for row, m in results]
        index = [{"key": row["clip_id"], "shard": shard, **{c: row.get(c) for c in self.index_columns}}
                 for row, m in results if m and row["status"] == "ok"]
        return {"rows": rows, "files": files, "index": index}


def map_shards(
    store: ArtifactStore,
    *,
    spec: StageSpec,
    source: Artifact | Sequence[Artifact],
    task: SampleMap,
    plan: Callable[[], list[ShardJob]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    index_schema: pa.Schema | None = None,
    extra: dict[str, Any] | None = None,
    shard_map: ShardMap | None = None,
) -> Artifact:
    """Run ``task`` on each shard of ``source``; write ``{shard}.tar`` + ``samples.parquet`` + manifest.

    Several sources (e.g. decode + augment) are mapped one after the other; their shard names must
    not collide. ``plan`` replaces the default plan (one job per source shard, payload (ref, shard)) when
    jobs carry more. ``index_schema`` types ``samples.parquet``; ``extra`` goes into the commit record;
    ``shard_map`` decides where the shards run (default: in this process, in order).
    """
    sources = [source] if isinstance(source, Artifact) else list(source)

    def default_plan() -> list[ShardJob]:
        shards = [(src, name) for src in sources for name in shard_names(src)]
        if len({name for _, name in shards}) != len(shards):
            raise ValueError(f"shard names collide across sources {[s.ref for s in sources]}")
        return [ShardJob(store.root, spec, name, (ArtifactRef.of(src), name)) for src, name in shards]

    def finalize(w: ArtifactWriter, records: list[Record]) -> Artifact:
        rows = [r for rec in records for r in rec["rows"]]
        index = [r for rec in records for r in rec["index"]]
        cols = ["key", "shard", *task.index_columns]
        w.write_table("samples.parquet", pa.table({c: [r.get(c) for r in index] for c in cols}, schema=index_schema))
        return w.commit(rows=sorted(rows, key=lambda r: r["clip_id"]), extra=extra)

    return run_sharded(store, spec=spec, plan=plan or default_plan, task=task, finalize=finalize, shard_map=shard_map,
                       progress=progress)
