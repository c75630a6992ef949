"""Damaged and full-disk roots: readers check committed files against their records, a full disk fails in
one line and commits nothing, `vta run --force` rewrites damaged files (docs/architecture.md#faults)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faults
import pytest
from mediafiles import make_clip
from s3server import User, moto_s3_with_policies
from tiny_checkpoints import tiny_train_artifact

import storage.store as store_mod
from flows.rerun import rerun
from stages.decode import DecodeParams, decode_stage
from stages.features import features_stage
from storage import ArtifactStore, DamagedArtifactError, StageSpec, local_copy, ok_row
from storage.fs import atomic_write_bytes, filesystem
from vta_core.checkpoint import checkpoint_dir, load_checkpoint

PARAMS = DecodeParams(fps=10.0, size=48, sample_rate=16000, duration_s=3.0, shard_size=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    for i in range(3):
        make_clip(d / f"clip{i}.mp4", seconds=3.2)
    return d


def _commit_one(store: ArtifactStore, name: str = "a.bin", data: bytes = b"x" * 1000):  # noqa: ANN202
    with store.writer(StageSpec("demo", {"n": 1})) as w:
        w.write_bytes(name, data)
        return w.commit(rows=[ok_row("c")])


def test_a_flipped_byte_is_a_one_line_error_naming_the_file_and_the_artifact(tmp_path):
    art = _commit_one(ArtifactStore(str(tmp_path)))
    assert art.open("a.bin").read() == b"x" * 1000 and art.read_table().num_rows == 1
    faults.flip(Path(art.file("a.bin")))
    with pytest.raises(DamagedArtifactError) as e:
        art.open("a.bin")
    msg = str(e.value)
    assert "\n" not in msg and art.ref in msg and "a.bin" in msg and "vta run" in msg
    with pytest.raises(DamagedArtifactError, match="a.bin"):
        local_copy(art)
    Path(art.file("manifest.parquet")).unlink()
    with pytest.raises(DamagedArtifactError, match="manifest.parquet is missing"):
        art.read_table()


def test_a_file_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    art = _commit_one(ArtifactStore(str(tmp_path)))
    calls: list[str] = []
    real = store_mod.sha256_local
    monkeypatch.setattr(store_mod, "sha256_local", lambda p: calls.append(str(p)) or real(p))
    for _ in range(3):
        local_copy(art, only=["a.bin"])
    assert len(calls) == 1
    faults.flip(Path(art.file("a.bin")))  # a rewrite changes the mtime: checked again, and caught
    with pytest.raises(DamagedArtifactError):
        local_copy(art, only=["a.bin"])
    assert len(calls) == 2


def test_a_damaged_checkpoint_is_refused_by_path_and_by_artifact(tmp_path):
    store = ArtifactStore(str(tmp_path))
    art = tiny_train_artifact(store, seed=0)
    folder = Path(art.file("checkpoint"))
    load_checkpoint(folder)
    weights = next(p for p in sorted(folder.glob("*.safetensors")))
    faults.flip(weights, at=weights.stat().st_size - 10)
    with pytest.raises(DamagedArtifactError, match=f"{art.ref} .*checkpoint/{weights.name}"):
        load_checkpoint(folder)
    with pytest.raises(DamagedArtifactError, match=f"checkpoint/{weights.name}"):
        checkpoint_dir(art)


def test_a_damaged_input_shard_fails_the_next_stage_and_force_rewrites_it(videos, tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    dec = decode_stage(store, videos_dir=videos, params=PARAMS)
    shard = Path(dec.file("shard-00001.tar"))
    good = shard.read_bytes()
    faults.flip(shard)
    with pytest.raises(DamagedArtifactError, match=f"{dec.ref} .*shard-00001.tar"):
        features_stage(store, source=dec, vision="pixels:4")
    assert store.list("features") == []  # nothing committed from a damaged input
    assert store.verify(dec) == ["shard-00001.tar"]
    report = rerun(dec.ref, root=store.root, force=True, log=lambda _m: None)
    assert report["repaired_files"] == ["shard-00001.tar"] and report["new_version"] is None
    assert shard.read_bytes() == good and store.verify(dec) == []
    assert features_stage(store, source=dec, vision="pixels:4").counts["ok"] == dec.record["n_windows"]


@contextmanager
def small_disk(where: Path, size_bytes: int) -> Iterator[Path]:
    try:
        with faults.small_disk(where, size_bytes) as disk:
            yield disk
    except faults.Unavailable as e:
        pytest.skip(str(e))


def test_a_full_disk_write_names_the_path_and_the_space_left(tmp_path):
    with small_disk(tmp_path / "disk", 64 * 1024) as disk:
        fs, _ = filesystem(str(disk))
        with pytest.raises(OSError) as e:
            atomic_write_bytes(fs, str(disk / "big.bin"), b"\0" * (1 << 20))
        msg = str(e.value)
        assert "\n" not in msg and "no space left" in msg and str(disk / "big.bin") in msg and "MiB free" in msg
        assert list(disk.iterdir()) == []  # the temp file is gone


def test_a_stage_on_a_full_disk_commits_nothing_and_resumes_to_clean_bytes(videos, tmp_path):
    clean = decode_stage(ArtifactStore(str(tmp_path / "clean")), videos_dir=videos, params=PARAMS)
    shard_bytes = Path(clean.file("shard-00000.tar")).stat().st_size
    with small_disk(tmp_path / "disk", int(shard_bytes * 1.6)) as disk:  # one shard fits, the second does not
        store = ArtifactStore(str(disk / "root"))
        with pytest.raises(OSError, match=r"no space left on device writing .*shard-0000\d\.tar .*MiB free"):
            decode_stage(store, videos_dir=videos, params=PARAMS)
        assert store.list() == []
        version = Path(store.root) / "decode" / clean.version
        markers = sorted((version / "_shards").glob("*.json"))
        assert [m.name for m in markers] == ["shard-00000.json"]  # whole markers only, for finished shards
        for m in markers:
            for rel, digest in json.loads(m.read_text())["files"].items():
                assert store_mod.sha256_local(version / rel) == digest
        assert not [p for p in version.rglob("*") if ".tmp-" in p.name]
        faults.grow(disk, 64 << 20)
        again = decode_stage(store, videos_dir=videos, params=PARAMS)
        assert again.version == clean.version and again.record["files"] == clean.record["files"]
        assert store.verify(again) == []


def test_a_bucket_that_refuses_writes_fails_in_one_line_and_commits_nothing(videos, tmp_path, monkeypatch):
    clean = decode_stage(ArtifactStore(str(tmp_path / "clean")), videos_dir=videos, params=PARAMS)

    def as_user(user: User) -> None:  # fresh clients with this user's keys (fsspec caches filesystems)
        for k, v in {**user.env, "AWS_ENDPOINT_URL": s3.endpoint}.items():
            monkeypatch.setenv(k, v)
        faults.fresh_s3_clients()

    with moto_s3_with_policies() as (s3, writer, no_put):
        as_user(no_put)
        store = ArtifactStore(s3.url("root"))
        with pytest.raises(PermissionError) as e:
            decode_stage(store, videos_dir=videos, params=PARAMS)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"the store refused to write {s3.url('root')}/decode/{clean.version}/")
        assert store.list() == [] and s3.keys("root/", user=no_put) == []  # reads still work: nothing is there
        as_user(writer)
        again = decode_stage(ArtifactStore(s3.url("root")), videos_dir=videos, params=PARAMS)
        assert again.version == clean.version and again.record["files"] == clean.record["files"]
    faults.fresh_s3_clients()
