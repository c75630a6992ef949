"""report: ``report.json`` (docs/architecture.md#reports) and a self-contained ``report.html`` for an evaluation.

``report.json``: ``{"metrics": {"generated", "ground_truth", "shuffled_video"}, "targets", "unavailable",
"timings_s", "checkpoint", "config", "clips"}``; every metrics block has ``av_align``, ``onset_f1`` and
``event_class_accuracy``, and the paper metrics (fad, is, fd, kl, pam, clap, cavp) and their synthetic-world
analogues (``*_synth``) as numbers or null with their reason in ``unavailable``. ``report.html`` (next
to it, relative links only): the metric table, the demo learning targets (:data:`DEMO_TARGETS`), the
trend over checkpoints (``trend.png``) when a history is given, and per clip a spectrogram figure
(ground truth / generated / shuffled, true onsets marked), audio players and the muxed video players.
The folder is self-contained: every file the page uses lies in it.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import librosa
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from vta_core.evaluation.scoring import METRIC_COLUMNS, VARIANTS, SyntheticEvaluation  # noqa: E402

ROWS = ("onset_f1", "onset_precision", "onset_recall", "event_class_accuracy", "av_align")


@dataclass(frozen=True)
class Target:
    """A bar on one metric of the generated block: pass when its value (or its ratio to / margin over
    the same metric of a ``reference`` block) is >= ``need``."""

    name: str  # key under report.json "targets"
    metric: str
    need: float
    description: str
    relative: Literal["ratio", "margin"] | None = None
    reference: str | None = None  # "ground_truth" | "shuffled_video", with ``relative``

    def value(self, metrics: dict[str, dict[str, Any]]) -> float | None:
        gen = metrics["generated"][self.metric]
        if self.relative is None:
            return gen
        ref = metrics[self.reference][self.metric]
        if self.relative == "ratio":
            return gen / ref if gen is not None and ref else None
        return gen - ref if None not in (gen, ref) else None


# What the demo model should learn from the synthetic world (README "What the demo model learns").
DEMO_TARGETS: tuple[Target, ...] = (
    Target("onset_f1", "onset_f1", 0.6, "generated onsets hit the true events (within 0.1 s)"),
    Target("event_class_accuracy", "event_class_accuracy", 0.7, "generated events sound like the right class"),
    Target("av_align_vs_ground_truth", "av_align", 0.6, "AV-Align as a fraction of the ground truth's",
           relative="ratio", reference="ground_truth"),
    Target("onset_f1_over_shuffled", "onset_f1", 0.2, "onset F1 above the same model fed time-shuffled "
           "frames: the timing comes from the video", relative="margin", reference="shuffled_video"),
)


def targets(metrics: dict[str, dict[str, Any]], table: Sequence[Target] = DEMO_TARGETS) -> dict[str, dict[str, Any]]:
    """Each target's value, bar and pass/fail (None when a value is missing), by name."""
    out = {}
    for t in table:
        value = t.value(metrics)
        out[t.name] = {"value": value, "need": t.need, "pass": None if value is None else bool(value >= t.need)}
    return out


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


