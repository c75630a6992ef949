"""report: ``report.json`` (docs/architecture.md#reports) and a self-contained ``report.html`` for an evaluation.

``report.json``: ``{"metrics": {track: block}, "tracks", "controls", "targets", "unavailable",
"metric_details", "audioldm_eval_names", "timings_s", "checkpoint", "config", "clips", "headline_png",
"trend_png", "per_clip_parquet"}``. Every metrics block has ``av_align``, ``onset_f1`` and
``event_class_accuracy`` with their ``intervals`` (bootstrap 95%), the paper metrics and their
synthetic-world analogues (``*_synth``) as numbers or null with their reason in ``unavailable`` (the
generated block's) and ``metric_details`` (every track's); the generated block has ``paired``
(generated − control with its interval). ``targets``: per target its definition (``metric``, ``need``,
``op``, ``relative``, ``reference``, ``description``) and its ``value`` / ``pass``.

``report.html`` (next to it, relative links only) is written for people, in this order: the headline
(``headline.png``: onset F1 and class accuracy per track with their intervals, and the paired
differences generated − control with a zero line; the same as a short table), what each control rules
out (``scoring.CONTROLS``), the targets, every metric per track (nulls with their reason), the trend over
checkpoints when a history is given, the timings as a table, and per clip its scores, a spectrogram
figure (ground truth, generated, mismatched, shuffled, unconditional; true onsets marked) and a player for
every track (videos for generated and ground truth). Nothing is wider than the page (max 1200 px): players
sit in a responsive grid, media and images scale to their cell. Tracks missing from an older evaluation
are left out.

The targets come from configuration: ``write_report(target_table=...)``, else the config's ``"targets"``
(``{name: definition}``, :func:`parse_targets`), else :data:`DEMO_TARGETS`; :func:`copy_report` keeps the
source report's own unless given others.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib

from vta_core.librosa_import import librosa

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from vta_core.evaluation.plots import headline_png  # noqa: E402
from vta_core.evaluation.scoring import (  # noqa: E402
    CONTROLS,
    METRIC_COLUMNS,
    SALIENCY_TRACKS,
    TRACKS,
    SyntheticEvaluation,
)
from vta_core.metrics.suite import AUDIOLDM_EVAL_NAMES  # noqa: E402

ROWS = ("onset_f1", "onset_precision", "onset_recall", "event_class_accuracy", "av_align")
HEADLINE = ("onset_f1", "event_class_accuracy", "av_align")  # the headline table's columns (with intervals)
PAIRED = ("onset_f1", "event_class_accuracy")  # the headline's paired differences
SPECTROGRAM_TRACKS = ("ground_truth", "generated", "mismatched_video", "shuffled_video", "unconditional")
VIDEO_TRACKS = ("generated", "ground_truth")  # tracks with a muxed mp4 (``<track>_mp4``)
Relative = Literal["ratio", "margin", "paired_lo"]
RELATIVE_KINDS = ("ratio", "margin", "paired_lo")


@dataclass(frozen=True)
class Target:
    """A bar on one metric of the generated block: pass when its value ``op`` ``need``.

    The value is the generated block's ``metric`` (``relative`` None), its ratio to (``"ratio"``) or margin
    over (``"margin"``) the same metric of the ``reference`` track, or (``"paired_lo"``) the lower end of the
    95% interval of the paired difference generated − ``reference`` (``> 0``: generated is better than that
    control on these clips beyond resampling noise)."""

    name: str  # key under report.json "targets"
    metric: str
    need: float
    description: str
    relative: Relative | None = None
    reference: str | None = None  # a track of scoring.TRACKS, with ``relative``
    op: Literal[">=", ">"] = ">="

    def __post_init__(self) -> None:
        if self.relative is not None and self.relative not in RELATIVE_KINDS:
            raise ValueError(f"target {self.name}: relative must be one of {RELATIVE_KINDS}, got {self.relative!r}")
        if (self.relative is None) != (self.reference is None):
            raise ValueError(f"target {self.name}: give relative and reference together, got "
                             f"relative={self.relative!r}, reference={self.reference!r}")
        if self.op not in (">=", ">"):
            raise ValueError(f"target {self.name}: op must be '>=' or '>', got {self.op!r}")

    def value(self, metrics: Mapping[str, Mapping[str, Any]]) -> float | None:
        """The compared number, None when a block, metric or interval is missing."""
        gen = metrics.get("generated", {})
        if self.relative == "paired_lo":
            return ((gen.get("paired") or {}).get(self.reference) or {}).get(self.metric, {}).get("lo")
        value = gen.get(self.metric)
        if self.relative is None:
            return value
        ref = metrics.get(self.reference, {}).get(self.metric)
        if self.relative == "ratio":
            return value / ref if value is not None and ref else None
        return value - ref if None not in (value, ref) else None

    def passes(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return bool(value > self.need) if self.op == ">" else bool(value >= self.need)

    def definition(self) -> dict[str, Any]:
        """What configuration holds (everything but the name)."""
        return {k: v for k, v in asdict(self).items() if k != "name"}


def parse_targets(config: Mapping[str, Mapping[str, Any]]) -> tuple[Target, ...]:
    """Targets from configuration ``{name: {"metric", "need", "description", "relative"?, "reference"?,
    "op"?}}`` (report.json's "targets" has this shape too; ``value`` / ``pass`` there are ignored)."""
    out = []
    for name, d in config.items():
        if not isinstance(d, Mapping) or not {"metric", "need"} <= set(d):
            raise ValueError(f"target {name!r} needs at least 'metric' and 'need', got {d!r}")
        out.append(Target(name=name, metric=d["metric"], need=float(d["need"]), description=d.get("description", ""),
                          relative=d.get("relative"), reference=d.get("reference"), op=d.get("op", ">=")))
    return tuple(out)


# What the demo model should learn from the synthetic world (README "What the demo model learns"). One table:
# tune the bars here (or pass another table / put one in the config).
DEMO_TARGETS: tuple[Target, ...] = (
    Target("onset_f1", "onset_f1", 0.7, "generated onsets hit the true events (within 0.1 s)"),
    Target("event_class_accuracy", "event_class_accuracy", 0.75, "generated events sound like the right class"),
    Target("av_align_vs_ground_truth", "av_align", 0.6, "AV-Align as a fraction of the ground truth's",
           relative="ratio", reference="ground_truth"),
    Target("onset_f1_vs_mismatched_video", "onset_f1", 0.0, "onset F1 beats the same model fed another clip's "
           "video (95% lower bound of the paired difference): the timing comes from this video",
           relative="paired_lo", reference="mismatched_video", op=">"),
    Target("onset_f1_vs_shuffled_video", "onset_f1", 0.0, "onset F1 beats the same model fed its own frames "
           "rotated in time (95% lower bound of the paired difference): the timing, not just the content",
           relative="paired_lo", reference="shuffled_video", op=">"),
    Target("event_class_accuracy_vs_mismatched_video", "event_class_accuracy", 0.0, "class accuracy beats the "
           "same model fed another clip's video (95% lower bound of the paired difference): what sounds comes "
           "from this video", relative="paired_lo", reference="mismatched_video", op=">"),
)


def targets(metrics: Mapping[str, Mapping[str, Any]], table: Sequence[Target] = DEMO_TARGETS) -> dict[str, dict[str, Any]]:
    """Each target's definition, value and pass/fail (None when a value is missing), by name."""
    out = {}
    for t in table:
        value = t.value(metrics)
        out[t.name] = {**t.definition(), "value": value, "pass": t.passes(value)}
    return out


def spectrogram_png(wavs: dict[str, Path], out: Path, *, onsets_s: list[float], title: str) -> None:
    """One row per track: log-mel spectrogram (64 mels up to 8 kHz) with the true onsets as dashed lines
    (720 px wide)."""
    fig, axes = plt.subplots(len(wavs), 1, figsize=(9, 1.35 * len(wavs) + 0.6), sharex=True, squeeze=False)
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


def _with_interval(v: Any, bounds: Sequence[float | None] | None) -> str:
    """``0.731 [0.650, 0.802]`` (HTML), or the value alone without an interval."""
    if v is None or not bounds or None in bounds:
        return _fmt(v)
    return f"{_fmt(v)} <span class=ci>[{bounds[0]:.3f}, {bounds[1]:.3f}]</span>"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows`` (dicts) with these columns, in order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _label(track: str) -> str:
    return track.replace("_", " ")


CSS = (
    "*{box-sizing:border-box}"
    "body{font-family:sans-serif;max-width:1200px;margin:0 auto;padding:0 12px;line-height:1.35}"
    "img{max-width:100%;height:auto;display:block}"
    ".scroll{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.4em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;vertical-align:top}"
    "th{background:#f4f4f4;text-align:left}"
    ".ci{color:#666;font-size:.85em;white-space:nowrap}.name{color:#888;font-size:.8em}"
    ".pass{color:#070}.fail{color:#b00;font-weight:bold}"
    ".players{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.8em}"
    ".players figure{margin:0;min-width:0}"
    "audio,video{width:100%;max-width:100%;display:block}"
    "section.clip{border-top:1px solid #ddd;margin-top:1.2em}"
)


def _headline_table(report: dict[str, Any], tracks: Sequence[str]) -> str:
    m = report["metrics"]
    paired = m.get("generated", {}).get("paired") or {}
    head = "".join(f"<th>{k.replace('_', ' ')} [95%]</th>" for k in HEADLINE)
    head += "".join(f"<th>generated − track: {k.replace('_', ' ')} [95%]</th>" for k in PAIRED)
    rows = []
    for t in tracks:
        iv = m[t].get("intervals") or {}
        cells = "".join(f"<td>{_with_interval(m[t].get(k), iv.get(k))}</td>" for k in HEADLINE)
        for k in PAIRED:
            d = (paired.get(t) or {}).get(k) or {}
            cells += "<td>—</td>" if t == "generated" else f"<td>{_with_interval(d.get('diff'), [d.get('lo'), d.get('hi')])}</td>"
        rows.append(f"<tr><th>{_label(t)}</th>{cells}</tr>")
    return f"<div class=scroll><table><tr><th>track</th>{head}</tr>{''.join(rows)}</table></div>"


def _controls_table(tracks: Sequence[str]) -> str:
    rows = []
    for t in tracks:
        if t not in CONTROLS:
            continue
        what, _, rules_out = CONTROLS[t].partition(" / ")
        rows.append(f"<tr><th>{_label(t)}</th><td>{html.escape(what)}</td><td>{html.escape(rules_out)}</td></tr>")
    return ("<div class=scroll><table><tr><th>control</th><th>what differs from generated</th>"
            f"<th>what it rules out</th></tr>{''.join(rows)}</table></div>")


def _targets_table(report: dict[str, Any]) -> str:
    rows = []
    for k, t in report["targets"].items():
        verdict = "n/a" if t["pass"] is None else ("<span class=pass>pass</span>" if t["pass"] else
                                                   "<span class=fail>FAIL</span>")
        how = {None: "generated", "ratio": f"generated / {t.get('reference')}", "margin": f"generated − {t.get('reference')}",
               "paired_lo": f"95% lower bound of generated − {t.get('reference')}"}.get(t.get("relative"), "")
        op = html.escape(t.get("op", ">="))
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{html.escape(t.get('description', ''))}</td>"
                    f"<td>{html.escape(how)}: {html.escape(str(t.get('metric', '')))}</td><td>{_fmt(t['value'])}</td>"
                    f"<td>{op} {t['need']}</td><td>{verdict}</td></tr>")
    return ("<div class=scroll><table><tr><th>target</th><th>what it checks</th><th>value of</th><th>value</th>"
            f"<th>bar</th><th></th></tr>{''.join(rows)}</table></div>")


