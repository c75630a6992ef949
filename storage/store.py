"""The versioned artifact store (its contract: docs/architecture.md#the-artifact-store).

An artifact lives at ``{root}/{stage}/{version}/``. ``version`` hashes the stage name, the
result-relevant parameters, the versions of its inputs and the stage's code version. The directory
is written in place, file by file (each write atomic), and becomes visible to readers only when
``_COMMITTED.json`` is written, last. Large stages commit per shard (``_shards/NAME.json``) so a
killed run resumes. A per-version lock serialises two writers of the same version.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from storage.fs import atomic_write_bytes, filesystem, is_local, join, resolve_root, sha256_file
from storage.manifest import count_statuses, manifest_bytes, rows_to_table, table_to_bytes

log = logging.getLogger("vta.storage")

COMMIT_FILE = "_COMMITTED.json"
SHARDS_DIR = "_shards"
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
        fs, _ = filesystem(self.root)
        return fs.open(self.file(name), mode)

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
        get no lock: their single-object writes are atomic and stage outputs are deterministic, so
        two writers write the same bytes.
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
        try:
            yield ArtifactWriter(self, spec, version, directory)
        finally:
            if lock is not None:
                lock.release()

    # --- maintenance ---------------------------------------------------------------------
    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Remove uncommitted leftovers only: version dirs without a commit record (unless a
        writer holds their lock) and temp files. Returns the removed paths."""
        removed: list[str] = []
        for st in self.stages():
            base = join(self._root_path, st)
            for p in self.fs.ls(base, detail=False):
                name = p.rstrip("/").rsplit("/", 1)[-1]
                if not _NAME.match(name) or not self.fs.isdir(p):
                    continue
                if self.fs.exists(join(p, COMMIT_FILE)):
                    for tmp in self.fs.find(p):
                        if ".tmp-" in tmp.rsplit("/", 1)[-1]:
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
                else:
                    removed.append(p)
                    if not dry_run:
                        self.fs.rm(p, recursive=True)
        return removed


class ArtifactWriter:
    """Writes one version's files; see :meth:`ArtifactStore.writer`."""

    def __init__(self, store: ArtifactStore, spec: StageSpec, version: str, directory: str) -> None:
        self.store, self.spec, self.version, self.dir = store, spec, version, directory
        self.fs = store.fs
        self.files: dict[str, str] = {}  # relative path -> sha256
        self._t0 = time.monotonic()
        record = store._read_record(spec.stage, version)
        self.artifact: Artifact | None = (
            Artifact(store.root, spec.stage, version, record, reused=True) if record is not None else None
        )

    @property
    def committed(self) -> bool:
        return self.artifact is not None

    def path(self, rel: str) -> str:
        return join(self.dir, rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Atomically write one file of the artifact; returns its sha256."""
        if rel.startswith(("/", "..")) or "/../" in rel or rel == COMMIT_FILE:
            raise ValueError(f"invalid artifact file name {rel!r}")
        digest = atomic_write_bytes(self.fs, self.path(rel), data)
        self.files[rel] = digest
        return digest

    def register_tree(self) -> int:
        """Checksum files that a library wrote straight into the artifact dir; returns how many."""
        n = 0
        for path in sorted(self.fs.find(self.dir)):
            rel = path[len(self.dir.rstrip("/")) + 1 :]
            if rel == COMMIT_FILE or rel.startswith(SHARDS_DIR + "/") or ".tmp-" in rel:
                continue
            self.files[rel] = sha256_file(self.fs, path)
            n += 1
        return n

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

    def commit_shard(
        self, shard: str, *, rows: Sequence[Mapping[str, Any]], files: Mapping[str, str], **extra: Any
    ) -> None:
        """Mark a shard complete: its manifest rows, file checksums and any stage-specific index
        (``extra``), written after its payload."""
        self.files.update(files)
        record = {"shard": shard, "rows": list(rows), "files": dict(files), **extra}
        atomic_write_bytes(self.fs, self._shard_marker(shard), json.dumps(record, default=str).encode())

    # --- final commit ---------------------------------------------------------------------
    def commit(
        self,
        *,
        rows: Sequence[Mapping[str, Any]] | None = None,
        counts: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Write ``manifest.parquet`` (from ``rows``), then ``_COMMITTED.json`` last."""
        if rows is not None:
            rows_to_table(rows)  # validate before writing anything
            self.write_bytes("manifest.parquet", manifest_bytes(rows))
            counts = count_statuses(rows)
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
        atomic_write_bytes(self.fs, self.path(COMMIT_FILE), (json.dumps(record, indent=2, default=str) + "\n").encode())
        self.artifact = Artifact(self.store.root, self.spec.stage, self.version, record)
        log.info("%s@%s: committed (%s)", self.spec.stage, self.version, _fmt_counts(record["counts"]))
        return self.artifact


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no items"
