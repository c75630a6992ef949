"""The artifact store on a real S3 endpoint (moto on loopback): commit, reuse, listing across stores,
create-only commits with concurrent writers (threads and processes), staging, local copies, gc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from s3server import s3  # noqa: F401 - the fixture
from slow_writer import SLOW_WRITER

from storage import ArtifactStore, StageSpec, local_copy, ok_row
from storage.fs import filesystem, s3_endpoint, set_s3_endpoint
from storage.store import COMMIT_FILE, WRITERS_DIR

REPO = Path(__file__).parents[2]


def _spec(**params):
    return StageSpec("toy", {"a": 1, **params}, {"src": "v1"}, "1")


def _write(store, spec, payload=b"payload", n=3):
    with store.writer(spec) as w:
        if w.committed:
            return w.artifact
        for i in range(n):
            w.write_bytes(f"part-{i}.bin", payload + bytes([i]))
        return w.commit(rows=[ok_row(f"c{i}") for i in range(n)])


def test_endpoint_from_the_environment(s3, monkeypatch):  # noqa: F811
    fs, path = filesystem(s3.url("root"))
    assert s3_endpoint() == s3.endpoint and fs.endpoint_url == s3.endpoint and path == f"{s3.bucket}/root"
    assert fs.dircache.use_listings_cache is False
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")  # the service-specific one wins (as botocore)
    assert s3_endpoint() == "http://127.0.0.1:1"
    set_s3_endpoint(s3.endpoint)  # what `vta --s3-endpoint` does
    assert s3_endpoint() == s3.endpoint and os.environ["AWS_ENDPOINT_URL"] == s3.endpoint


def test_commit_reuse_list_verify_gc(s3):  # noqa: F811
    store = ArtifactStore(s3.url("root"))
    art = _write(store, _spec())
    assert not art.reused and art.path == f"{s3.url('root')}/toy/{art.version}"
    assert s3.keys(f"root/toy/{art.version}/") == [f"root/toy/{art.version}/{n}" for n in
                                                    (COMMIT_FILE, "manifest.parquet", "part-0.bin", "part-1.bin",
                                                     "part-2.bin")]  # no heartbeat left behind
    assert _write(store, _spec()).reused
    assert [a.ref for a in store.list()] == [art.ref] and store.resolve("toy").version == art.version
    assert store.verify(art) == [] and art.read_table().num_rows == 3
    s3.client().put_object(Bucket=s3.bucket, Key=f"root/toy/{art.version}/part-1.bin", Body=b"tampered")
    assert store.verify(art) == ["part-1.bin"]

    with store.writer(_spec(a=9)) as w:  # a crashed writer: files, no commit
        w.write_bytes("half.bin", b"x")
    stale = store._dir("toy", _spec(a=9).version)
    assert store.get("toy", _spec(a=9).version) is None and [a.ref for a in store.list()] == [art.ref]
    assert store.gc() == []  # younger than the minimum age: could be a writer between two writes
    assert store.gc(min_age_s=0) == [stale] and not store.fs.exists(stale)
    assert store.get("toy", art.version) is not None


def test_no_stale_listing_across_stores(s3):  # noqa: F811
    a, b = ArtifactStore(s3.url("r")), ArtifactStore(s3.url("r"))
    assert a.list() == [] and b.list() == [] and b.stages() == []
    first = _write(a, _spec())
    assert [x.ref for x in b.list()] == [first.ref] and b.stages() == ["toy"]
    second = _write(b, _spec(a=2))
    assert {x.ref for x in a.list("toy")} == {first.ref, second.ref}
    assert a.latest("toy").version in {first.version, second.version}


def test_gc_never_removes_a_live_writer(s3):  # noqa: F811
    store = ArtifactStore(s3.url("r"))
    with store.writer(_spec(a=5)) as w:
        w.write_bytes("x.bin", b"x")
        assert any(f"/{WRITERS_DIR}/" in k for k in s3.keys("r/"))  # the heartbeat
        assert store.gc(min_age_s=0) == []  # the heartbeat is fresh
        art = w.commit(rows=[ok_row("c")])
    assert not any(f"/{WRITERS_DIR}/" in k for k in s3.keys("r/")) and store.verify(art) == []


def test_two_threads_same_version_one_commit(s3):  # noqa: F811
    store = ArtifactStore(s3.url("r"))
    spec, barrier, results = _spec(), threading.Barrier(2), {}

    def writer(name):
        with store.writer(spec) as w:
            assert not w.committed
            for i in range(3):
                w.write_bytes(f"part-{i}.bin", b"same bytes" + bytes([i]))
            barrier.wait()  # both have written everything; both now commit
            results[name] = w.commit(rows=[ok_row("c")])

    threads = [threading.Thread(target=writer, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.reused for r in results.values()) == [False, True]
    assert results["a"].record == results["b"].record  # the loser returns the winner's record
    assert s3.keys(f"r/toy/{spec.version}/").count(f"r/toy/{spec.version}/{COMMIT_FILE}") == 1
    assert store.verify(store.get("toy", spec.version)) == []


def test_a_writer_with_other_bytes_waits_for_the_live_writers_commit(s3):  # noqa: F811
    """Non-deterministic outputs (timings, event files): the second writer must not mix its bytes into the
    first's artifact; it waits for that commit and adopts it."""
    store = ArtifactStore(s3.url("r"))
    spec, first_wrote, out = _spec(), threading.Event(), {}

    def first():
        with store.writer(spec) as w:
            w.write_bytes("report.json", b'{"timing": 1.0}')
            first_wrote.set()
            time.sleep(1.5)  # the second writer arrives meanwhile
            w.write_bytes("more.bin", b"m")
            out["first"] = w.commit(rows=[ok_row("c")])

    t = threading.Thread(target=first)
    t.start()
    first_wrote.wait(30)
    with store.writer(spec) as w:
        w.write_bytes("report.json", b'{"timing": 2.0}')  # differs: waits for the first writer's commit
        assert w.superseded
        w.write_bytes("late.bin", b"ignored")  # a no-op now
        second = w.commit(rows=[ok_row("c")])
    t.join(30)
    assert second.reused and second.record == out["first"].record and not out["first"].reused
    art = store.get("toy", spec.version)
    assert store.verify(art) == [] and json.loads(art.open("report.json").read())["timing"] == 1.0
    assert not store.fs.exists(store._dir("toy", spec.version) + "/late.bin")


