"""Lineage look-ups: the one "ref or path" resolver and the recorded inputs of an artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import ArtifactStore, StageSpec
from storage.lineage import is_ref, latents_vae, recorded_input, resolve_source


def _commit(store: ArtifactStore, stage: str, *, params: dict | None = None, inputs: dict | None = None,
            extra: dict | None = None, supersedes: str | None = None):
    with store.writer(StageSpec(stage, params or {}, inputs or {}, "1")) as w:
        w.write_bytes("x.txt", b"x")
        return w.commit(counts={"ok": 1}, extra={**(extra or {}), **({"supersedes": supersedes} if supersedes else {})})


def test_is_ref():
    assert is_ref("train") and is_ref("train@abc123") and is_ref("vae@abc", stage="vae")
    assert not is_ref("vae@abc", stage="train") and not is_ref("dir:0123") and not is_ref("a/b@c")
    assert not is_ref("train@") and not is_ref("some folder")


def test_resolve_source_tells_refs_from_paths(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path / "root"))
    train = _commit(store, "train")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert resolve_source(store, train) is train
    assert resolve_source(store, train.ref, stage="train").ref == train.ref
    assert resolve_source(store, "train").ref == train.ref  # a bare stage name: the latest
    assert resolve_source(store, str(folder), stage="train") == folder
    assert resolve_source(store, folder) == folder
    assert resolve_source(store, "missing/folder", stage="train") == Path("missing/folder")  # its reader reports it
    assert resolve_source(store, "vae@abc", stage="train") == Path("vae@abc")  # not a ref of that stage
    with pytest.raises(ValueError, match="no committed artifact 'train@nope'"):
        resolve_source(store, "train@nope")
    with pytest.raises(ValueError, match="is not a vae artifact"):
        resolve_source(store, train, stage="vae")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    assert resolve_source(store, "train") == Path("train")  # an existing folder wins over a ref


def test_recorded_inputs_and_the_vae_of_latents(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    dec = _commit(store, "decode", params={"a": 1})
    newer = _commit(store, "decode", params={"a": 1, "rerun": True}, supersedes=dec.version)
    vae = _commit(store, "vae")
    lat = _commit(store, "latents", inputs={"decode": dec.version, "vae": vae.ref})
    assert recorded_input(store, lat, "decode").ref == newer.ref  # the newest forced rerun
    assert recorded_input(store, lat, "augment") is None
    assert latents_vae(store, lat).ref == vae.ref
    from_folder = _commit(store, "latents", inputs={"decode": dec.version, "vae": "dir:0123"},
                          extra={"vae_dir": "/some/vae"})
    assert latents_vae(store, from_folder) == "/some/vae"
    unknown = _commit(store, "latents", inputs={"decode": dec.version, "vae": "dir:4567"})
    with pytest.raises(ValueError, match="cannot tell which VAE made it"):
        latents_vae(store, unknown)
