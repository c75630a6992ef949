"""Bootstrap 95% intervals over clips for the synthetic-world scores, and paired differences to the controls.

A resample draws ``n`` clips with replacement from the ``n`` evaluated clips (``numpy.random.default_rng(seed)``,
``resamples`` times) and recomputes each statistic the way the point estimate is computed:

* ``onset_f1``: micro F1 of the pooled tp / fp / fn of the resampled clips, ``2 tp / (2 tp + fp + fn)``;
* ``event_class_accuracy``: pooled ``class_correct / class_total``;
* ``av_align``: the mean over the resampled clips where AV-Align is defined.

The interval is the 2.5th and 97.5th percentile of the resampled statistic (resamples where it is undefined,
e.g. no event drawn, are left out). A paired difference ``reference − control`` uses the *same* resampled
clip indices for both tracks, over the clips both tracks have, so a control identical to the reference has
difference 0 with a zero-width interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METRICS = ("onset_f1", "event_class_accuracy", "av_align")
RESAMPLES = 2000
LEVEL = 0.95


def _columns(scores: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-clip counts as (n,) float arrays; av_align NaN where undefined."""
    col = {k: np.array([float(s[k]) for s in scores], dtype=np.float64)
           for k in ("tp", "fp", "fn", "class_correct", "class_total")}
    col["av_align"] = np.array([np.nan if s.get("av_align") is None else float(s["av_align"]) for s in scores],
                               dtype=np.float64)
    return col


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0."""
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def statistics(scores: Sequence[Mapping[str, Any]], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of :data:`METRICS` over the clip index rows ``idx`` (R, n) -> (R,) (NaN = undefined)."""
    c = _columns(scores)
    tp, fp, fn = (c[k][idx].sum(axis=1) for k in ("tp", "fp", "fn"))
    av = c["av_align"][idx]  # (R, n)
    defined = ~np.isnan(av)
    return {"onset_f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "event_class_accuracy": _ratio(c["class_correct"][idx].sum(axis=1), c["class_total"][idx].sum(axis=1)),
            "av_align": _ratio(np.where(defined, av, 0.0).sum(axis=1), defined.sum(axis=1).astype(np.float64))}


def point(scores: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """The metrics over all clips once (the point estimates the intervals belong to); None = undefined."""
    if not scores:
        return dict.fromkeys(METRICS)
    stats = statistics(scores, np.arange(len(scores))[None])
    return {m: None if np.isnan(v[0]) else float(v[0]) for m, v in stats.items()}


def resample_indices(n: int, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) clip indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_bounds(values: np.ndarray, level: float) -> list[float] | None:
    """The central ``level`` interval (percentiles) of the defined (non-NaN) values; None when none is."""
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return [float(lo), float(hi)]


def intervals(scores: Sequence[Mapping[str, Any]], *, resamples: int = RESAMPLES, seed: int = 0,
              level: float = LEVEL) -> dict[str, list[float] | None]:
    """``{metric: [lo, hi]}`` of one track's per-clip scores (None when undefined or there are no clips)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not scores:
        return dict.fromkeys(METRICS)
    stats = statistics(scores, resample_indices(len(scores), resamples=resamples, seed=seed))
    return {m: percentile_bounds(v, level) for m, v in stats.items()}


def paired(reference: Sequence[Mapping[str, Any]], control: Sequence[Mapping[str, Any]], *,
           resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, float | None]]:
    """``{metric: {"diff", "lo", "hi", "n_clips"}}``: reference − control on the same clips (the two lists are
    aligned: entry i of both is clip i), the interval from the same resampled indices for both."""
    if len(reference) != len(control):
        raise ValueError(f"paired scores need the same clips: {len(reference)} vs {len(control)}")
    out: dict[str, dict[str, float | None]] = {}
    if not reference:
        return {m: {"diff": None, "lo": None, "hi": None, "n_clips": 0} for m in METRICS}
    whole = np.arange(len(reference))[None]
    idx = resample_indices(len(reference), resamples=resamples, seed=seed)
    full_r, full_c = statistics(reference, whole), statistics(control, whole)
    boot_r, boot_c = statistics(reference, idx), statistics(control, idx)
    for m in METRICS:
        d = float(full_r[m][0] - full_c[m][0])
        bounds = percentile_bounds(boot_r[m] - boot_c[m], level)
        out[m] = {"diff": None if np.isnan(d) else d, "lo": None if bounds is None else bounds[0],
                  "hi": None if bounds is None else bounds[1], "n_clips": len(reference)}
    return out


def bootstrap(scores_by_track: Mapping[str, Sequence[Mapping[str, Any] | None]], *, reference: str = "generated",
              resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """Per-track intervals and the paired differences ``reference − track`` for every other track.

    ``scores_by_track``: track -> per-clip score dicts aligned over the same clips (entry i is clip i in
    every track; None where a track has no audio for that clip, e.g. a mismatched_video clip without a
    partner). Returns ``{"intervals": {track: {metric: [lo, hi] | None}}, "paired": {track: {metric:
    {"diff", "lo", "hi", "n_clips"}}}}``.
    """
    lengths = {t: len(s) for t, s in scores_by_track.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"tracks must list the same clips, got lengths {lengths}")
    out: dict[str, Any] = {"intervals": {}, "paired": {}}
    for track, scores in scores_by_track.items():
        out["intervals"][track] = intervals([s for s in scores if s is not None], resamples=resamples, seed=seed,
                                            level=level)
    ref = scores_by_track[reference]
    for track, scores in scores_by_track.items():
        if track == reference:
            continue
        both = [(r, c) for r, c in zip(ref, scores, strict=True) if r is not None and c is not None]
        out["paired"][track] = paired([r for r, _ in both], [c for _, c in both], resamples=resamples, seed=seed,
                                      level=level)
    return out
