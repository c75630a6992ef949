"""`vta run STAGE --force`: recompute from the recorded inputs; a new version only when results
change; downstream artifacts stay intact until they are rerun, and then read the new version."""

from __future__ import annotations

import pytest
from mediafiles import make_clip

import stages.decode as decode_mod
from flows.rerun import rerun
from stages.decode import DecodeParams, decode_stage
from stages.features import features_stage
from storage import ArtifactStore
from vta_core.presets import get_preset

G = get_preset("tiny").geometry
PARAMS = DecodeParams.from_geometry(G, max_windows=1)


@pytest.fixture
def root(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        make_clip(videos / f"clip{i}.mp4", seconds=1.6, rate=str(10 + i))
    store = ArtifactStore(str(tmp_path / "root"))
    dec = decode_stage(store, videos_dir=videos, params=PARAMS)
    feats = features_stage(store, source=dec, vision="pixels:4")
    return store, dec, feats, videos


def intact(store, *arts):
    for art in arts:
        assert store.get(art.stage, art.version) is not None and store.verify(art) == [], art.ref


def test_identical_results_write_nothing(root):
    store, dec, feats, _ = root
    report = rerun("decode", root=store.root, force=True, log=lambda m: None)
    assert report["reproducible"] and report["new_version"] is None
    assert [a.ref for a in store.list()] == [dec.ref, feats.ref]


def test_changed_results_become_a_new_version_and_downstream_follows_on_rerun(root, monkeypatch):
    store, dec, feats, _ = root
    real = decode_mod.read_audio
    monkeypatch.setattr(decode_mod, "read_audio", lambda *a, **kw: real(*a, **kw) * 0.5)  # a silent code change
    report = rerun("decode", root=store.root, force=True, log=lambda m: None)
    new = store.resolve(report["new_version"])
    assert not report["reproducible"] and new.version != dec.version and new.record["supersedes"] == dec.version
    assert new.params == dec.params and new.record["inputs"] == dec.record["inputs"]
    assert any(f.endswith(".tar") for f in report["differing_files"])
    intact(store, dec, feats, new)  # the old version and everything downstream untouched
    assert len(store.list("features")) == 1

    again = rerun(dec.ref, root=store.root, force=True, log=lambda m: None)
    assert again["new_version"] == new.ref and len(store.list("decode")) == 2  # same change: same version
    of_new = rerun(new.ref, root=store.root, force=True, log=lambda m: None)
    assert of_new["reproducible"] and of_new["new_version"] is None  # the rerun itself reproduces

    monkeypatch.setattr(decode_mod, "read_audio", real)
    down = rerun(feats.ref, root=store.root, log=lambda m: None)  # the downstream rerun reads the successor
    new_feats = store.resolve(down["ref"])
    assert new_feats.version != feats.version and new_feats.record["inputs"]["decode"] == new.version
    intact(store, dec, feats, new, new_feats)


def test_changed_inputs_on_disk_become_their_own_version(root):
    store, dec, _, videos = root
    make_clip(videos / "clip9.mp4", seconds=1.6)
    report = rerun(dec.ref, root=store.root, force=True, log=lambda m: None)
    new = store.resolve(report["new_version"])
    assert new.record["supersedes"] == dec.version and new.record["result"] is None
    assert new.counts["ok"] == 3 and dec.counts["ok"] == 2
    assert decode_stage(store, videos_dir=videos, params=PARAMS).ref == new.ref  # what an ingest would make
