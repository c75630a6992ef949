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
from dataclasses import dataclass
from typing import Any

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


def shard_names(art: Artifact) -> list[str]:
    """Shard names of an artifact with a ``windows.parquet`` (or ``samples.parquet``) index, in order."""
    for index in ("windows.parquet", "samples.parquet"):
        if index in art.record.get("files", {}):
            return sorted({r["shard"] for r in art.read_table(index).select(["shard"]).to_pylist()})
    raise ValueError(f"{art.ref} has no windows.parquet/samples.parquet index")


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
    extra: dict[str, Any] | None = None,
) -> Artifact:
    """Apply ``fn`` to each shard of ``source``; write ``{shard}.tar`` + ``samples.parquet`` + manifest.

    Several sources (e.g. decode + augment) are mapped one after the other; their shard names must
    not collide.

    ``fn`` gets the samples of one shard and returns one (row, members) per sample, in any order;
    rows need ``clip_id`` (= sample key) and ``status``. ``index_columns`` of ok rows are copied
    into ``samples.parquet`` (always with ``key`` and ``shard``); ``extra`` goes into the commit record.
    """
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact (%s)", w.artifact.ref, w.artifact.counts)
            return w.artifact
        sources = [source] if isinstance(source, Artifact) else list(source)
        shards = [(src, name) for src in sources for name in shard_names(src)]
        if len({name for _, name in shards}) != len(shards):
            raise ValueError(f"shard names collide across sources {[s.ref for s in sources]}")
        rows: list[dict[str, Any]] = []
        index: list[dict[str, Any]] = []
        for i, (src, shard) in enumerate(shards):
            record = w.shard_done(shard)
            if record is None:
                results = fn(read_shard(src, shard))
                members = [(f"{row['clip_id']}.{suffix}", data) for row, m in results for suffix, data in m.items()]
                files = {}
                if members:
                    files[f"{shard}.tar"] = w.write_bytes(f"{shard}.tar", write_tar(members))
                shard_rows = [{**row, "shard": shard if m else None} for row, m in results]
                shard_index = [
                    {"key": row["clip_id"], "shard": shard, **{c: row.get(c) for c in index_columns}}
                    for row, m in results if m and row["status"] == "ok"
                ]
                w.commit_shard(shard, rows=shard_rows, files=files, index=shard_index)
                record = {"rows": shard_rows, "index": shard_index}
            rows.extend(record["rows"])
            index.extend(record["index"])
            if progress:
                progress(i + 1, len(shards))
        cols = ["key", "shard", *index_columns]
        w.write_table("samples.parquet", pa.table({c: [r.get(c) for r in index] for c in cols}))
        return w.commit(rows=sorted(rows, key=lambda r: r["clip_id"]), extra=extra)
