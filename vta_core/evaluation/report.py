"""report: ``report.json`` (DESIGN.md contract) and a self-contained ``report.html`` for an evaluation.

``report.json``: ``{"metrics": {"generated", "ground_truth", "shuffled_video"}, "targets", "unavailable",
"timings_s", "checkpoint", "config", "clips"}``; every metrics block has ``av_align``, ``onset_f1`` and
``event_class_accuracy``, and the paper metrics (fad, is, fd, kl, pam, clap, cavp) and their synthetic-world
analogues (``*_synth``) as numbers or null with their reason in ``unavailable``. ``report.html`` (next to it, relative links only): the metric table, the
targets of issue #5, the trend over checkpoints (``trend.png``) when a history is given, and per clip a
spectrogram figure (ground truth / generated / shuffled, true onsets marked), audio players and the muxed
video players. The folder is self-contained: every file the page uses lies in it.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from pathlib import Path
from typing import Any

import librosa
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from vta_core.evaluation.scoring import METRIC_COLUMNS, VARIANTS  # noqa: E402

ROWS = ("onset_f1", "onset_precision", "onset_recall", "event_class_accuracy", "av_align")


def targets(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Issue #5's bars on the generated block: value, bar and pass/fail (None when a value is missing)."""
    gen, gt, sh = (metrics[v] for v in ("generated", "ground_truth", "shuffled_video"))

    def bar(value: float | None, need: float) -> dict[str, Any]:
        return {"value": value, "need": need, "pass": None if value is None else bool(value >= need)}

    ratio = gen["av_align"] / gt["av_align"] if gen["av_align"] is not None and gt["av_align"] else None
    margin = gen["onset_f1"] - sh["onset_f1"] if None not in (gen["onset_f1"], sh["onset_f1"]) else None
    return {"onset_f1": bar(gen["onset_f1"], 0.6), "event_class_accuracy": bar(gen["event_class_accuracy"], 0.7),
            "av_align_vs_ground_truth": bar(ratio, 0.6), "onset_f1_over_shuffled": bar(margin, 0.2)}


def spectrogram_png(wavs: dict[str, Path], out: Path, *, onsets_s: list[float], title: str) -> None:
    """One row per track: log-mel spectrogram (64 mels up to 8 kHz) with the true onsets as dashed lines."""
    fig, axes = plt.subplots(len(wavs), 1, figsize=(7, 1.7 * len(wavs)), sharex=True, squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], wavs.items(), strict=True):
        y, sr = sf.read(wav, dtype="float32")
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256, n_mels=64, fmax=8000)  # (64, T)
        db = librosa.power_to_db(mel, ref=1.0, top_db=None)
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=max(float(db.max()), -60),
                  extent=(0, len(y) / sr, 0, 64))
        for t in onsets_s:
            ax.axvline(t, color="cyan", ls="--", lw=0.8)
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
        ax.set_yticks([])
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("time (s); dashed: true onsets")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _html(report: dict[str, Any]) -> str:
    m = report["metrics"]
    head = "".join(f"<th>{v.replace('_', ' ')}</th>" for v in VARIANTS)
    body = "".join(f"<tr><td>{k}</td>{''.join(f'<td>{_fmt(m[v].get(k))}</td>' for v in VARIANTS)}</tr>" for k in ROWS)
    body += "".join(f"<tr><td>{k}</td>{''.join(f'<td>{_fmt(m[v].get(k))}</td>' for v in VARIANTS)}</tr>"
                    for k in METRIC_COLUMNS if k not in report["unavailable"])
    body += "".join(f"<tr><td>{k}</td><td colspan={len(VARIANTS)}>null: {html.escape(r)}</td></tr>"
                    for k, r in report["unavailable"].items())
    tgt = "".join(f"<tr><td>{k}</td><td>{_fmt(t['value'])}</td><td>&ge; {t['need']}</td>"
                  f"<td>{'n/a' if t['pass'] is None else ('pass' if t['pass'] else 'FAIL')}</td></tr>"
                  for k, t in report["targets"].items())
    clips = []
    for c in report["clips"]:
        f = {k: html.escape(v) for k, v in c["files"].items()}
        sc = c["scores"]
        line = " · ".join(f"{v.replace('_', ' ')}: onsets {sc[v]['tp']}/{sc[v]['tp'] + sc[v]['fn']} "
                          f"(+{sc[v]['fp']}), classes {sc[v]['class_correct']}/{sc[v]['class_total']}, "
                          f"AV-Align {_fmt(sc[v]['av_align'])}" for v in VARIANTS)
        truth = ", ".join(f"{t:.2f} s {cl}" for t, cl in zip(sc["ground_truth"]["true_onsets_s"],
                                                              sc["ground_truth"]["true_classes"], strict=True))
        clips.append(
            f"<section><h3>{html.escape(c['clip_id'])}</h3><p>events: {html.escape(truth)}</p><p>{line}</p>"
            f"<img src='{f['spectrogram_png']}' alt='spectrograms'><div class=row>"
            f"<figure><figcaption>ground truth</figcaption><video controls width=256 src='{f['ground_truth_mp4']}'>"
            f"</video><audio controls src='{f['ground_truth_wav']}'></audio></figure>"
            f"<figure><figcaption>generated</figcaption><video controls width=256 src='{f['generated_mp4']}'>"
            f"</video><audio controls src='{f['generated_wav']}'></audio></figure>"
            f"<figure><figcaption>shuffled frames</figcaption>"
            f"<audio controls src='{f['shuffled_video_wav']}'></audio></figure>"
            f"<figure><figcaption>VAE + vocoder reconstruction</figcaption>"
            f"<audio controls src='{f['reconstruction_wav']}'></audio></figure></div></section>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vta report</title>"
        "<link rel='icon' href='data:,'><style>"
        "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}.row{display:flex;gap:1em}</style></head><body>"
        f"<h1>vta evaluation</h1><p>checkpoint: <code>{html.escape(report['checkpoint'])}</code></p>"
        f"<h2>metrics</h2><table><tr><th>metric</th>{head}</tr>{body}</table>"
        f"<h2>targets (issue #5)</h2><table><tr><th>target</th><th>value</th><th>bar</th><th></th></tr>{tgt}</table>"
        + (f"<h2>trend over checkpoints</h2><img src='{html.escape(report['trend_png'])}' alt='trend'>"
           if report.get("trend_png") else "")
        + f"<h2>timings (s)</h2><pre>{html.escape(json.dumps(report['timings_s'], indent=1))}</pre>"
        f"<h2>clips</h2>{''.join(clips)}</body></html>\n")


