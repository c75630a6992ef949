"""``manifest.parquet``: exactly one row per input item, failures included (docs/architecture.md#the-artifact-store)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("ok", "failed", "filtered")
REQUIRED = {"clip_id": pa.string(), "status": pa.string(), "error_type": pa.string(), "error_message": pa.string()}


def ok_row(clip_id: str, **extra: Any) -> dict[str, Any]:
    return {"clip_id": clip_id, "status": "ok", "error_type": None, "error_message": None, **extra}


def failed_row(clip_id: str, error_type: str, error_message: str, **extra: Any) -> dict[str, Any]:
    # one line: manifests are read in tables and terminals
    message = " ".join(str(error_message).split())[:500]
    return {"clip_id": clip_id, "status": "failed", "error_type": error_type, "error_message": message, **extra}


def filtered_row(clip_id: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"clip_id": clip_id, "status": "filtered", "error_type": "filtered", "error_message": reason, **extra}


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Validate rows and build a table: required columns first (typed string), the rest inferred."""
    rows = [dict(r) for r in rows]
    seen: set[str] = set()
    for r in rows:
        missing = set(REQUIRED) - set(r)
        if missing:
            raise ValueError(f"manifest row for {r.get('clip_id')!r} lacks columns {sorted(missing)}")
        if r["status"] not in STATUSES:
            raise ValueError(f"manifest row for {r['clip_id']!r} has status {r['status']!r}; expected {STATUSES}")
        if r["clip_id"] in seen:
            raise ValueError(f"duplicate clip_id {r['clip_id']!r} in manifest")
        seen.add(r["clip_id"])
    extra: list[str] = []
    for r in rows:
        extra.extend(k for k in r if k not in REQUIRED and k not in extra)
    columns = {name: [r.get(name) for r in rows] for name in [*REQUIRED, *extra]}
    arrays = [pa.array(columns[n], type=REQUIRED.get(n)) for n in columns]
    return pa.Table.from_arrays(arrays, names=list(columns))


def table_to_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def manifest_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return table_to_bytes(rows_to_table(rows))


def count_statuses(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for r in rows:
        counts[r["status"]] += 1
    return counts
