"""Plots: the headline of an evaluation (every track with its interval, and the paired differences
generated − control), the trend of a series of evaluations (one per checkpoint, oldest first, one panel per
metric) and loss curves of training stages."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# What the trend shows, in this order, when a value exists: the synthetic-truth scores, then the paper's.
TREND_METRICS = ("onset_f1", "event_class_accuracy", "av_align", "fd_synth", "fad_synth", "kl_synth",
                 "kl_synth_sigmoid", "is_synth", "fad", "is", "fd", "kl", "kl_sigmoid", "pam", "clap", "cavp")
LOWER_IS_BETTER = frozenset({"fad", "fd", "kl", "kl_sigmoid", "fad_synth", "fd_synth", "kl_synth", "kl_synth_sigmoid"})
HEADLINE_METRICS = ("onset_f1", "event_class_accuracy")  # what the headline plot shows per track


def _value(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def trend_png(rows: Sequence[Mapping[str, Any]], out: str | Path, *, label_key: str = "checkpoint",
              metrics: Sequence[str] = TREND_METRICS) -> list[str]:
    """Plot ``metrics`` over ``rows`` (x: the rows in order, labelled by ``row[label_key]``) into ``out`` (PNG).

    Metrics without any value are left out; returns the plotted ones (nothing is written when none has one).
    """
    shown = [m for m in metrics if any(_value(r, m) is not None for r in rows)]
    if not shown:
        return []
    cols = min(3, len(shown))
    n_rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 2.4 * n_rows), squeeze=False)
    labels = [str(r.get(label_key, i))[:18] for i, r in enumerate(rows)]
    for ax, name in zip(axes.flat, shown, strict=False):
        xs = [i for i, r in enumerate(rows) if _value(r, name) is not None]
        ax.plot(xs, [_value(rows[i], name) for i in xs], marker="o", lw=1.2)
        ax.set_title(f"{name} ({'lower' if name in LOWER_IS_BETTER else 'higher'} is better)", fontsize=8)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return shown


def _err(value: float | None, bounds: Sequence[float | None] | None) -> tuple[float, float, float]:
    """(value, below, above) for an error bar; NaN value when missing, zero bars when no interval."""
    if value is None:
        return math.nan, 0.0, 0.0
    if not bounds or None in bounds:
        return float(value), 0.0, 0.0
    return float(value), max(0.0, float(value) - float(bounds[0])), max(0.0, float(bounds[1]) - float(value))


def headline_png(metrics: Mapping[str, Mapping[str, Any]], out: str | Path, *, tracks: Sequence[str],
                 shown: Sequence[str] = HEADLINE_METRICS, reference: str = "generated") -> list[str]:
    """The report's headline figure (PNG, 1120 x 380 px): left, each of ``shown`` per track (bars with the
    95% interval); right, the paired difference ``reference − track`` per track with its interval and a zero
    line. Tracks missing from ``metrics`` (older reports) are left out; returns the tracks plotted."""
    present = [t for t in tracks if t in metrics]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.75), dpi=80)
    width = 0.8 / max(1, len(shown))
    x = np.arange(len(present))
    for k, name in enumerate(shown):
        vals = [_err(metrics[t].get(name), (metrics[t].get("intervals") or {}).get(name)) for t in present]
        left.bar(x + (k - (len(shown) - 1) / 2) * width, [v[0] for v in vals], width,
                 yerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]), capsize=3, label=name.replace("_", " "))
    left.set_xticks(x, [t.replace("_", " ") for t in present], rotation=20, ha="right", fontsize=8)
    left.set(ylim=(0, 1.05), title="per track (bars: 95% bootstrap interval over clips)")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    paired = metrics.get(reference, {}).get("paired") or {}
    controls = [t for t in present if t in paired]
    y = np.arange(len(controls))
    height = 0.8 / max(1, len(shown))
    for k, name in enumerate(shown):
        vals = [_err((paired[t].get(name) or {}).get("diff"), [(paired[t].get(name) or {}).get("lo"),
                                                             (paired[t].get(name) or {}).get("hi")])
                for t in controls]
        right.errorbar([v[0] for v in vals], y + (k - (len(shown) - 1) / 2) * height,
                       xerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]), fmt="o", capsize=3,
                       label=name.replace("_", " "))
    right.axvline(0, color="black", lw=1)
    right.set_yticks(y, [t.replace("_", " ") for t in controls], fontsize=8)
    right.invert_yaxis()
    right.set(title=f"paired difference {reference} − track (95% interval; > 0: {reference} better)")
    right.legend(fontsize=8)
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return present


def loss_plot(values: list[float], *, title: str) -> bytes:
    """A PNG of a loss curve (raw + moving average)."""
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(values, alpha=0.35, lw=0.8, label="step")
    k = max(1, len(values) // 50)
    if len(values) > k:
        ax.plot(np.arange(k - 1, len(values)), np.convolve(values, np.ones(k) / k, mode="valid"), lw=1.6,
                label=f"mean of {k}")
    ax.set(xlabel="step", ylabel="loss", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