def _metrics_table(report: dict[str, Any], tracks: Sequence[str]) -> str:
    m, details, unavailable = report["metrics"], report.get("metric_details") or {}, report["unavailable"]
    head = "".join(f"<th>{_label(t)}</th>" for t in tracks)

    def cell(t: str, k: str) -> str:
        v = m[t].get(k)
        if v is None and k in METRIC_COLUMNS:
            why = ((details.get(t) or {}).get(k) or {}).get("reason")
            return f"<td title='{html.escape(why or '', quote=True)}'>null</td>"
        return f"<td>{_with_interval(v, (m[t].get('intervals') or {}).get(k))}</td>"

    def name(k: str) -> str:
        alias = AUDIOLDM_EVAL_NAMES.get(k)
        return f"{k}" + (f" <span class=name>({alias})</span>" if alias else "")

    body = "".join(f"<tr><td>{name(k)}</td>{''.join(cell(t, k) for t in tracks)}</tr>" for k in ROWS)
    body += "".join(f"<tr><td>{name(k)}</td>{''.join(cell(t, k) for t in tracks)}</tr>"
                    for k in METRIC_COLUMNS if k not in unavailable)
    body += "".join(f"<tr><td>{name(k)}</td><td colspan={len(tracks)}>null: {html.escape(r)}</td></tr>"
                    for k, r in unavailable.items())
    return f"<div class=scroll><table><tr><th>metric</th>{head}</tr>{body}</table></div>"


