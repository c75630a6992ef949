"""Content identities that enter artifact versions: file digests and folder identities."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from storage.fs import sha256_file


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a local file, read in chunks (the store's own files: ``storage.fs.sha256_file``)."""
    return sha256_file(LocalFileSystem(), str(path), chunk)


def folder_identity(folder: str | Path, names: Sequence[str] | None = None) -> str:
    """``dir:`` + 16 hex of the folder's top-level files (name + sha256 of the bytes, in order).

    ``names``: these files, in this order (each must exist); None: every top-level file, sorted.
    """
    folder = Path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
    h = hashlib.sha256()
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {name}")
        h.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return "dir:" + h.hexdigest()[:16]
