"""Quality against sampler steps (few-step generation): for every (sampler, steps, guidance) point, the
generated track only — the same test clips and the same noise at every point (clip i of the split: seed + i,
as in every evaluation) — scored against the synthetic world's exact ground truth, with the seconds each
clip cost.

Per point: onset F1, event-class accuracy and AV-Align pooled over clips with bootstrap 95% intervals
(vta_core/evaluation/intervals.py, the same resampled clip indices at every point), and
``seconds_per_clip`` = wall time of the batched generation (UNet steps + VAE decode + vocoder) ÷ clips,
after one warm-up call; ``unet_calls`` = denoiser forwards per clip (steps × 2 with guidance: the
conditional and the null branch, batched as one call of twice the rows); ``log_spectral_l1_to_converged``
= mean log-spectral L1 distance of each clip's audio to the same sampler's most-steps audio of that clip
(same noise): how far a few-step sample is from the converged one, which onset F1 and class accuracy
do not see.
The controls, reconstruction, paper metrics and saliency of a full evaluation are left out: they do not
depend on the steps, and leaving them out makes a 35-point curve affordable on a CPU.

``plot_steps`` draws one line per (sampler, guidance) against steps (log scale), a panel per metric and
one for seconds per clip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vta_core.av_align import av_align
from vta_core.evaluation.intervals import METRICS, RESAMPLES, intervals, point
from vta_core.evaluation.scoring import read_clips, synth_clips
from vta_core.pipeline import VTAPipeline
from vta_core.synth_metrics import EventClassifier, clip_scores, read_events

STEP_COUNTS = (1, 2, 4, 8, 16, 25, 50)  # the curve's default steps axis


def steps_curve(*, checkpoint: str | Path, synth_dir: str | Path, points: Sequence[dict[str, Any]],
                split: str = "test", seed: int = 0, max_clips: int | None = None, device: str = "cpu",
                resamples: int = RESAMPLES, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Score the generated audio of ``checkpoint`` on ``synth_dir``'s ``split`` at every point (dicts of
    sampler, steps, guidance). Returns ``{"clips", "rows", "failed"}``: a row per point with the metrics,
    their ``*_lo`` / ``*_hi`` bounds and ``seconds_per_clip``."""
    if not points:
        raise ValueError("steps_curve needs at least one (sampler, steps, guidance) point")
    pipe = VTAPipeline.from_checkpoint(checkpoint, device=device)
    clf = EventClassifier.fit_templates(sample_rate=pipe.sample_rate)
    events = read_events(Path(synth_dir) / "events.parquet")
    ready, failed = read_clips(synth_clips(synth_dir, split=split)[:max_clips], pipe, seed=seed, echo=echo)
    if not ready:
        raise ValueError(f"no clip of split {split!r} could be read: {failed}")
    # warm-up: one-time costs (lazy initialisation, first-call allocations) stay out of every point's timing
    pipe(ready[0].frames, ready[0].seconds, steps=1, sampler=points[0]["sampler"], guidance=float(points[0]["guidance"]))
    rows, audio = [], []
    for n, p in enumerate(points, start=1):
        t = time.perf_counter()
        waves = pipe([c.frames for c in ready], [c.seconds for c in ready], seeds=[c.seed for c in ready],
                     steps=int(p["steps"]), sampler=p["sampler"], guidance=float(p["guidance"]))
        seconds = (time.perf_counter() - t) / len(ready)
        scores = []
        for c, wave in zip(ready, waves, strict=True):
            s = clip_scores(wave, pipe.sample_rate, events.get(c.clip_id, []), clf=clf, window_duration_s=c.seconds)
            s["av_align"] = av_align(c.video, audio=wave, audio_sr=pipe.sample_rate, duration_s=c.seconds)["av_align"]
            scores.append(s)
        audio.append(waves)
        values, bounds = point(scores), intervals(scores, resamples=resamples)
        row = {"sampler": p["sampler"], "steps": int(p["steps"]), "guidance": float(p["guidance"]),
               "clips": len(scores), "seconds_per_clip": seconds,
               "unet_calls": int(p["steps"]) * (1 if float(p["guidance"]) == 1.0 else 2)}
        for m in METRICS:
            lo_hi = bounds[m] or [None, None]
            row.update({m: values[m], f"{m}_lo": lo_hi[0], f"{m}_hi": lo_hi[1]})
        rows.append(row)
        echo(f"[{n}/{len(points)}] {p['sampler']} {p['steps']} steps, w={p['guidance']}: onset F1 "
             f"{_fmt(row['onset_f1'])}, class accuracy {_fmt(row['event_class_accuracy'])}, "
             f"AV-Align {_fmt(row['av_align'])}, {seconds:.3f} s/clip")
    for row, waves in zip(rows, audio, strict=True):  # distance to the sampler's own most-steps sample
        ref = max(range(len(rows)), key=lambda i: (rows[i]["sampler"] == row["sampler"]
                                                   and rows[i]["guidance"] == row["guidance"], rows[i]["steps"]))
        row["converged_steps"] = rows[ref]["steps"]
        row["log_spectral_l1_to_converged"] = float(np.mean([_log_spectral_l1(a, b) for a, b in
                                                             zip(waves, audio[ref], strict=True)]))
    return {"clips": [c.clip_id for c in ready], "rows": rows, "failed": failed}


def _log_spectral_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |log|STFT(a)| − log|STFT(b)|| (1024-point Hann, hop 256): how far one sample is from another
    drawn with the same noise — a fidelity proxy that needs no pretrained network."""
    window = torch.hann_window(1024)
    mags = [torch.stft(torch.from_numpy(np.asarray(w, np.float32)), n_fft=1024, hop_length=256, window=window,
                       return_complex=True).abs() for w in (a, b)]
    return float((torch.log(mags[0] + 1e-5) - torch.log(mags[1] + 1e-5)).abs().mean())


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def plot_steps(rows: Sequence[dict[str, Any]], png: str | Path, *, title: str = "") -> list[str]:
    """Quality against steps: a panel per metric (points with their 95% intervals) and one for seconds per
    clip, one line per (sampler, guidance); steps on a log axis. Returns the metrics drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    panels = [*drawn, *(["log_spectral_l1_to_converged"] if any("log_spectral_l1_to_converged" in r for r in rows)
                        else []), "seconds_per_clip"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    lines = sorted({(r["sampler"], float(r["guidance"])) for r in rows})
    for ax, m in zip(axes[0], panels, strict=True):
        for sampler, w in lines:
            pts = sorted((r for r in rows if (r["sampler"], float(r["guidance"])) == (sampler, w)
                          and r.get(m) is not None), key=lambda r: r["steps"])
            if not pts:
                continue
            x = [r["steps"] for r in pts]
            y = [r[m] for r in pts]
            label = sampler if len({g for _, g in lines}) == 1 else f"{sampler} w={w:g}"
            if m not in METRICS:  # no interval
                ax.plot(x, y, marker="o", label=label)
            else:
                lo = [r[m] - r[f"{m}_lo"] if r.get(f"{m}_lo") is not None else 0.0 for r in pts]
                hi = [r[f"{m}_hi"] - r[m] if r.get(f"{m}_hi") is not None else 0.0 for r in pts]
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampler steps")
        ax.set_title(m.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return drawn