def _timings_table(timings: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k.removesuffix('_s').replace('_', ' '))}</td>"
                   f"<td style='text-align:right'>{v:.1f}</td></tr>" if isinstance(v, int | float) else
                   f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in timings.items())
    return f"<table class=timings><tr><th>phase</th><th>seconds</th></tr>{rows}</table>"


def _clip_html(c: dict[str, Any], tracks: Sequence[str]) -> str:
    f = {k: html.escape(v, quote=True) for k, v in c["files"].items()}
    sc = c["scores"]
    present = [t for t in tracks if t in sc]
    rows = "".join(f"<tr><th>{_label(t)}</th><td>{sc[t]['tp']}/{sc[t]['tp'] + sc[t]['fn']} (+{sc[t]['fp']})</td>"
                   f"<td>{sc[t]['class_correct']}/{sc[t]['class_total']}</td><td>{_fmt(sc[t]['av_align'])}</td></tr>"
                   for t in present)
    truth_block = sc.get("ground_truth") or next(iter(sc.values()))
    truth = ", ".join(f"{t:.2f} s {cl}" for t, cl in zip(truth_block["true_onsets_s"], truth_block["true_classes"],
                                                          strict=True))
    players = []
    for t in tracks:
        if f"{t}_wav" not in f:
            continue
        video = (f"<video controls preload=metadata src='{f[f'{t}_mp4']}'></video>"
                 if t in VIDEO_TRACKS and f"{t}_mp4" in f else "")
        players.append(f"<figure><figcaption>{_label(t)}</figcaption>{video}"
                       f"<audio controls preload=metadata src='{f[f'{t}_wav']}'></audio></figure>")
    missing = "".join(f"<p class=name>{_label(t)}: {html.escape(r)}</p>" for t, r in (c.get("missing") or {}).items())
    extra = f" · mismatched with {html.escape(c['mismatched_with'])}" if c.get("mismatched_with") else ""
    return (f"<section class=clip><h3>{html.escape(c['clip_id'])}</h3><p>events: {html.escape(truth)}{extra}</p>"
            f"<div class=scroll><table><tr><th>track</th><th>onsets found (+extra)</th><th>classes</th><th>AV-Align</th>"
            f"</tr>{rows}</table></div>{missing}"
            f"<img src='{f['spectrogram_png']}' alt='spectrograms of {html.escape(c['clip_id'])}'>"
            f"<div class=players>{''.join(players)}</div>"
            + "".join(f"<img src='{f[f'saliency_{t}_png']}' alt='saliency of {html.escape(c['clip_id'])}, {_label(t)}'>"
                      for t in SALIENCY_TRACKS if f"saliency_{t}_png" in f)
            + "</section>")


