"""The versioned artifact store (its contract: docs/architecture.md#the-artifact-store).

An artifact lives at ``{root}/{stage}/{version}/``. ``version`` hashes the stage name, the
result-relevant parameters, the versions of its inputs and the stage's code version. The directory
is written in place, file by file (each write atomic), and becomes visible to readers only when
``_COMMITTED.json`` is written, last. Large stages commit per shard (``_shards/NAME.json``) so a
killed run resumes. On a local root a per-version lock serialises two writers of the same version; on an
object store the commit record and the shard markers are create-only objects (the first writer wins, the
other returns its record), payload files are create-only or identical, and a live writer keeps a heartbeat
object so that gc and a competing writer can tell it from a dead one (docs/architecture.md#object-storage).
Tools that need real files write into :meth:`ArtifactWriter.staging` (uploaded before the commit), and
readers that need real files use :func:`local_copy`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from storage.fs import (
    atomic_write_bytes,
    cache_dir,
    disk_error,
    filesystem,
    is_local,
    join,
    modified,
    resolve_root,
    s3_endpoint,
    sha256_bytes,
    sha256_file,
    sha256_local,
    upload_file,
    write_if_absent,
)
from storage.manifest import count_statuses, manifest_bytes, rows_to_table, table_to_bytes

log = logging.getLogger("vta.storage")

COMMIT_FILE = "_COMMITTED.json"
SHARDS_DIR = "_shards"
WRITERS_DIR = "_writers"  # object stores: one heartbeat object per live writer of an uncommitted version
HEARTBEAT_S = 20.0  # how often a live writer refreshes its heartbeat
STALE_S = 120.0  # a heartbeat older than this is a dead writer's (allows some clock skew with the store)
GC_MIN_AGE_S = 3600.0  # object stores: gc leaves uncommitted versions with any object younger than this
WAIT_POLL_S = 0.5
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def check_name(kind: str, value: str) -> str:
    """Stage names, versions and shard names are path components: no dots, slashes or spaces."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '_' or '-' (max 64 chars)")
    return value


@dataclass(frozen=True)
class StageSpec:
    """What determines an artifact's identity."""

    stage: str
    params: Mapping[str, Any]
    inputs: Mapping[str, str] = field(default_factory=dict)  # input name -> version / fingerprint
    code_version: str = "1"
    result: str | None = None  # set only when a forced rerun's results differ from the recorded version

    def __post_init__(self) -> None:
        check_name("stage", self.stage)

    @property
    def version(self) -> str:
        payload = {"stage": self.stage, "params": dict(self.params), "inputs": dict(self.inputs), "code": self.code_version}
        if self.result is not None:
            payload["result"] = self.result
        return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:12]


class DamagedArtifactError(ValueError):
    """A committed file that is missing or whose bytes differ from its commit record."""

    def __init__(self, art: Artifact, rel: str, *, missing: bool = False) -> None:
        what = "is missing" if missing else "does not match the sha256 in its commit record"
        super().__init__(f"{art.ref} under {art.root}: {rel} {what}; recompute it with `vta run {art.ref} --force` "
                         f"(a data stage) or restore it")
        self.ref, self.file = art.ref, rel


# local files checked against their commit record in this process: (path, size, mtime_ns, sha256). A file is
# hashed once per run (process) however often it is read; a rewrite changes its size or mtime and is checked again.
_INTACT: set[tuple[str, int, int, str]] = set()


def check_local_files(art: Artifact, rels: Sequence[str]) -> None:
    """Check the listed files of a local-root artifact against its commit record (each file once per process
    while it is unchanged): :class:`DamagedArtifactError` naming the first bad file."""
    files = art.record.get("files", {})
    for rel in rels:
        digest = files[rel]
        path = Path(art.file(rel))
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DamagedArtifactError(art, rel, missing=True) from None
        key = (str(path), st.st_size, st.st_mtime_ns, digest)
        if key in _INTACT:
            continue
        if sha256_local(path) != digest:
            raise DamagedArtifactError(art, rel)
        _INTACT.add(key)


