"""Artifact store semantics: identity, reuse, invisibility of uncommitted work, resume, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slow_writer import SLOW_WRITER

from storage import ArtifactStore, StageSpec, failed_row, ok_row
from storage.manifest import rows_to_table
from storage.store import COMMIT_FILE, check_name


def _spec(**kw):
    base = {"stage": "toy", "params": {"a": 1, "b": [1, 2]}, "inputs": {"src": "v1"}, "code_version": "1"}
    return StageSpec(**{**base, **kw})


def test_version_identity():
    assert _spec().version == _spec(params={"b": [1, 2], "a": 1}).version  # key order irrelevant
    versions = {
        _spec().version, _spec(params={"a": 2, "b": [1, 2]}).version, _spec(inputs={"src": "v2"}).version,
        _spec(code_version="2").version, _spec(stage="other").version,
    }
    assert len(versions) == 5
    assert len(_spec().version) == 12


def _write_toy(store, spec, n=3):
    with store.writer(spec) as w:
        if w.committed:
            return w.artifact
        for i in range(n):
            w.write_bytes(f"part-{i}.txt", f"payload {i}".encode())
        rows = [ok_row(f"c{i}") for i in range(n - 1)] + [failed_row(f"c{n - 1}", "unreadable", "bad\nfile")]
        return w.commit(rows=rows)


def test_commit_reuse_and_listing(tmp_path):
    store = ArtifactStore(str(tmp_path))
    art = _write_toy(store, _spec())
    assert not art.reused and art.counts == {"ok": 2, "failed": 1, "filtered": 0}
    record = json.loads((Path(art.path) / COMMIT_FILE).read_text())
    assert set(record) >= {"stage", "version", "params", "inputs", "code_version", "created", "counts", "files"}
    assert set(record["files"]) == {"part-0.txt", "part-1.txt", "part-2.txt", "manifest.parquet"}
    rows = art.read_table().to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"] and rows[2]["error_message"] == "bad file"
    mtimes = {p: p.stat().st_mtime_ns for p in Path(art.path).iterdir()}
    again = _write_toy(store, _spec())
    assert again.reused and again.version == art.version
    assert {p: p.stat().st_mtime_ns for p in Path(art.path).iterdir()} == mtimes
    assert [a.ref for a in store.list()] == [art.ref] and store.resolve("toy").version == art.version
    assert store.verify(art) == []
    (Path(art.path) / "part-1.txt").write_text("tampered")
    assert store.verify(art) == ["part-1.txt"]


def test_uncommitted_dirs_are_invisible_and_gc_removes_only_them(tmp_path):
    store = ArtifactStore(str(tmp_path))
    done = _write_toy(store, _spec())
    with store.writer(_spec(params={"a": 9})) as w:  # crashed writer: files but no commit record
        w.write_bytes("half.bin", b"x")
    stale = tmp_path / "toy" / _spec(params={"a": 9}).version
    assert stale.is_dir() and store.get("toy", stale.name) is None
    assert [a.version for a in store.list("toy")] == [done.version]
    (Path(done.path) / "x.tmp-123-abcd").write_bytes(b"leftover")
    removed = store.gc()
    assert str(stale) in removed and not stale.exists()
    assert not (Path(done.path) / "x.tmp-123-abcd").exists()
    assert store.get("toy", done.version) is not None and store.verify(done) == []


def test_shard_markers_make_a_killed_run_resume(tmp_path):
    store = ArtifactStore(str(tmp_path))
    spec, computed = _spec(), []

    def run(fail_at=None):
        with store.writer(spec) as w:
            rows = []
            for s in range(4):
                name = f"shard-{s:05d}"
                rec = w.shard_done(name)
                if rec is None:
                    if s == fail_at:
                        raise RuntimeError("killed")
                    computed.append(s)
                    digest = w.write_bytes(f"{name}.bin", bytes([s]) * 10)
                    rec = {"rows": [ok_row(f"c{s}")]}
                    w.commit_shard(name, rows=rec["rows"], files={f"{name}.bin": digest})
                rows += rec["rows"]
            return w.commit(rows=rows)

    with pytest.raises(RuntimeError):
        run(fail_at=2)
    art = run()
    assert computed == [0, 1, 2, 3]  # shards 0 and 1 were not recomputed after the crash
    assert set(art.record["files"]) == {f"shard-{s:05d}.bin" for s in range(4)} | {"manifest.parquet"}


def test_fsspec_memory_root():
    store = ArtifactStore("memory://vta-test-root")
    art = _write_toy(store, _spec())
    assert store.get("toy", art.version) is not None and store.verify(art) == []
    assert _write_toy(store, _spec()).reused


def test_manifest_validation():
    with pytest.raises(ValueError, match="status 'weird'"):
        rows_to_table([{**ok_row("a"), "status": "weird"}])
    with pytest.raises(ValueError, match="duplicate clip_id 'a'"):
        rows_to_table([ok_row("a"), ok_row("a")])
    with pytest.raises(ValueError, match="lacks columns"):
        rows_to_table([{"clip_id": "a", "status": "ok"}])


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "x.y", "a b"])
def test_names_cannot_escape_the_root(bad):
    with pytest.raises(ValueError, match="invalid"):
        check_name("stage", bad)




def test_two_processes_writing_the_same_version(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o[0] for o in outs) == ["COMMITTED", "REUSED"] and outs[0][1] == outs[1][1]
    store = ArtifactStore(str(tmp_path))
    art = store.get("slow", outs[0][1])
    assert art is not None and store.verify(art) == [] and art.counts["ok"] == 5