SALIENCY_KINDS = {"sounding": "sounding object", "silent": "silent decoy", "ball": "distractor ball"}


def _saliency_html(sal: Mapping[str, Any]) -> str:
    """The saliency section: per track and kind the share inside its boxes, the share by area, the lift."""
    if not sal:
        return ""
    head = ("<h2>saliency: where the model looks</h2><p>|∂ prediction / ∂ pixels| of the conditional part of "
            "the denoiser's prediction, for the clip's generated audio and for its mismatched-video audio (the "
            "same frames, another clip's sound: the one thing that changes). Share: the saliency inside the "
            "thing's boxes on the frames where it shows; by area: what a uniform map would give; lift = share "
            "/ by area (1 = no preference). Intervals: bootstrap 95% over clips.</p>")
    summary = sal.get("summary") or {}
    if not summary:
        return head + f"<p class=name>{html.escape(str(sal.get('unavailable') or 'no saliency'))}</p>"
    rows = []
    for t in sal.get("tracks") or SALIENCY_TRACKS:
        block = summary.get(t) or {}
        for kind, name in SALIENCY_KINDS.items():
            k = block.get(kind)
            if not k:
                continue
            rows.append(f"<tr><th>{_label(t)}</th><td>{name}</td>"
                        f"<td>{_with_interval(k['share'], [k['share_lo'], k['share_hi']])}</td>"
                        f"<td>{_fmt(k['area_share'])}</td><td>{_with_interval(k['lift'], [k['lift_lo'], k['lift_hi']])}</td></tr>")
    paired = []
    for t, kinds in ((summary.get("generated") or {}).get("paired") or {}).items():
        for kind, name in SALIENCY_KINDS.items():
            d = kinds.get(kind) or {}
            paired.append(f"<tr><th>generated − {_label(t)}</th><td>{name}</td>"
                          f"<td>{_with_interval(d.get('diff'), [d.get('lo'), d.get('hi')])}</td></tr>")
    return (head + "<div class=scroll><table><tr><th>track</th><th>inside</th><th>share [95%]</th><th>by area</th>"
            f"<th>lift [95%]</th></tr>{''.join(rows)}</table></div>"
            + ("<div class=scroll><table><tr><th>paired</th><th>inside</th><th>Δ lift [95%]</th></tr>"
               f"{''.join(paired)}</table></div>" if paired else ""))