def write_report(*, out_dir: str | Path, evaluation: dict[str, Any], timings_s: dict[str, float],
                 config: dict[str, Any], trend_png: str | Path | None = None) -> Path:
    """Write ``out_dir/report.json``, ``report.html`` and per-clip ``spectrogram.png`` for an
    :func:`vta_core.evaluation.scoring.evaluate_synthetic` result whose files lie in ``out_dir``; returns the JSON path.
    ``trend_png`` (:func:`vta_core.evaluation.plots.trend_png`) is copied in as ``trend.png`` and shown."""
    out = Path(out_dir)
    if trend_png is not None:
        if not Path(trend_png).is_file():
            raise FileNotFoundError(f"trend plot not found: {trend_png}")
        if Path(trend_png).resolve() != (out / "trend.png").resolve():
            shutil.copyfile(trend_png, out / "trend.png")
    clips = []
    for c in evaluation["clips"]:
        png = Path("clips") / c["clip_id"] / "spectrogram.png"
        wavs = {v: out / c["files"][f"{v}_wav"] for v in ("ground_truth", "generated", "shuffled_video")}
        for path in (*wavs.values(), *(out / c["files"][k] for k in ("generated_mp4", "ground_truth_mp4"))):
            if not path.is_file():
                raise FileNotFoundError(f"report input missing: {path}")
        spectrogram_png(wavs, out / png, onsets_s=c["scores"]["ground_truth"]["true_onsets_s"], title=c["clip_id"])
        clips.append({**c, "files": {**c["files"], "spectrogram_png": str(png)}})
    report = {
        "metrics": evaluation["metrics"],
        "targets": targets(evaluation["metrics"]),
        "unavailable": dict(evaluation["unavailable"]),
        "timings_s": {**evaluation["timings_s"], **timings_s},
        "checkpoint": evaluation["checkpoint"],
        "config": {**config, "evaluation": evaluation["settings"]},
        "per_clip_parquet": str(Path(evaluation["per_clip_parquet"]).relative_to(out)),
        "clips": clips,
        "trend_png": "trend.png" if trend_png is not None else None,
    }
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    (out / "report.html").write_text(_html(report))
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
