"""Shard members on disk: deterministic tars and ``.npy`` bytes (WebDataset layout).

A shard is a tar whose member names are ``{key}.{suffix}`` (``clip-w000.frames.npy``); members are
sorted, with mtime 0 and no owner, so identical inputs give identical bytes.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from typing import Any

import numpy as np


def npy_bytes(arr: np.ndarray, dtype: Any = None) -> bytes:
    """``arr`` (C-contiguous, cast to ``dtype`` when given) as the bytes of a ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=dtype), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """The array of ``.npy`` bytes (never unpickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def write_tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A deterministic tar: members sorted by name, mtime 0, no owner names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), 0, 0o644, 0, 0, "", ""
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def read_tar(data: bytes) -> dict[str, dict[str, bytes]]:
    """{key: {suffix: bytes}} of a shard (WebDataset convention: key = name up to the first dot)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for m in tar.getmembers():
            key, _, suffix = m.name.partition(".")
            out.setdefault(key, {})[suffix] = tar.extractfile(m).read()
    return out