def _html(report: dict[str, Any]) -> str:
    tracks = [t for t in report.get("tracks") or TRACKS if t in report["metrics"]]
    n = len(report["clips"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>vta report</title>"
        f"<link rel='icon' href='data:,'><style>{CSS}</style></head><body>"
        f"<h1>vta evaluation</h1><p>{n} clip{'s' if n != 1 else ''}; checkpoint: "
        f"<code>{html.escape(report['checkpoint'])}</code></p>"
        "<h2>headline: generated vs each control</h2>"
        f"<img src='{html.escape(report['headline_png'])}' alt='headline: scores per track and paired differences'>"
        f"{_headline_table(report, tracks)}"
        "<p>Intervals: bootstrap 95% over clips; a paired difference resamples the same clips for both tracks. "
        "A lower bound above 0 means generated beats that track on these clips beyond resampling noise.</p>"
        f"<h2>what each control rules out</h2>{_controls_table(tracks)}"
        f"<h2>targets</h2>{_targets_table(report)}"
        f"<h2>metrics per track</h2>{_metrics_table(report, tracks)}"
        + (f"<h2>trend over checkpoints</h2><img src='{html.escape(report['trend_png'])}' alt='trend'>"
           if report.get("trend_png") else "")
        + _saliency_html(report.get("saliency") or {})
        + f"<h2>timings</h2>{_timings_table(report['timings_s'])}"
        f"<h2>clips</h2>{''.join(_clip_html(c, tracks) for c in report['clips'])}</body></html>\n")


def write_report(*, out_dir: str | Path, evaluation: SyntheticEvaluation, timings_s: dict[str, float],
                 config: dict[str, Any], trend_png: str | Path | None = None,
                 target_table: Sequence[Target] | None = None) -> Path:
    """Write ``out_dir/report.json``, ``report.html``, ``headline.png`` and per-clip ``spectrogram.png`` for an
    :func:`vta_core.evaluation.scoring.evaluate_synthetic` result whose files lie in ``out_dir``; returns the
    JSON path. ``trend_png`` (:func:`vta_core.evaluation.plots.trend_png`) is copied in as ``trend.png`` and
    shown; ``target_table`` are the bars the report checks (None: the config's ``"targets"``, else
    :data:`DEMO_TARGETS`)."""
    out = Path(out_dir)
    if target_table is None:
        target_table = parse_targets(config["targets"]) if config.get("targets") else DEMO_TARGETS
    if trend_png is not None:
        if not Path(trend_png).is_file():
            raise FileNotFoundError(f"trend plot not found: {trend_png}")
        if Path(trend_png).resolve() != (out / "trend.png").resolve():
            shutil.copyfile(trend_png, out / "trend.png")
    tracks = [t for t in TRACKS if t in evaluation.metrics]
    clips = []
    for c in evaluation.clips:
        png = Path("clips") / c["clip_id"] / "spectrogram.png"
        wavs = {t: out / c["files"][f"{t}_wav"] for t in SPECTROGRAM_TRACKS if f"{t}_wav" in c["files"]}
        for rel in c["files"].values():
            if not (out / rel).is_file():
                raise FileNotFoundError(f"report input missing: {out / rel}")
        truth = (c["scores"].get("ground_truth") or next(iter(c["scores"].values())))["true_onsets_s"]
        spectrogram_png(wavs, out / png, onsets_s=truth, title=c["clip_id"])
        clips.append({**c, "files": {**c["files"], "spectrogram_png": str(png)}})
    headline_png(evaluation.metrics, out / "headline.png", tracks=tracks, shown=PAIRED)
    report = {
        "metrics": evaluation.metrics,
        "tracks": tracks,
        "controls": {t: CONTROLS[t] for t in tracks if t in CONTROLS},
        "targets": targets(evaluation.metrics, target_table),
        "unavailable": dict(evaluation.unavailable),
        "metric_details": evaluation.metric_details,
        "audioldm_eval_names": AUDIOLDM_EVAL_NAMES,
        "timings_s": {**evaluation.timings_s, **timings_s},
        "checkpoint": evaluation.checkpoint,
        "config": {**config, "evaluation": evaluation.settings},
        "per_clip_parquet": str(Path(evaluation.per_clip_parquet).relative_to(out)),
        "clips": clips,
        "headline_png": "headline.png",
        "trend_png": "trend.png" if trend_png is not None else None,
        "saliency": evaluation.saliency,
    }
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    (out / "report.html").write_text(_html(json.loads(path.read_text())))
    return path


def read_report(folder: str | Path) -> tuple[SyntheticEvaluation, dict[str, Any]]:
    """The evaluation and the config that ``folder/report.json`` was written from (:func:`write_report`'s
    inverse; ``failed`` is not in the report, so it comes back empty)."""
    folder = Path(folder)
    r = json.loads((folder / "report.json").read_text())
    config = {k: v for k, v in r["config"].items() if k != "evaluation"}
    clips = [{**c, "files": {k: v for k, v in c["files"].items() if k != "spectrogram_png"}} for c in r["clips"]]
    return SyntheticEvaluation(metrics=r["metrics"], unavailable=r["unavailable"], clips=clips,
                               per_clip_parquet=str(folder / r["per_clip_parquet"]), timings_s=r["timings_s"],
                               settings=r["config"]["evaluation"], checkpoint=r["checkpoint"],
                               metric_details=r.get("metric_details") or {},
                               saliency=r.get("saliency") or {}), config


def report_targets(folder: str | Path) -> tuple[Target, ...] | None:
    """The target table ``folder/report.json`` was checked against (None for a report without definitions)."""
    r = json.loads((Path(folder) / "report.json").read_text())
    defs = r.get("targets") or {}
    if not defs or not all(isinstance(d, Mapping) and "metric" in d for d in defs.values()):
        return None
    return parse_targets(defs)


def copy_report(src: str | Path, out: str | Path, *, config: dict[str, Any] | None = None,
                timings_s: dict[str, float] | None = None, trend_png: str | Path | None = None,
                target_table: Sequence[Target] | None = None) -> Path:
    """The report of the evaluation folder ``src`` (e.g. an evaluation artifact) re-rendered in ``out``:
    its clip files and ``per_clip.parquet`` copied, ``report.json`` / ``report.html`` written with
    ``config`` (None = ``src``'s own), ``timings_s`` added to ``src``'s, ``trend_png`` shown and
    ``target_table`` checked (None: ``config``'s ``"targets"``, else ``src``'s own targets, else
    :data:`DEMO_TARGETS` for an older report without definitions)."""
    src, out = Path(src), Path(out)
    evaluation, own = read_report(src)
    table = target_table
    if table is None and not (config or {}).get("targets"):  # no table given: the source's own
        table = report_targets(src)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "clips", out / "clips", dirs_exist_ok=True)
    shutil.copyfile(src / "per_clip.parquet", out / "per_clip.parquet")
    evaluation.per_clip_parquet = str(out / "per_clip.parquet")
    return write_report(out_dir=out, evaluation=evaluation, timings_s=timings_s or {},
                        config=own if config is None else config, trend_png=trend_png, target_table=table)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
