"""Bootstrap intervals over clips and paired differences (vta_core/evaluation/intervals.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vta_core.evaluation.intervals import METRICS, bootstrap, intervals, paired, point
from vta_core.synth_metrics import aggregate


def clips(n: int, *, hit: float, seed: int, av: float = 0.5) -> list[dict]:
    """``n`` per-clip score dicts: 3 true events each, found with probability ``hit``; one undefined AV-Align."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tp = int(rng.binomial(3, hit))
        correct = int(rng.binomial(3, hit))
        out.append({"tp": tp, "fn": 3 - tp, "fp": int(rng.integers(0, 3)), "class_correct": correct,
                    "class_total": 3, "av_align": None if i == 0 else float(np.clip(rng.normal(av, 0.1), 0, 1))})
    return out


def test_point_estimates_are_the_reported_aggregates():
    s = clips(20, hit=0.6, seed=1)
    agg, p = aggregate(s), point(s)
    assert p["onset_f1"] == pytest.approx(agg["onset_f1"]) and p["event_class_accuracy"] == pytest.approx(
        agg["event_class_accuracy"])
    assert p["av_align"] == pytest.approx(np.mean([c["av_align"] for c in s[1:]]))  # undefined clip left out


def test_interval_contains_the_point_and_is_deterministic():
    s = clips(30, hit=0.6, seed=2)
    ci, p = intervals(s), point(s)
    for m in METRICS:
        lo, hi = ci[m]
        assert lo < p[m] < hi, (m, lo, p[m], hi)
        assert hi - lo < 0.5
    assert intervals(s) == ci and intervals(s, seed=0) == ci  # default seed 0, reproducible
    assert intervals(s, seed=1) != ci  # another seed, other resamples
    narrow = intervals(clips(300, hit=0.6, seed=2))  # more clips: a narrower interval
    assert narrow["onset_f1"][1] - narrow["onset_f1"][0] < ci["onset_f1"][1] - ci["onset_f1"][0]


def test_identical_track_has_zero_difference_with_zero_width():
    s = clips(25, hit=0.5, seed=3)
    d = paired(s, [dict(c) for c in s])
    for m in METRICS:
        assert d[m]["diff"] == 0.0 and d[m]["lo"] == 0.0 and d[m]["hi"] == 0.0, (m, d[m])


def test_clearly_better_track_has_an_interval_above_zero():
    good, bad = clips(30, hit=0.9, seed=4, av=0.8), clips(30, hit=0.2, seed=5, av=0.3)
    d = paired(good, bad)
    for m in METRICS:
        assert d[m]["lo"] > 0 and d[m]["lo"] <= d[m]["diff"] <= d[m]["hi"], (m, d[m])
    assert d["onset_f1"]["diff"] == pytest.approx(point(good)["onset_f1"] - point(bad)["onset_f1"])
    # the other way round: the interval lies below zero
    assert paired(bad, good)["onset_f1"]["hi"] < 0


def test_paired_uses_the_same_resamples_for_both_tracks():
    """A control that is the reference minus a constant on every clip's AV-Align: with shared resample indices
    the difference is that constant in every resample (an unpaired bootstrap would scatter it)."""
    ref = clips(20, hit=0.5, seed=6)
    shifted = [{**c, "av_align": None if c["av_align"] is None else c["av_align"] - 0.1} for c in ref]
    d = paired(ref, shifted)["av_align"]
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)


def test_bootstrap_pairs_over_the_clips_both_tracks_have():
    gen = clips(12, hit=0.7, seed=7)
    mism = [None, *clips(11, hit=0.3, seed=8)]  # clip 0 has no mismatched track
    out = bootstrap({"generated": gen, "mismatched_video": mism, "ground_truth": gen})
    assert set(out["intervals"]) == {"generated", "mismatched_video", "ground_truth"}
    assert set(out["paired"]) == {"mismatched_video", "ground_truth"}  # generated − each other track
    assert out["paired"]["mismatched_video"]["onset_f1"]["n_clips"] == 11
    assert out["paired"]["mismatched_video"]["onset_f1"] == paired(gen[1:], mism[1:])["onset_f1"]
    assert out["paired"]["ground_truth"]["onset_f1"]["diff"] == 0.0
    assert out["intervals"]["mismatched_video"] == intervals(mism[1:])
    with pytest.raises(ValueError, match="same clips"):
        bootstrap({"generated": gen, "mismatched_video": mism[:5]})


def test_undefined_metrics_give_none():
    silent = [{"tp": 0, "fp": 0, "fn": 0, "class_correct": 0, "class_total": 0, "av_align": None}] * 4
    assert intervals(silent) == dict.fromkeys(METRICS)
    assert intervals([]) == dict.fromkeys(METRICS) and point([]) == dict.fromkeys(METRICS)
    assert paired([], [])["onset_f1"]["diff"] is None
