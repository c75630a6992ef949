"""Plots: the trend of a series of evaluations (one per checkpoint, oldest first, one panel per metric) and
loss curves of training stages."""

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
TREND_METRICS = ("onset_f1", "event_class_accuracy", "av_align", "fd_synth", "fad_synth", "kl_synth", "is_synth",
                 "fad", "is", "fd", "kl", "pam", "clap", "cavp")
LOWER_IS_BETTER = frozenset({"fad", "fd", "kl", "fad_synth", "fd_synth", "kl_synth"})


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