def test_a_dead_writers_leftovers_are_replaced(s3):  # noqa: F811
    store = ArtifactStore(s3.url("r"))
    spec = _spec()
    s3.client().put_object(Bucket=s3.bucket, Key=f"r/toy/{spec.version}/part-0.bin", Body=b"old run")
    art = _write(store, spec)
    assert not art.reused and store.verify(art) == []


def test_shard_markers_are_create_only(s3):  # noqa: F811
    store = ArtifactStore(s3.url("r"))
    with store.writer(_spec()) as w:
        digest = w.write_bytes("s0.tar", b"tar")
        w.commit_shard("s0", rows=[ok_row("c0")], files={"s0.tar": digest})
    with store.writer(_spec()) as w:  # a second writer marking the same shard keeps the first marker
        w.commit_shard("s0", rows=[ok_row("other")], files={"s0.tar": digest})
        assert w.shard_done("s0")["rows"][0]["clip_id"] == "c0" and w.shard_markers() == ["s0"]
        art = w.commit(rows=[ok_row("c0")])
    assert art.record["files"] == {"s0.tar": digest, "manifest.parquet": art.record["files"]["manifest.parquet"]}


def test_staging_uploads_then_local_copy_verifies(s3, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VTA_CACHE", str(tmp_path / "cache"))
    store = ArtifactStore(s3.url("r"))
    with store.writer(_spec()) as w:
        with w.staging() as d:
            (d / "videos").mkdir()
            (d / "videos" / "a.mp4").write_bytes(b"video a")
            (d / "labels.csv").write_text("ytid\n")
        art = w.commit(counts={"ok": 1})
    assert set(art.record["files"]) == {"videos/a.mp4", "labels.csv"}
    assert not list((tmp_path / "cache" / "staging").iterdir())  # the staging folder is gone
    local = local_copy(art)
    assert Path(local.path).is_dir() and (Path(local.file("videos")) / "a.mp4").read_bytes() == b"video a"
    assert ArtifactStore(local.root).get("toy", art.version) is not None  # the cache is a local root
    part = local_copy(art, only=["labels.csv"])
    assert part.path == local.path
    s3.client().put_object(Bucket=s3.bucket, Key=f"r/toy/{art.version}/videos/a.mp4", Body=b"tampered")
    assert local_copy(art).file("labels.csv") == local.file("labels.csv")  # cached and verified: not refetched
    (Path(local.file("videos")) / "a.mp4").unlink()
    with pytest.raises(ValueError, match="does not match its commit record"):
        local_copy(art)




def test_two_processes_same_version_one_commit(s3):  # noqa: F811
    env = {**os.environ, **s3.env, "AWS_ENDPOINT_URL": s3.endpoint, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_WRITER, s3.url("p")], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o[0] for o in outs) == ["COMMITTED", "REUSED"] and outs[0][1] == outs[1][1]
    store = ArtifactStore(s3.url("p"))
    art = store.get("slow", outs[0][1])
    assert art is not None and store.verify(art) == [] and art.counts["ok"] == 5
    assert [k for k in s3.keys("p/") if k.endswith(COMMIT_FILE)] == [f"p/slow/{art.version}/{COMMIT_FILE}"]
