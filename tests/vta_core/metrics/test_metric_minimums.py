"""Distribution metrics only above their minimums (null naming n and D below), both KL variants, and the
synthetic classifier applied to event windows (docs/algorithms.md#metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vta_core.metrics import synth_classifier as sc
from vta_core.metrics.frechet import fd_embeddings
from vta_core.metrics.inception import inception_score, kl_divergence, kl_per_clip
from vta_core.metrics.suite import NO_EVENTS, ClipAudio, MetricModels, evaluate_all
from vta_core.metrics.synth_classifier import PRE_S, WINDOW_S, SynthAudioClassifier, SynthEmbedder

D, C = 4, 3  # the fake classifier's embedding size and class count


class FakePanns:
    """A stand-in classifier: embedding = first D samples x 10, logits = the next C (the suite's plumbing only)."""

    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        y = np.asarray(audio, dtype=np.float64)
        return {"embedding": 10 * y[:D], "logits": 10 * y[D : D + C]}


def models(panns=None, synth=None) -> MetricModels:
    no = (None, "not in this test")
    return MetricModels(panns=(panns, None) if panns else no, vggish=no, clap=no, pam=no, cavp=no,
                        synth=(synth, None) if synth else no)


def noise_clips(n: int, *, seconds: float = 0.01, events_s: tuple[float, ...] = ()) -> list[ClipAudio]:
    rng = np.random.default_rng(n)
    size = round(seconds * 16000)
    return [ClipAudio(f"c{i:03d}", rng.standard_normal(size).astype(np.float32), 16000,
                      reference=rng.standard_normal(size).astype(np.float32), events_s=events_s) for i in range(n)]


def test_fd_needs_more_samples_than_dimensions_on_both_sides():
    below = evaluate_all(noise_clips(D), models=models(FakePanns())).summary["fd"]
    assert below.value is None and "n = 4" in below.reason and "D = 4" in below.reason and "full-rank" in below.reason
    clips = noise_clips(D + 1)
    above = evaluate_all(clips, models=models(FakePanns())).summary["fd"]
    net = FakePanns()
    gen = np.stack([net(c.audio, 16000)["embedding"] for c in clips])
    ref = np.stack([net(c.reference, 16000)["embedding"] for c in clips])
    assert above.value == pytest.approx(fd_embeddings(gen, ref), rel=1e-12)
    assert above.extra["n"] == above.extra["n_reference"] == D + 1 and above.extra["dim"] == D


def test_is_needs_ten_splits_of_ten():
    below = evaluate_all(noise_clips(99), models=models(FakePanns())).summary["is"]
    assert below.value is None and "at least 100 clips" in below.reason and "n = 99" in below.reason
    clips = noise_clips(100)
    above = evaluate_all(clips, models=models(FakePanns())).summary["is"]
    logits = np.stack([FakePanns()(c.audio, 16000)["logits"] for c in clips])
    assert above.value == pytest.approx(inception_score(logits)[0], rel=1e-12) and above.extra["n"] == 100


def test_kl_sigmoid_on_a_hand_computed_pair():
    gen, gt = np.array([[0.0, math.log(3)]]), np.array([[math.log(3), 0.0]])  # sigmoid: [.5, .75] / [.75, .5]
    expected = 0.75 * (math.log(0.75) - math.log(0.5 + 1e-6)) + 0.5 * (math.log(0.5) - math.log(0.75 + 1e-6))
    assert kl_per_clip(gen, gt, probs="sigmoid")[0] == pytest.approx(expected, rel=1e-12)
    # softmax of the same logits: [.25, .75] / [.75, .25]
    soft = 0.75 * (math.log(0.75) - math.log(0.25 + 1e-6)) + 0.25 * (math.log(0.25) - math.log(0.75 + 1e-6))
    assert kl_per_clip(gen, gt)[0] == pytest.approx(soft, rel=1e-12)
    with pytest.raises(ValueError, match="'tanh'"):
        kl_per_clip(gen, gt, probs="tanh")


def test_both_kl_variants_are_audioldm_evals_formulas():
    """kl_div((p_gen + EPS).log(), p_gt, reduction="sum") / N with softmax and with sigmoid probabilities."""
    rng = np.random.default_rng(3)
    gen, gt = rng.standard_normal((6, 527)) * 3, rng.standard_normal((6, 527)) * 3
    g, t = torch.from_numpy(gen), torch.from_numpy(gt)
    ref_soft = F.kl_div((g.softmax(dim=1) + 1e-6).log(), t.softmax(dim=1), reduction="sum") / len(g)
    ref_sig = F.kl_div((g.sigmoid() + 1e-6).log(), t.sigmoid(), reduction="sum") / len(g)
    assert kl_divergence(gen, gt) == pytest.approx(float(ref_soft), rel=1e-9)
    assert kl_divergence(gen, gt, probs="sigmoid") == pytest.approx(float(ref_sig), rel=1e-9)
    assert abs(float(ref_sig) - float(ref_soft)) > 1.0  # two different numbers


def test_suite_reports_both_kl_columns_with_their_n():
    clips = noise_clips(3)
    ev = evaluate_all(clips, models=models(FakePanns()))
    net = FakePanns()
    gen = np.stack([net(c.audio, 16000)["logits"] for c in clips])
    ref = np.stack([net(c.reference, 16000)["logits"] for c in clips])
    assert ev.summary["kl"].value == pytest.approx(kl_divergence(gen, ref), rel=1e-12)
    assert ev.summary["kl_sigmoid"].value == pytest.approx(kl_divergence(gen, ref, probs="sigmoid"), rel=1e-12)
    assert ev.summary["kl"].extra["n"] == ev.summary["kl_sigmoid"].extra["n"] == 3
    assert {"kl", "kl_sigmoid"} <= set(ev.per_clip[0])


def test_event_windows_are_cut_at_the_right_samples():
    y = np.arange(3 * 16000, dtype=np.float32)  # sample value = its index
    w = sc.event_windows(y, [0.5, 1.2, 0.02, 2.9])
    win = round(WINDOW_S * 16000)
    assert w.shape == (4, win) == (4, 8000)
    assert w[0, 0] == round((0.5 - PRE_S) * 16000) == 7200 and w[0, -1] == 7200 + win - 1
    assert w[1, 0] == 18400 and np.array_equal(w[1], np.arange(18400, 18400 + win))
    pre = round((PRE_S - 0.02) * 16000)  # the third window starts 480 samples before the clip: zeros there
    assert (w[2, :pre] == 0).all() and w[2, pre] == 0 and w[2, pre + 1] == 1
    inside = 3 * 16000 - 45600  # the last one runs past the end: zero-padded
    assert w[3, 0] == 45600 and w[3, inside - 1] == 47999 and (w[3, inside:] == 0).all()


@pytest.fixture(scope="module")
def synth():
    torch.manual_seed(0)
    return SynthEmbedder(SynthAudioClassifier(classes=["a", "b", "none"]).eval())


def test_synth_windows_come_from_the_resampled_track(synth, one_thread):
    rng = np.random.default_rng(0)
    y22 = rng.standard_normal(22050 * 2).astype(np.float32)
    got = synth.windows(y22, 22050, [0.4, 1.1])
    with torch.no_grad():
        ref = synth.model(torch.from_numpy(sc.event_windows(sc.to_16k(y22, 22050), [0.4, 1.1])))
    np.testing.assert_allclose(got["logits"], ref["logits"].double().numpy(), rtol=1e-6)
    assert got["embedding"].shape == (2, 64) and synth.frames(y22, 22050).shape == (4, 64)  # 2 s / 0.5 s


def test_synth_columns_use_event_windows_and_their_minimums(synth, one_thread):
    events = (0.3, 0.9, 2.5)  # 2.5 s lies past these 1.5 s clips: skipped on both sides
    clips = noise_clips(5, seconds=1.5, events_s=events)
    ev = evaluate_all(clips, models=models(synth=synth))
    s = ev.summary
    pairs = [kl_per_clip(synth.windows(c.audio, 16000, events[:2])["logits"],
                         synth.windows(c.reference, 16000, events[:2])["logits"], probs=p)
             for c in clips for p in ("softmax", "sigmoid")]
    soft, sig = np.concatenate(pairs[0::2]), np.concatenate(pairs[1::2])
    assert s["kl_synth"].value == pytest.approx(soft.mean(), rel=1e-9) and s["kl_synth"].extra["n"] == 10
    assert s["kl_synth_sigmoid"].value == pytest.approx(sig.mean(), rel=1e-9)
    assert ev.per_clip[0]["synth_events"] == 2 and len(ev.per_clip[0]["synth_classes"]) == 2
    assert ev.per_clip[0]["kl_synth"] == pytest.approx(soft[:2].mean(), rel=1e-9)
    assert "n = 10" in s["is_synth"].reason and "event windows" in s["is_synth"].reason
    assert "n = 10" in s["fd_synth"].reason and "D = 64" in s["fd_synth"].reason
    assert "n = 15" in s["fad_synth"].reason and "0.5 s frames" in s["fad_synth"].reason  # 3 frames per clip
    no_events = evaluate_all(noise_clips(2, seconds=1.0), models=models(synth=synth)).summary
    assert all(no_events[k].reason == NO_EVENTS for k in ("kl_synth", "kl_synth_sigmoid", "is_synth", "fd_synth"))
