"""fsspec helpers: one root URL (local path, ``memory://``, ``s3://`` ...) and atomic writes."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

DEFAULT_ROOT = "./vta-artifacts"


def resolve_root(root: str | os.PathLike[str] | None = None) -> str:
    """``--root`` if given, else ``$VTA_ROOT``, else ``./vta-artifacts`` (docs/architecture.md#the-artifact-store)."""
    value = os.fspath(root) if root is not None else os.environ.get("VTA_ROOT") or DEFAULT_ROOT
    if "://" not in value:
        value = str(Path(value).expanduser().resolve())
    return value


def filesystem(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a root URL and the root's path inside it."""
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p != "")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Local: temp file in the same directory, fsync, ``os.replace``. Object stores (s3, memory):
    a single PUT is already atomic. Returns the sha256 of ``data``.
    """
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if is_local(fs):
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
    return sha256_bytes(data)
