"""fsspec helpers: one root URL (local path, ``memory://``, ``s3://`` ...), atomic and create-only writes,
the S3 endpoint and the local cache (docs/architecture.md#object-storage)."""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

DEFAULT_ROOT = "./vta-artifacts"
DEFAULT_CACHE = "~/.cache/vta"
# The endpoint of an S3-compatible store (MinIO, moto, ...). botocore itself reads both (the service-specific
# one first); `vta --s3-endpoint URL` sets AWS_ENDPOINT_URL so child processes and Dask workers inherit it.
S3_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
S3_PROTOCOLS = ("s3", "s3a")


def resolve_root(root: str | os.PathLike[str] | None = None) -> str:
    """``--root`` if given, else ``$VTA_ROOT``, else ``./vta-artifacts`` (docs/architecture.md#the-artifact-store)."""
    value = os.fspath(root) if root is not None else os.environ.get("VTA_ROOT") or DEFAULT_ROOT
    if "://" not in value:
        value = str(Path(value).expanduser().resolve())
    return value


def s3_endpoint() -> str | None:
    """The S3 endpoint named by the environment (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``), or None
    (AWS itself)."""
    return next((os.environ[k] for k in S3_ENDPOINT_VARS if os.environ.get(k)), None)


def set_s3_endpoint(url: str) -> None:
    """Use ``url`` as the S3 endpoint in this process and every process it starts (``--s3-endpoint``)."""
    os.environ["AWS_ENDPOINT_URL"] = url
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)  # the service-specific variable would win in botocore


def filesystem(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a root URL and the root's path inside it.

    S3 roots never cache listings (``use_listings_cache=False``): another process or another store may have
    committed since the last listing. The endpoint is passed explicitly so fsspec's instance cache gives a
    new client when the environment names another endpoint; credentials and region are botocore's own
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles, instance roles).
    """
    options: dict[str, Any] = {}
    if fsspec.utils.get_protocol(root) in S3_PROTOCOLS:
        options["use_listings_cache"] = False
        if endpoint := s3_endpoint():
            options["endpoint_url"] = endpoint
    fs, path = fsspec.core.url_to_fs(root, **options)
    return fs, path.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def is_local_root(root: str) -> bool:
    """Whether a root URL lives on the local disk (the file-lock, write-in-place case)."""
    return is_local(filesystem(root)[0])


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


def sha256_local(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_error(path: str | os.PathLike[str], err: OSError) -> OSError:
    """A full disk (ENOSPC, EDQUOT) as one line naming the path and the space left; other errors as they are."""
    if err.errno not in NO_SPACE:
        return err
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    return OSError(err.errno, f"no space left on device writing {os.fspath(path)} ({free / 2**20:.1f} MiB free there)")


@contextmanager
def refused_write(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[None]:
    """An object store that refuses a write (a denied PUT: s3fs says only "Access Denied") as one line
    naming the object's URL."""
    try:
        yield
    except PermissionError as e:
        raise PermissionError(f"the store refused to write {fs.unstrip_protocol(path)}: {e}") from None


def _local_tmp(path: str, data: bytes) -> str:
    """``data`` in a complete, fsynced temp file beside ``path`` (its name); on a failed write the temp
    file is removed again (a full disk leaves nothing behind) and the error is :func:`disk_error`'s."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise disk_error(path, e) from None
    return tmp


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Local: temp file in the same directory, fsync, ``os.replace``. Object stores (s3, memory):
    a single PUT is already atomic. Returns the sha256 of ``data``.
    """
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if is_local(fs):
        os.replace(_local_tmp(path, data), path)
    else:
        with refused_write(fs, path):
            fs.pipe_file(path, data)
    return sha256_bytes(data)


def write_if_absent(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; False when something was already there.

    S3: one conditional PUT (``If-None-Match: *``; a store that answers PreconditionFailed, as AWS S3,
    MinIO and moto do). Local: a complete temp file hard-linked into place (``link`` fails if the name
    exists). Other fsspec stores: their ``mode="create"`` (``memory://``: exclusive within the process).
    """
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        fs.makedirs(parent, exist_ok=True)
        tmp = _local_tmp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    fs.makedirs(parent, exist_ok=True)
    try:
        with refused_write(fs, path):
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def upload_file(fs: fsspec.AbstractFileSystem, local: str | os.PathLike[str], path: str, *,
                create_only: bool = False) -> bool:
    """Upload one local file to an object store as one object (one PUT below s3fs's multipart size; a
    multipart upload, equally all-or-nothing, above). ``create_only``: False when ``path`` already exists."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    try:
        with refused_write(fs, path):
            fs.put_file(os.fspath(local), path, mode="create" if create_only else "overwrite")
    except FileExistsError:
        return False
    return True


def modified(info: dict[str, Any]) -> float | None:
    """A listing entry's modification time (POSIX seconds), whatever the backend calls it."""
    for key in ("LastModified", "mtime", "created", "last_modified"):
        value = info.get(key)
        if isinstance(value, _dt.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=_dt.UTC)).timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return _dt.datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return None


def cache_dir() -> Path:
    """Local cache of object-store artifacts and staging folders: ``$VTA_CACHE``, else ``~/.cache/vta``."""
    path = Path(os.environ.get("VTA_CACHE") or DEFAULT_CACHE).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
