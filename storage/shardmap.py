"""Per-shard map over a decode artifact: the skeleton shared by stages that work window by window.

Downstream stages read the decode artifact shard by shard (``shard-NNNNN.tar``) and write their own
``shard-NNNNN.tar`` with the same shard names and keys, so later stages join them by key while
streaming (memory stays flat). Each output shard commits on its own (resume after a kill); the
manifest has one row per input window (``clip_id`` = window key).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from storage import Artifact, ArtifactStore, StageSpec
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


def map_shards(
    store: ArtifactStore,
    *,
    spec: StageSpec,
    source: Artifact | Sequence[Artifact],
    fn: Callable[[Sequence[Sample]], Sequence[Result]],
    progress: Callable[[int, int], None] | None = None,
    index_columns: Sequence[str] = (),
    index_schema: pa.Schema | None = None,
    row_shard: Literal["written", "read"] = "written",
    read_ahead: bool = False,
    extra: dict[str, Any] | None = None,
) -> Artifact:
    """Apply ``fn`` to each shard of ``source``; write ``{shard}.tar`` + ``samples.parquet`` + manifest.

    Several sources (e.g. decode + augment) are mapped one after the other; their shard names must
    not collide.

    ``fn`` gets the samples of one shard (e.g. to batch them through a model) and returns one
    (row, members) per sample, in any order; rows need ``clip_id`` (= sample key) and ``status``.
    Each row's ``shard`` is the shard its members were written to, None when it has none
    (``row_shard="written"``), or the shard it was read from (``"read"``). ``index_columns`` of ok
    rows are copied into ``samples.parquet`` (always with ``key`` and ``shard``; typed by
    ``index_schema`` if given). ``read_ahead`` reads the next shard in a background thread while
    ``fn`` runs on this one. ``extra`` goes into the commit record.
    """
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact (%s)", w.artifact.ref, w.artifact.counts)
            return w.artifact
        sources = [source] if isinstance(source, Artifact) else list(source)
        shards = [(src, name) for src in sources for name in shard_names(src)]
        if len({name for _, name in shards}) != len(shards):
            raise ValueError(f"shard names collide across sources {[s.ref for s in sources]}")
        todo = [(src, name) for src, name in shards if w.shard_done(name) is None]
        position = {name: k for k, (_, name) in enumerate(todo)}
        rows: list[dict[str, Any]] = []
        index: list[dict[str, Any]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-read") as reader:
            pending: dict[str, Future[list[Sample]]] = {}

            def samples_of(src: Artifact, shard: str) -> list[Sample]:
                ahead = pending.pop(shard, None)
                samples = ahead.result() if ahead is not None else read_shard(src, shard)
                k = position[shard] + 1
                if read_ahead and k < len(todo):  # overlap: the next shard is read while this one is mapped
                    pending[todo[k][1]] = reader.submit(read_shard, *todo[k])
                return samples

            for i, (src, shard) in enumerate(shards):
                record = w.shard_done(shard)
                if record is None:
                    results = fn(samples_of(src, shard))
                    members = [(f"{row['clip_id']}.{suffix}", data) for row, m in results for suffix, data in m.items()]
                    files = {}
                    if members:
                        files[f"{shard}.tar"] = w.write_bytes(f"{shard}.tar", write_tar(members))
                    shard_rows = [{**row, "shard": shard if m or row_shard == "read" else None} for row, m in results]
                    shard_index = [
                        {"key": row["clip_id"], "shard": shard, **{c: row.get(c) for c in index_columns}}
                        for row, m in results if m and row["status"] == "ok"
                    ]
                    w.commit_shard(shard, rows=shard_rows, files=files, index=shard_index)  # marker last: durable
                    record = {"rows": shard_rows, "index": shard_index}
                rows.extend(record["rows"])
                index.extend(record["index"])
                if progress:
                    progress(i + 1, len(shards))
        cols = ["key", "shard", *index_columns]
        w.write_table("samples.parquet", pa.table({c: [r.get(c) for r in index] for c in cols}, schema=index_schema))
        return w.commit(rows=sorted(rows, key=lambda r: r["clip_id"]), extra=extra)