def format_value(v: Any, *, escape: Callable[[str], str] = str) -> str:
    """A table cell: ``n/a`` for missing values, 3 decimals for floats, else ``escape(str(v))``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else escape(str(v))


def _fmt(v: Any) -> str:
    return format_value(v, escape=html.escape)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows`` (dicts) with these columns, in order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _html(report: dict[str, Any], table: Sequence[Target]) -> str:
    m = report["metrics"]
    head = "".join(f"<th>{v.replace('_', ' ')}</th>" for v in VARIANTS)
    body = "".join(f"<tr><td>{k}</td>{''.join(f'<td>{_fmt(m[v].get(k))}</td>' for v in VARIANTS)}</tr>" for k in ROWS)
    body += "".join(f"<tr><td>{k}</td>{''.join(f'<td>{_fmt(m[v].get(k))}</td>' for v in VARIANTS)}</tr>"
                    for k in METRIC_COLUMNS if k not in report["unavailable"])
    body += "".join(f"<tr><td>{k}</td><td colspan={len(VARIANTS)}>null: {html.escape(r)}</td></tr>"
                    for k, r in report["unavailable"].items())
    about = {t.name: t.description for t in table}
    tgt = "".join(f"<tr><td>{k}</td><td>{html.escape(about.get(k, ''))}</td><td>{_fmt(t['value'])}</td>"
                  f"<td>&ge; {t['need']}</td>"
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
        "<h2>demo learning targets</h2><table><tr><th>target</th><th>what it checks</th><th>value</th><th>bar</th>"
        f"<th></th></tr>{tgt}</table>"
        + (f"<h2>trend over checkpoints</h2><img src='{html.escape(report['trend_png'])}' alt='trend'>"
           if report.get("trend_png") else "")
        + f"<h2>timings (s)</h2><pre>{html.escape(json.dumps(report['timings_s'], indent=1))}</pre>"
        f"<h2>clips</h2>{''.join(clips)}</body></html>\n")


def write_report(*, out_dir: str | Path, evaluation: SyntheticEvaluation, timings_s: dict[str, float],
                 config: dict[str, Any], trend_png: str | Path | None = None,
                 target_table: Sequence[Target] = DEMO_TARGETS) -> Path:
    """Write ``out_dir/report.json``, ``report.html`` and per-clip ``spectrogram.png`` for an
    :func:`vta_core.evaluation.scoring.evaluate_synthetic` result whose files lie in ``out_dir``; returns the JSON path.
    ``trend_png`` (:func:`vta_core.evaluation.plots.trend_png`) is copied in as ``trend.png`` and shown;
    ``target_table`` are the bars the report checks."""
    out = Path(out_dir)
    if trend_png is not None:
        if not Path(trend_png).is_file():
            raise FileNotFoundError(f"trend plot not found: {trend_png}")
        if Path(trend_png).resolve() != (out / "trend.png").resolve():
            shutil.copyfile(trend_png, out / "trend.png")
    clips = []
    for c in evaluation.clips:
        png = Path("clips") / c["clip_id"] / "spectrogram.png"
        wavs = {v: out / c["files"][f"{v}_wav"] for v in ("ground_truth", "generated", "shuffled_video")}
        for path in (*wavs.values(), *(out / c["files"][k] for k in ("generated_mp4", "ground_truth_mp4"))):
            if not path.is_file():
                raise FileNotFoundError(f"report input missing: {path}")
        spectrogram_png(wavs, out / png, onsets_s=c["scores"]["ground_truth"]["true_onsets_s"], title=c["clip_id"])
        clips.append({**c, "files": {**c["files"], "spectrogram_png": str(png)}})
    report = {
        "metrics": evaluation.metrics,
        "targets": targets(evaluation.metrics, target_table),
        "unavailable": dict(evaluation.unavailable),
        "timings_s": {**evaluation.timings_s, **timings_s},
        "checkpoint": evaluation.checkpoint,
        "config": {**config, "evaluation": evaluation.settings},
        "per_clip_parquet": str(Path(evaluation.per_clip_parquet).relative_to(out)),
        "clips": clips,
        "trend_png": "trend.png" if trend_png is not None else None,
    }
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    (out / "report.html").write_text(_html(report, target_table))
    return path


def read_report(folder: str | Path) -> tuple[SyntheticEvaluation, dict[str, Any]]:
    """The evaluation and the config that ``folder/report.json`` was written from (:func:`write_report`'s
    inverse; ``failed`` and ``metric_details`` are not in the report, so they come back empty)."""
    folder = Path(folder)
    r = json.loads((folder / "report.json").read_text())
    config = {k: v for k, v in r["config"].items() if k != "evaluation"}
    clips = [{**c, "files": {k: v for k, v in c["files"].items() if k != "spectrogram_png"}} for c in r["clips"]]
    return SyntheticEvaluation(metrics=r["metrics"], unavailable=r["unavailable"], clips=clips,
                               per_clip_parquet=str(folder / r["per_clip_parquet"]), timings_s=r["timings_s"],
                               settings=r["config"]["evaluation"], checkpoint=r["checkpoint"]), config


def copy_report(src: str | Path, out: str | Path, *, config: dict[str, Any] | None = None,
                timings_s: dict[str, float] | None = None, trend_png: str | Path | None = None) -> Path:
    """The report of the evaluation folder ``src`` (e.g. an evaluation artifact) re-rendered in ``out``:
    its clip files and ``per_clip.parquet`` copied, ``report.json`` / ``report.html`` written with
    ``config`` (None = ``src``'s own), ``timings_s`` added to ``src``'s and ``trend_png`` shown."""
    src, out = Path(src), Path(out)
    evaluation, own = read_report(src)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "clips", out / "clips", dirs_exist_ok=True)
    shutil.copyfile(src / "per_clip.parquet", out / "per_clip.parquet")
    evaluation.per_clip_parquet = str(out / "per_clip.parquet")
    return write_report(out_dir=out, evaluation=evaluation, timings_s=timings_s or {},
                        config=own if config is None else config, trend_png=trend_png)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