@dataclass(frozen=True)
class Artifact:
    """A committed artifact: where it is and what its commit record says."""

    root: str
    stage: str
    version: str
    record: Mapping[str, Any]
    reused: bool = False

    @property
    def path(self) -> str:
        return join(self.root, self.stage, self.version)

    @property
    def ref(self) -> str:
        return f"{self.stage}@{self.version}"

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.record.get("counts", {}))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.record.get("params", {}))

    def file(self, name: str) -> str:
        return join(self.path, name)

    def open(self, name: str, mode: str = "rb"):  # noqa: ANN201 - fsspec file object
        """A committed file, read whole and checked against the commit record's sha256 (``rb``; a
        :class:`DamagedArtifactError` naming the file and the artifact when it differs or is missing)."""
        fs, _ = filesystem(self.root)
        digest = self.record.get("files", {}).get(name)
        if mode != "rb" or digest is None:
            return fs.open(self.file(name), mode)
        try:
            data = fs.cat_file(self.file(name))
        except FileNotFoundError:
            raise DamagedArtifactError(self, name, missing=True) from None
        if sha256_bytes(data) != digest:
            raise DamagedArtifactError(self, name)
        return io.BytesIO(data)

    def read_table(self, name: str = "manifest.parquet"):  # noqa: ANN201 - pyarrow.Table
        with self.open(name) as f:
            return pq.read_table(f)


