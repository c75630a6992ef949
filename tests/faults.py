"""Faults on disk and in a bucket, injected for real: a flipped byte in a committed file, a small tmpfs that
fills up, an S3 user denied ``s3:PutObject``. Used by tests/storage/test_integrity.py and bench/ops.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Unavailable(RuntimeError):
    """This machine cannot inject the fault (the message says what is missing)."""


def flip(path: Path, at: int = 100) -> None:
    """Invert one byte of ``path`` in place (``at`` from the start; negative: from the end)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@contextmanager
def small_disk(where: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``where`` (needs root: CAP_SYS_ADMIN); unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    size_k = max(4, size_bytes // 1024)
    try:
        got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(where)],
                             capture_output=True, text=True)
    except FileNotFoundError:
        raise Unavailable("no mount command to make a small tmpfs") from None
    if got.returncode != 0:
        raise Unavailable(f"needs root (CAP_SYS_ADMIN) to mount a small tmpfs: {got.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow(where: Path, size_bytes: int) -> None:
    """Free space on a :func:`small_disk`: remount it larger."""
    subprocess.run(["mount", "-o", f"remount,size={size_bytes // 1024}k", str(where)], check=True)


def fresh_s3_clients() -> None:
    """Forget cached S3 filesystems and stores, so that the next ones use the environment's keys."""
    import s3fs

    from storage.sharded import load_artifact, open_store

    s3fs.S3FileSystem.clear_instance_cache()
    open_store.cache_clear()
    load_artifact.cache_clear()
