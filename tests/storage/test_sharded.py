"""storage/sharded.py: plan -> one idempotent task per shard -> finalize, in process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from storage import ArtifactStore, StageSpec, ok_row
from storage.sharded import ShardJob, ShardTask, local_map, run_sharded

SPEC = StageSpec("toy", {"n": 6}, {}, "1")


@dataclass(eq=False)
class Toy(ShardTask):
    """Writes ``{shard}.bin`` (bytes from the shard name); fails on ``fail_on``; logs what it computed."""

    fail_on: str | None = None
    computed: list[str] = field(default_factory=list)

    def compute(self, job, loaded, writer):  # noqa: ANN001, ANN201 - the ShardTask signature
        if job.shard == self.fail_on:
            raise RuntimeError(f"killed in {job.shard}")
        self.computed.append(job.shard)
        data = hashlib.sha256(job.shard.encode()).digest() * 64
        return {"rows": [ok_row(job.shard, shard=job.shard)], "files": {f"{job.shard}.bin": writer.write_bytes(
            f"{job.shard}.bin", data)}, "index": [job.shard]}


def _run(store: ArtifactStore, task: Toy, shard_map=None, progress=None):  # noqa: ANN001, ANN202
    def plan() -> list[ShardJob]:
        return [ShardJob(store.root, SPEC, f"s-{i:05d}") for i in range(6)]

    def finalize(w, records):  # noqa: ANN001, ANN202
        assert [r["index"] for r in records] == [[f"s-{i:05d}"] for i in range(6)]  # plan order, whatever ran them
        return w.commit(rows=[r for rec in records for r in rec["rows"]])

    return run_sharded(store, spec=SPEC, plan=plan, task=task, finalize=finalize, shard_map=shard_map,
                       progress=progress)


def test_a_killed_run_resumes_at_shard_granularity(tmp_path):
    store = ArtifactStore(str(tmp_path))
    first = Toy(fail_on="s-00003")
    with pytest.raises(RuntimeError, match="killed in s-00003"):
        _run(store, first)
    assert first.computed == ["s-00000", "s-00001", "s-00002"]
    assert store.get("toy", SPEC.version) is None  # nothing committed
    progress: list[tuple[int, int]] = []
    second = Toy()
    art = _run(store, second, progress=lambda d, t: progress.append((d, t)))
    assert second.computed == ["s-00003", "s-00004", "s-00005"]  # the committed shards are not redone
    assert progress == [(4, 6), (5, 6), (6, 6)]  # done shards count
    assert art.counts == {"ok": 6, "failed": 0, "filtered": 0}
    assert store.verify(art) == [] and len(art.record["files"]) == 7  # 6 payloads + the manifest
    third = Toy()
    assert _run(store, third).reused and third.computed == []


def test_a_shard_task_is_idempotent(tmp_path):
    """A retried (or duplicated) task finds its marker and writes nothing."""
    store = ArtifactStore(str(tmp_path))
    task = Toy()
    job = ShardJob(store.root, SPEC, "s-00000")
    a = task(job)
    b = task(job)
    assert task.computed == ["s-00000"] and a == b


def test_a_custom_map_sees_only_what_remains_and_must_keep_order(tmp_path):
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(RuntimeError):
        _run(store, Toy(fail_on="s-00002"))
    seen: list[list[str]] = []

    def reversed_map(task, jobs, *, progress=None):  # noqa: ANN001, ANN202 - a map that runs them backwards
        seen.append([j.shard for j in jobs])
        return list(reversed([task(j) for j in reversed(jobs)]))

    art = _run(store, Toy(), shard_map=reversed_map)
    assert seen == [["s-00002", "s-00003", "s-00004", "s-00005"]]
    assert art.counts["ok"] == 6

    def wrong_map(task, jobs, *, progress=None):  # noqa: ANN001, ANN202
        return [task(j) for j in reversed(jobs)]

    with pytest.raises(RuntimeError, match="returned the record of"):
        _run(ArtifactStore(str(tmp_path / "b")), Toy(), shard_map=wrong_map)


def test_local_map_reads_ahead_in_order(tmp_path):
    @dataclass(eq=False)
    class Reader(ShardTask):
        read_ahead = True
        loads: list[str] = field(default_factory=list)

        def load(self, job):  # noqa: ANN001, ANN201
            self.loads.append(job.shard)
            return job.shard.upper()

        def compute(self, job, loaded, writer):  # noqa: ANN001, ANN201
            assert loaded == job.shard.upper()
            return {"rows": [], "files": {}}

    store = ArtifactStore(str(tmp_path))
    task = Reader()
    jobs = [ShardJob(store.root, SPEC, f"r-{i}") for i in range(4)]
    assert [r["shard"] for r in local_map(task, jobs)] == ["r-0", "r-1", "r-2", "r-3"]
    assert task.loads == ["r-0", "r-1", "r-2", "r-3"]