class ArtifactStore:
    """All artifacts under one fsspec root."""

    def __init__(self, root: str | None = None) -> None:
        self.root = resolve_root(root)
        self.fs, self._root_path = filesystem(self.root)

    # --- paths ---------------------------------------------------------------------------
    def _dir(self, stage: str, version: str) -> str:
        return join(self._root_path, check_name("stage", stage), check_name("version", version))

    def _read_record(self, stage: str, version: str) -> dict[str, Any] | None:
        path = join(self._dir(stage, version), COMMIT_FILE)
        if not self.fs.exists(path):
            return None
        return json.loads(self.fs.cat_file(path))

    # --- reading -------------------------------------------------------------------------
    def get(self, stage: str, version: str) -> Artifact | None:
        """The committed artifact, or None (uncommitted directories are invisible)."""
        record = self._read_record(stage, version)
        return None if record is None else Artifact(self.root, stage, version, record)

    def stages(self) -> list[str]:
        if not self.fs.exists(self._root_path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._root_path, detail=False)]
        return sorted(n for n in names if _NAME.match(n) and self.fs.isdir(join(self._root_path, n)))

    def list(self, stage: str | None = None) -> list[Artifact]:
        """Committed artifacts, oldest first."""
        out: list[Artifact] = []
        for st in [stage] if stage else self.stages():
            base = join(self._root_path, check_name("stage", st))
            if not self.fs.exists(base):
                continue
            for p in self.fs.ls(base, detail=False):
                version = p.rstrip("/").rsplit("/", 1)[-1]
                if _NAME.match(version) and (art := self.get(st, version)) is not None:
                    out.append(art)
        return sorted(out, key=lambda a: (a.record.get("created", ""), a.stage, a.version))

    def successor(self, art: Artifact) -> Artifact:
        """The newest artifact that supersedes ``art`` (a forced rerun whose results changed), following
        the chain; ``art`` itself when nothing does."""
        newer = [a for a in self.list(art.stage) if a.record.get("supersedes") == art.version]
        return self.successor(newer[-1]) if newer else art

    def latest(self, stage: str) -> Artifact | None:
        arts = self.list(stage)
        return arts[-1] if arts else None

    def resolve(self, ref: str) -> Artifact:
        """``STAGE`` (latest) or ``STAGE@VERSION`` -> committed artifact, else ValueError."""
        stage, _, version = ref.partition("@")
        art = self.get(stage, version) if version else self.latest(stage)
        if art is None:
            raise ValueError(f"no committed artifact {ref!r} under {self.root}")
        return art

    def verify(self, art: Artifact) -> list[str]:
        """Files whose checksum differs from the commit record (empty list = intact)."""
        bad = []
        for rel, digest in art.record.get("files", {}).items():
            path = join(self._dir(art.stage, art.version), rel)
            if not self.fs.exists(path) or sha256_file(self.fs, path) != digest:
                bad.append(rel)
        return bad

    # --- writing -------------------------------------------------------------------------
    @contextmanager
    def writer(self, spec: StageSpec, *, lock_timeout: float = 3600.0) -> Iterator[ArtifactWriter]:
        """Open a writer for ``spec``; if the version is already committed, ``w.artifact`` is set.

        On a local root, a file lock ``{stage}/{version}.lock`` makes concurrent writers of the same
        version wait for each other; the second then finds the commit and reuses it. Object stores
        get no lock: a live writer refreshes ``_writers/ID.json`` in the version folder (see
        :class:`ArtifactWriter` for what two writers of one version do).
        """
        version = spec.version
        directory = self._dir(spec.stage, version)
        lock = None
        if is_local(self.fs):
            self.fs.makedirs(join(self._root_path, spec.stage), exist_ok=True)
            lock = FileLock(directory + ".lock", timeout=lock_timeout)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("%s@%s: another process is writing this version; waiting", spec.stage, version)
                lock.acquire()
        w = ArtifactWriter(self, spec, version, directory)
        beat = _Heartbeat(self.fs, w._heartbeat_path) if w.object_store and not w.committed else None
        try:
            yield w
        finally:
            if beat is not None:
                beat.stop()
            if lock is not None:
                lock.release()

    # --- maintenance ---------------------------------------------------------------------
    def gc(self, *, dry_run: bool = False, min_age_s: float = GC_MIN_AGE_S) -> list[str]:
        """Remove uncommitted leftovers only: version dirs without a commit record and temp files.
        Returns the removed paths.

        Local roots: a version dir is skipped while a writer holds its lock. Object stores: it is
        skipped while any writer's heartbeat is fresh (younger than ``STALE_S``) or while any of its
        objects is younger than ``min_age_s``; stale heartbeats in committed versions are removed too."""
        removed: list[str] = []
        now = time.time()
        for st in self.stages():
            base = join(self._root_path, st)
            for p in self.fs.ls(base, detail=False):
                name = p.rstrip("/").rsplit("/", 1)[-1]
                if not _NAME.match(name) or not self.fs.isdir(p):
                    continue
                if self.fs.exists(join(p, COMMIT_FILE)):
                    for tmp, info in self.fs.find(p, detail=True).items():
                        leaf = tmp.rsplit("/", 1)[-1]
                        stale_beat = (f"/{WRITERS_DIR}/" in tmp and not is_local(self.fs)
                                      and now - (modified(info) or now) > STALE_S)
                        if ".tmp-" in leaf or stale_beat:
                            removed.append(tmp)
                            if not dry_run:
                                self.fs.rm(tmp)
                    continue
                if is_local(self.fs):
                    lock = FileLock(p + ".lock", timeout=0)
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        continue  # a live writer owns it
                    try:
                        removed.append(p)
                        if not dry_run:
                            self.fs.rm(p, recursive=True)
                    finally:
                        lock.release()
                    continue
                infos = self.fs.find(p, detail=True)
                ages = [now - (modified(i) or now) for i in infos.values()]
                beats = [now - (modified(i) or now) for k, i in infos.items() if f"/{WRITERS_DIR}/" in k]
                if any(age < STALE_S for age in beats):
                    continue  # a live writer's heartbeat
                if ages and min(ages) < min_age_s:
                    continue  # too recent to tell from a writer between two writes
                removed.append(p)
                if not dry_run:
                    self.fs.rm(p, recursive=True)
        return removed


