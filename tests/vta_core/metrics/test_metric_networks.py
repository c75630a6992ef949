"""Metric networks through their real loading paths, with random weights saved in the released formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vta_core.metrics.cavp import cavp_from_embeddings, load_cavp
from vta_core.metrics.fad import build_vggish, load_vggish
from vta_core.metrics.frechet import fd_embeddings
from vta_core.metrics.pam import PROMPTS, chunk_audio, load_pam, pam_from_embeddings
from vta_core.metrics.panns import Cnn14, load_panns, preprocess
from vta_core.metrics.suite import PAPER_COLUMNS, SYNTH_COLUMNS, ClipAudio, MetricModels, evaluate_all

TINY = (4, 8, 8, 16, 16, 32)


def randomise_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module")
def panns_ckpt(tmp_path_factory):
    """A tiny Cnn14 saved as audioset_tagging_cnn saves checkpoints: {"iteration", "model", "sampler"}."""
    torch.manual_seed(0)
    model = Cnn14(channels=TINY).eval()
    randomise_bn(model, 0)
    path = tmp_path_factory.mktemp("panns") / "Cnn14_16k_mAP=0.438.pth"
    sampler = {"indexes_per_class": [np.arange(5), np.arange(3)], "random_state": np.random.RandomState(0).get_state()}
    torch.save({"iteration": 660000, "model": model.state_dict(), "sampler": sampler}, path)
    return model, path


@pytest.fixture(scope="module")
def vggish_ckpt(tmp_path_factory):
    """Full-size VGGish (the architecture is fixed) saved as vggish-10086976.pth: a plain state dict."""
    torch.manual_seed(1)
    model = build_vggish().eval()
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(model.state_dict(), path)
    return model, path


def tone(seed: int, seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_panns_released_format_loads_and_matches_in_memory_model(panns_ckpt, one_thread):
    model, path = panns_ckpt
    torch.manual_seed(123)  # a different init: only the checkpoint can make outputs equal
    embedder, reason = load_panns(path)
    assert reason is None and embedder.model.n_blocks == 6
    y = tone(0, 2.0)
    out = embedder(y, 16000)
    with torch.no_grad():
        ref = model(torch.from_numpy(y - y.mean())[None])
    np.testing.assert_allclose(out["embedding"], ref["embedding"][0].double().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["logits"], ref["logits"][0].double().numpy(), rtol=1e-6, atol=1e-7)
    assert out["embedding"].shape == (32,) and out["logits"].shape == (527,) and (out["embedding"] >= 0).all()
    y44 = tone(0, 2.0, sr=44100)  # resampled to 16 kHz on the way in
    assert embedder(y44, 44100)["logits"].shape == (527,)


def test_panns_input_as_audioldm_eval_dc_removed_and_padded_to_2_s(panns_ckpt, one_thread):
    """What the tiny Cnn14 receives (a hook on its STFT input): y - mean(y), zero-padded to 2 s at 16 kHz."""
    embedder, _ = load_panns(panns_ckpt[1])
    seen: list[np.ndarray] = []
    hook = embedder.model.spectrogram_extractor.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0][0].double().numpy().copy()))
    try:
        short = tone(4, 1.0)  # 1 s at 16 kHz
        plain = embedder(short, 16000)["embedding"]
        shifted = embedder(short + np.float32(0.3), 16000)["embedding"]
        embedder(tone(5, 2.5), 16000)
        embedder(tone(6, 1.0, sr=44100) + np.float32(1.0), 44100)
    finally:
        hook.remove()
    expected = np.concatenate([short - short.mean(), np.zeros(16000)])
    assert seen[0].shape == (32000,) and (seen[0][16000:] == 0).all()  # padded at the end to 2 s
    np.testing.assert_allclose(seen[0], expected, atol=1e-6)
    np.testing.assert_allclose(seen[1], seen[0], atol=1e-6)  # a DC offset never reaches the network ...
    np.testing.assert_allclose(shifted, plain, rtol=1e-5, atol=1e-6)  # ... nor changes the embedding
    assert seen[2].shape == (40000,)  # 2.5 s: longer than 2 s, not padded
    assert seen[3].shape == (32000,) and abs(seen[3][:16000].mean()) < 1e-3  # DC removed before resampling
    assert preprocess(short, 16000).shape == (32000,)


def test_panns_paper_size_and_missing_or_bad_weights(tmp_path):
    state = Cnn14().state_dict()
    assert state["fc1.weight"].shape == (2048, 2048) and state["fc_audioset.weight"].shape == (527, 2048)
    assert state["logmel_extractor.melW"].shape == (257, 64)  # window 512 at 16 kHz, 64 mels
    assert load_panns(None) == (None, "no PANNs Cnn14 weights given")
    assert "not found" in load_panns(tmp_path / "nowhere.pth")[1]
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    _, reason = load_panns(tmp_path / "garbage.pth")
    assert "garbage.pth" in reason and "\n" not in reason
    torch.save({"model": {"fc1.weight": torch.zeros(2, 2)}}, tmp_path / "partial.pth")
    assert "does not load" in load_panns(tmp_path / "partial.pth")[1]
    torch.save({"model": {}, "hook": np.random.default_rng}, tmp_path / "unsafe.pth")
    assert "unsafe.pth" in load_panns(tmp_path / "unsafe.pth")[1]  # weights_only refuses arbitrary objects
    _, reason = load_panns("hf:someone/panns/Cnn14_16k_mAP=0.438.pth")  # HF_HUB_OFFLINE=1 in tests
    assert reason.startswith("PANNs Cnn14 weights hf:someone/panns/") and "\n" not in reason


def test_vggish_released_format_frame_embeddings_without_pca_or_last_relu(vggish_ckpt, one_thread):
    model, path = vggish_ckpt
    from torchvggish.vggish_input import waveform_to_examples

    embedder, reason = load_vggish(path)
    assert reason is None
    y = tone(1, 3.0, sr=22050)
    emb = embedder(y, 22050)
    assert emb.shape == (3, 128)  # one embedding per 0.96 s patch
    with torch.no_grad():
        x = model.features(waveform_to_examples(y.astype(np.float64), 22050, return_tensor=True).float())
        x = x.transpose(1, 3).transpose(1, 2).reshape(len(x), -1)
        expected = model.embeddings[:-1](x)  # the stack without its final ReLU
    np.testing.assert_allclose(emb, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    assert (emb < 0).any()  # the final ReLU is really gone
    assert embedder(tone(2, 0.5), 16000).shape == (0, 128)
    assert "not found" in load_vggish(path.parent / "missing.pth")[1]


def test_pam_and_cavp_arithmetic_and_unavailable_reasons():
    rng = np.random.default_rng(0)
    a, t = rng.standard_normal((3, 8)), rng.standard_normal((2, 8))
    scale = np.log(1 / 0.003)
    an, tn = a / np.linalg.norm(a, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = np.exp(scale) * an @ tn.T
    expected = np.exp(logits[:, 0]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(pam_from_embeddings(a, t, scale), expected, rtol=1e-12)
    n = 44100 * 7
    assert chunk_audio(np.ones(100)).shape == (1, n)  # short audio repeated to 7 s
    long = np.arange(n * 2 + 10, dtype=np.float32)
    chunks = chunk_audio(long)
    assert chunks.shape == (3, n) and chunks[2, -1] == long[-1]  # remainder: the last 7 s
    assert PROMPTS[0] == "the sound is clear and clean."
    assert load_pam(None)[0] is None and "MS-CLAP" in load_pam(None)[1]
    assert load_cavp(None)[0] is None and "Diff-Foley" in load_cavp(None)[1]
    v, w = rng.standard_normal(16), rng.standard_normal(16)
    assert cavp_from_embeddings(v, w) == pytest.approx(v @ w / np.linalg.norm(v) / np.linalg.norm(w))


class FakePam:
    """A stand-in PAM model (tests the plumbing of evaluate_all, not a network)."""

    logit_scale = 2.0

    def audio_embeddings(self, chunks):
        return np.stack([[c.std(), 1.0] for c in chunks])

    def prompt_embeddings(self):
        return np.array([[1.0, 0.0], [0.0, 1.0]])


def test_evaluate_all_columns_in_paper_order_nulls_with_reasons_and_a_bad_clip(panns_ckpt, vggish_ckpt, one_thread,
                                                                              tmp_path):
    models = MetricModels.load(panns=panns_ckpt[1], vggish=vggish_ckpt[1], clap=tmp_path / "no-clap.pt",
                               pam_model=FakePam())
    clips = [ClipAudio(f"c{i}", tone(i), 16000, reference=tone(100 + i), label="a tone") for i in range(12)]
    bad = np.full(16000, np.nan, dtype=np.float32)
    clips.insert(3, ClipAudio("broken", bad, 16000, reference=tone(99)))
    ev = evaluate_all(clips, models=models)
    assert list(ev.summary) == [*PAPER_COLUMNS, *SYNTH_COLUMNS]
    assert list(ev.failed) == ["broken"] and "non-finite" in ev.failed["broken"]
    assert len(ev.per_clip) == 12
    v = ev.values()
    for k in ("kl", "kl_sigmoid", "pam"):
        assert v[k] is not None and np.isfinite(v[k]), k
    assert ev.summary["kl"].extra["n"] == 12 and v["kl_sigmoid"] != v["kl"]
    un = ev.unavailable()  # 12 clips: below every distribution minimum
    assert "n = 12" in un["fd"] and "D = 32" in un["fd"]  # the tiny Cnn14's 32-d embedding
    assert "n = 12" in un["fad"] and "D = 128" in un["fad"]  # one 0.96 s VGGish frame per 1 s clip
    assert "at least 100 clips" in un["is"] and "n = 12" in un["is"]
    assert "not found" in un["clap"] and "Diff-Foley" in un["cavp"]
    assert "no clip has a video" in un["av_align"]
    assert all("synthetic audio classifier" in un[k] for k in SYNTH_COLUMNS)

    alone = evaluate_all([ClipAudio(c.clip_id, c.audio, 16000) for c in clips[:5]], models=models)
    assert alone.summary["fd"].reason.startswith("no reference audio") and "n = 4" in alone.summary["is"].reason  # "broken" fails
    with pytest.raises(ValueError, match="at least one clip"):
        evaluate_all([], models=models)


def test_evaluate_all_fd_above_its_minimum_matches_the_embeddings(panns_ckpt, one_thread):
    """33 clips > D = 32 of the tiny Cnn14: FD is reported and equals FD of the embedder's outputs."""
    models = MetricModels.load(panns=panns_ckpt[1])
    clips = [ClipAudio(f"c{i}", tone(i, 0.5), 16000, reference=tone(100 + i, 0.5)) for i in range(33)]
    ev = evaluate_all(clips, models=models)
    gen = np.stack([models.panns[0](c.audio, 16000)["embedding"] for c in clips])
    ref = np.stack([models.panns[0](c.reference, 16000)["embedding"] for c in clips])
    assert ev.summary["fd"].value == pytest.approx(fd_embeddings(gen, ref), rel=1e-9)
    assert ev.summary["fd"].extra == {"n": 33, "n_reference": 33, "dim": 32, "n_clips": 33}