class _Heartbeat:
    """Keeps ``path`` (a small JSON object) fresh while a writer is open; removes it at ``stop``."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path
        self._stop = threading.Event()
        self._beat()  # visible before the writer does anything
        self._thread = threading.Thread(target=self._run, name="vta-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        body = {"host": socket.gethostname(), "pid": os.getpid(),
                "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        atomic_write_bytes(self.fs, self.path, json.dumps(body).encode())

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except Exception as e:  # noqa: BLE001 - a missed beat only makes the writer look dead later
                log.warning("heartbeat %s: %s", self.path, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self.fs.rm(self.path)
        except (FileNotFoundError, OSError) as e:
            log.debug("heartbeat %s: %s", self.path, e)


def _skip_in_tree(rel: str) -> bool:
    """Not payload: the commit record, markers, heartbeats, temp files and half-written tmp folders."""
    return (rel == COMMIT_FILE or rel.startswith((SHARDS_DIR + "/", WRITERS_DIR + "/")) or ".tmp-" in rel
            or any(part.startswith(".tmp") for part in rel.split("/")))


class ArtifactWriter:
    """Writes one version's files; see :meth:`ArtifactStore.writer`.

    On an object store two writers of one version may run at once (nothing serialises them). Every payload
    object is written create-only: when it already exists with the same bytes (a deterministic stage, a
    resumed run) it is kept; when it holds other bytes and another writer is alive (fresh heartbeat), this
    writer waits for that writer's commit and then adopts it (``superseded``): its later writes are no-ops
    and :meth:`commit` returns the other's artifact, marked reused. Without a live writer the object is a
    dead run's leftover and is replaced. The commit record and shard markers are create-only too: the
    first commit wins, the second writer returns the winner's record.
    """

    def __init__(self, store: ArtifactStore, spec: StageSpec, version: str, directory: str) -> None:
        self.store, self.spec, self.version, self.dir = store, spec, version, directory
        self.fs = store.fs
        self.object_store = not is_local(self.fs)
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.files: dict[str, str] = {}  # relative path -> sha256
        self._written: set[str] = set()  # files this writer put (it may replace them)
        self._other: Artifact | None = None  # another writer's commit, adopted
        self._t0 = time.monotonic()
        record = store._read_record(spec.stage, version)
        self.artifact: Artifact | None = (
            Artifact(store.root, spec.stage, version, record, reused=True) if record is not None else None
        )

    @property
    def committed(self) -> bool:
        return self.artifact is not None

    @property
    def superseded(self) -> bool:
        """Whether another writer committed this version while this one was writing (object stores)."""
        return self._other is not None

    @property
    def _heartbeat_path(self) -> str:
        return self.path(f"{WRITERS_DIR}/{self.writer_id}.json")

    def path(self, rel: str) -> str:
        return join(self.dir, rel)

    @staticmethod
    def _check_rel(rel: str) -> None:
        if rel.startswith(("/", "..")) or "/../" in rel or rel == COMMIT_FILE:
            raise ValueError(f"invalid artifact file name {rel!r}")

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Atomically write one file of the artifact; returns its sha256."""
        self._check_rel(rel)
        if not self.object_store:
            digest = atomic_write_bytes(self.fs, self.path(rel), data)
        else:
            digest = sha256_bytes(data)
            path = self.path(rel)
            self._store_object(rel, digest, lambda create_only: (
                write_if_absent(self.fs, path, data) if create_only else bool(atomic_write_bytes(self.fs, path, data))))
        self.files[rel] = digest
        return digest

    def upload(self, rel: str, local: str | os.PathLike[str]) -> str:
        """Put one local file into the artifact as ``rel`` (object stores; a copy on a local root)."""
        self._check_rel(rel)
        digest = sha256_local(local)
        if not self.object_store:
            target = Path(self.fs._strip_protocol(self.path(rel)))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        elif self.files.get(rel) != digest:  # not already there (an earlier upload, a resumed marker)
            path = self.path(rel)
            self._store_object(rel, digest, lambda create_only: upload_file(self.fs, local, path,
                                                                           create_only=create_only))
        self.files[rel] = digest
        return digest

    def upload_tree(self, local: str | os.PathLike[str], prefix: str = "") -> int:
        """Upload every file under the local folder ``local`` as ``prefix/...`` (sorted order, one object
        each); returns how many were uploaded or already there."""
        base, n = Path(local), 0
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(base).as_posix()
            rel = f"{prefix.strip('/')}/{rel}" if prefix else rel
            if p.is_file() and not _skip_in_tree(rel):
                if self.superseded:
                    break
                self.upload(rel, p)
                n += 1
        return n

    def _store_object(self, rel: str, digest: str, put: Any) -> None:
        """``put(create_only) -> bool``; see the class docstring for what happens when ``rel`` exists."""
        if self._other is not None:
            return
        if rel in self._written:
            put(False)  # this writer's own earlier version of the file
        elif not put(True):
            path = self.path(rel)
            if sha256_file(self.fs, path) != digest:
                other = self._wait_for_other_commit(rel)
                if other is not None:
                    self._other = other
                    return
                log.info("%s@%s: replacing %s left by an earlier run", self.spec.stage, self.version, rel)
                put(False)
        self._written.add(rel)

    def _live_writers(self) -> list[str]:
        """Other writers of this version with a fresh heartbeat."""
        base = self.path(WRITERS_DIR)
        try:
            infos = self.fs.ls(base, detail=True)
        except FileNotFoundError:
            return []
        now, mine = time.time(), self._heartbeat_path.rsplit("/", 1)[-1]
        return [i["name"] for i in infos if i["name"].rsplit("/", 1)[-1] != mine
                and now - (modified(i) or 0.0) < STALE_S]

    def _wait_for_other_commit(self, rel: str) -> Artifact | None:
        """Another writer's commit of this version, waited for while it is alive; None when none is."""
        logged = False
        while True:
            record = self.store._read_record(self.spec.stage, self.version)
            if record is not None:
                log.info("%s@%s: another writer committed first; reusing its artifact", self.spec.stage, self.version)
                return Artifact(self.store.root, self.spec.stage, self.version, record, reused=True)
            if not self._live_writers():
                return None
            if not logged:
                log.info("%s@%s: another writer is writing this version (%s differs); waiting for its commit",
                         self.spec.stage, self.version, rel)
                logged = True
            time.sleep(WAIT_POLL_S)

    def register_tree(self) -> int:
        """Checksum files that a library wrote straight into the artifact dir; returns how many."""
        n = 0
        for path in sorted(self.fs.find(self.dir)):
            rel = path[len(self.dir.rstrip("/")) + 1 :]
            if rel == COMMIT_FILE or rel.startswith((SHARDS_DIR + "/", WRITERS_DIR + "/")) or ".tmp-" in rel:
                continue
            self.files[rel] = sha256_file(self.fs, path)
            n += 1
        return n

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A local folder for files that a tool writes itself (FFmpeg, torch checkpoints, reports).

        Local root: the version folder itself (files are written in place, as always), checksummed at the
        end. Object store: a private temporary folder under the cache (``$VTA_CACHE/staging``); when the
        block ends without an error every file in it is uploaded (one object each, sorted order) and
        registered, then the folder is removed. Commit after the block."""
        if not self.object_store:
            folder = Path(self.fs._strip_protocol(self.dir))
            folder.mkdir(parents=True, exist_ok=True)
            try:
                yield folder
            except OSError as e:  # a tool that filled the disk: one line naming the folder and the space left
                if (err := disk_error(folder, e)) is e:
                    raise
                raise err from None
            self.register_tree()
            return
        base = cache_dir() / "staging"
        base.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{self.spec.stage}-{self.version}-", dir=base))
        try:
            yield folder
            self.upload_tree(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def fetch(self, files: Mapping[str, str | None], local: str | os.PathLike[str]) -> None:
        """Download artifact files (``rel -> sha256``, None = take whatever is there) into the local folder
        ``local`` (as ``local/rel``) and register them: a resumed run continuing from files in the store."""
        base = Path(local)
        for rel, digest in sorted(files.items()):
            dest = base / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self.path(rel), str(dest))
            got = sha256_local(dest)
            if digest is not None and got != digest:
                raise ValueError(f"{self.spec.stage}@{self.version}: {rel} does not match its marker's checksum")
            self.files[rel] = got

    def listing(self, prefix: str) -> list[str]:
        """Relative paths of the objects under ``prefix`` in this version folder (empty when none)."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        return sorted(p[len(self.dir.rstrip("/")) + 1 :] for p in self.fs.find(base))

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def write_table(self, rel: str, table: Any) -> str:
        return self.write_bytes(rel, table_to_bytes(table))

    # --- per-shard commits ----------------------------------------------------------------
    def _shard_marker(self, shard: str) -> str:
        return self.path(f"{SHARDS_DIR}/{check_name('shard', shard)}.json")

    def shard_done(self, shard: str) -> dict[str, Any] | None:
        """The committed shard record (rows + files) if this shard finished in an earlier run."""
        marker = self._shard_marker(shard)
        if not self.fs.exists(marker):
            return None
        record = json.loads(self.fs.cat_file(marker))
        self.files.update(record["files"])
        return record

    def shard_markers(self) -> list[str]:
        """Names of the shards committed so far (their markers)."""
        return [rel.rsplit("/", 1)[-1][: -len(".json")] for rel in self.listing(SHARDS_DIR) if rel.endswith(".json")]

    def commit_shard(
        self, shard: str, *, rows: Sequence[Mapping[str, Any]], files: Mapping[str, str], **extra: Any
    ) -> None:
        """Mark a shard complete: its manifest rows, file checksums and any stage-specific index
        (``extra``), written after its payload. On an object store the marker is create-only: when another
        writer marked the shard first, its record is kept."""
        if self._other is not None:
            return
        self.files.update(files)
        record = {"shard": shard, "rows": list(rows), "files": dict(files), **extra}
        data = json.dumps(record, default=str).encode()
        if not self.object_store:
            atomic_write_bytes(self.fs, self._shard_marker(shard), data)
        elif not write_if_absent(self.fs, self._shard_marker(shard), data):
            self.shard_done(shard)  # another writer's marker: its checksums are the ones committed

    # --- final commit ---------------------------------------------------------------------
    def commit(
        self,
        *,
        rows: Sequence[Mapping[str, Any]] | None = None,
        counts: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Write ``manifest.parquet`` (from ``rows``), then ``_COMMITTED.json`` last.

        Object stores: the record is a create-only object. When another writer committed the version
        first (or was adopted while writing), its artifact is returned, marked reused."""
        if self._other is not None:
            self.artifact = self._other
            return self._other
        if rows is not None:
            rows_to_table(rows)  # validate before writing anything
            self.write_bytes("manifest.parquet", manifest_bytes(rows))
            counts = count_statuses(rows)
            if self._other is not None:
                self.artifact = self._other
                return self._other
        record = {
            "stage": self.spec.stage,
            "version": self.version,
            "params": dict(self.spec.params),
            "inputs": dict(self.spec.inputs),
            "code_version": self.spec.code_version,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - self._t0, 3),
            "counts": dict(counts or {}),
            "files": dict(sorted(self.files.items())),
            **dict(extra or {}),
        }
        data = (json.dumps(record, indent=2, default=str) + "\n").encode()
        if not self.object_store:
            atomic_write_bytes(self.fs, self.path(COMMIT_FILE), data)
        elif not write_if_absent(self.fs, self.path(COMMIT_FILE), data):
            theirs = self.store._read_record(self.spec.stage, self.version)
            log.info("%s@%s: another writer committed first; reusing its artifact", self.spec.stage, self.version)
            self._other = self.artifact = Artifact(self.store.root, self.spec.stage, self.version, theirs, reused=True)
            return self.artifact
        self.artifact = Artifact(self.store.root, self.spec.stage, self.version, record)
        log.info("%s@%s: committed (%s)", self.spec.stage, self.version, _fmt_counts(record["counts"]))
        return self.artifact


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no items"


def artifact_at(folder: str | os.PathLike[str]) -> Artifact | None:
    """The committed artifact whose version folder (``{root}/{stage}/{version}``) is the local ``folder``,
    or None when it is not one: for readers handed a path instead of a ref."""
    folder = Path(folder).resolve()
    record_path = folder / COMMIT_FILE
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if (record.get("stage"), record.get("version")) != (folder.parent.name, folder.name):
        return None
    return Artifact(str(folder.parent.parent), folder.parent.name, folder.name, record)


# --- local copies -----------------------------------------------------------------------------------
def _under(rel: str, prefixes: Sequence[str] | None) -> bool:
    return prefixes is None or any(rel == p.strip("/") or rel.startswith(p.strip("/") + "/") for p in prefixes)


def local_copy(art: Artifact, *, only: Sequence[str] | None = None) -> Artifact:
    """The artifact as local files, for readers that need real paths (FFmpeg, torch, webdataset), each
    checked against the commit record's sha256 (:class:`DamagedArtifactError` when one differs).

    A local root's artifact is returned as it is, its files hashed once per process
    (:func:`check_local_files`). An object store's is copied once into the cache
    (``$VTA_CACHE/artifacts/<root hash>/{stage}/{version}/``, a valid local root of its own: the commit
    record comes along) and each file is checked against the record's sha256; a later call reuses the
    files whose checksum, size and mtime were recorded (``{version}.cache.json``) and fetches only what is
    missing or changed. ``only``: copy just these files / folders (e.g. ``["checkpoint"]``). ValueError
    when a file in the store does not match its record."""
    fs, _ = filesystem(art.root)
    if is_local(fs):
        check_local_files(art, [rel for rel in sorted(art.record.get("files", {})) if _under(rel, only)])
        return art
    key = f"{s3_endpoint() or ''}|{art.root}"  # the same bucket name on two endpoints is two roots
    root = cache_dir() / "artifacts" / hashlib.sha256(key.encode()).hexdigest()[:16]
    dest = root / art.stage / art.version
    dest.mkdir(parents=True, exist_ok=True)
    index_path = root / art.stage / f"{art.version}.cache.json"
    with FileLock(str(root / art.stage / f"{art.version}.lock")):
        index: dict[str, list[Any]] = json.loads(index_path.read_text()) if index_path.is_file() else {}
        try:
            for rel, digest in sorted(art.record.get("files", {}).items()):
                if not _under(rel, only):
                    continue
                local = dest / rel
                if local.is_file() and index.get(rel) == [digest, local.stat().st_size, local.stat().st_mtime_ns]:
                    continue
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f"{local.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                try:
                    fs.get_file(join(art.path, rel), str(tmp))
                    if sha256_local(tmp) != digest:
                        raise ValueError(f"{art.ref}: {rel} in {art.root} does not match its commit record")
                    os.replace(tmp, local)
                finally:
                    tmp.unlink(missing_ok=True)
                index[rel] = [digest, local.stat().st_size, local.stat().st_mtime_ns]
        finally:
            index_path.write_text(json.dumps(index))
        record = (json.dumps(dict(art.record), indent=2, default=str) + "\n").encode()
        if not (dest / COMMIT_FILE).is_file() or (dest / COMMIT_FILE).read_bytes() != record:
            atomic_write_bytes(filesystem(str(root))[0], str(dest / COMMIT_FILE), record)
    return Artifact(str(root), art.stage, art.version, art.record, reused=art.reused)
