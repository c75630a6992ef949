"""All metrics of the paper's table for one set of clips: ``evaluate_all``.

Column order is Table 1's: FAD, IS, FD, KL (+ its sigmoid variant), PAM, CLAP, CAVP, AV-Align
(:data:`PAPER_COLUMNS`), then the synthetic-world analogues (:data:`SYNTH_COLUMNS`, from
``vta_core.metrics.synth_classifier``). Every column is a :class:`MetricResult`: a number, or None with
the reason (missing weights, no reference audio, too few samples, ...). Reference-based columns (FAD, FD,
KL and their synthetic versions) compare the evaluated audio with each clip's reference (ground truth);
they are None when no reference is given (e.g. when the set *is* the ground truth).

**Minimums** (below them the number says more about the sample size than about the audio, so the
column is None with a reason naming n):

* Fréchet distances (``fad``, ``fd``, ``fad_synth``, ``fd_synth``): more samples than embedding
  dimensions on *both* sides, n > D (``frechet.too_few_samples``). With n <= D the covariances are
  rank-deficient and the distance mostly measures which directions n points happen to span
  (FD: PANNs D = 2048 -> 2049 clips; FAD: VGGish D = 128 -> 129 frames of 0.96 s).
* IS (``is``, ``is_synth``): n >= 100, i.e. 10 splits of >= 10 samples (``inception.IS_MIN_CLIPS``);
  with ~1 sample per split the score is ~1 by construction.
* KL: at least one pair; reported with its n (``extra["n"]``).

**KL variants** as audioldm_eval names them (:data:`AUDIOLDM_EVAL_NAMES`): ``kl`` = softmax
("kullback_leibler_divergence_softmax"), ``kl_sigmoid`` = element-wise sigmoid probabilities
("kullback_leibler_divergence_sigmoid"); the same two for the synthetic classifier (``kl_synth``,
``kl_synth_sigmoid``).

**Synthetic columns at the classifier's training scale**: it was trained on 0.5 s windows starting
0.05 s before one event's onset, so ``kl_synth*``, ``is_synth`` and ``fd_synth`` use one window
``[onset - 0.05, onset + 0.45]`` s per true onset of the clip (``ClipAudio.events_s``; onsets outside
the track or its reference are skipped), cut from the track and from its reference: KL per event pair,
averaged over all pairs; IS and FD over all event windows of the set (n = windows). ``fad_synth`` is
FAD-like over frames: the consecutive 0.5 s chunks of whole clips (every stretch, events or not).

One clip that cannot be read or scored is reported in ``failed`` and left out; it never stops the set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vta_core.metrics.frechet import fd_embeddings, too_few_samples
from vta_core.metrics.inception import AUDIOLDM_EVAL_KL, IS_MIN_CLIPS, IS_SPLITS, inception_score, kl_per_clip
from vta_core.metrics.result import MetricResult

PAPER_COLUMNS = ("fad", "is", "fd", "kl", "kl_sigmoid", "pam", "clap", "cavp", "av_align")
SYNTH_COLUMNS = ("fad_synth", "is_synth", "fd_synth", "kl_synth", "kl_synth_sigmoid")
# per-clip values evaluate_all puts in Evaluation.per_clip (besides clip_id and synth_classes)
PER_CLIP_METRICS = ("kl", "kl_sigmoid", "clap", "pam", "cavp", "av_align", "kl_synth", "kl_synth_sigmoid",
                    "synth_events")
# our column -> audioldm_eval's result key (the synthetic columns mirror them with another classifier)
AUDIOLDM_EVAL_NAMES = {"fad": "frechet_audio_distance", "fd": "frechet_distance", "is": "inception_score_mean",
                       "kl": AUDIOLDM_EVAL_KL["softmax"], "kl_sigmoid": AUDIOLDM_EVAL_KL["sigmoid"]}
NO_REFERENCE = "no reference audio for this set (FAD, FD and KL compare with the ground truth)"
NO_EVENTS = ("no clip has true event onsets (ClipAudio.events_s): the synthetic classifier is applied to "
             "one 0.5 s window per event, the scale it was trained on")

Audio = np.ndarray | str | Path


@dataclass(frozen=True)
class ClipAudio:
    """One clip: the audio to score (array at ``sample_rate``, or a file), its reference, label, video and
    the true event onsets (seconds from the start of the audio; the synthetic classifier's windows)."""

    clip_id: str
    audio: Audio
    sample_rate: int | None = None
    reference: Audio | None = None
    reference_sample_rate: int | None = None
    label: str | None = None
    video: str | Path | None = None
    events_s: tuple[float, ...] = ()


@dataclass
class MetricModels:
    """Loaded metric networks, each ``(model, None)`` or ``(None, reason)``; load once, score many sets."""

    panns: tuple[Any, str | None]
    vggish: tuple[Any, str | None]
    clap: tuple[Any, str | None]
    pam: tuple[Any, str | None]
    cavp: tuple[Any, str | None]
    synth: tuple[Any, str | None]
    sources: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, *, panns: str | Path | None = None, vggish: str | Path | None = None,
             clap: str | Path | None = None, synth_classifier: str | Path | None = None,
             pam_model: Any = None, cavp_model: Any = None, device: str = "cpu") -> MetricModels:
        from vta_core.metrics.cavp import load_cavp
        from vta_core.metrics.clap_score import load_clap_score
        from vta_core.metrics.fad import load_vggish
        from vta_core.metrics.pam import load_pam
        from vta_core.metrics.panns import load_panns
        from vta_core.metrics.synth_classifier import load_synth_classifier

        return cls(panns=load_panns(panns, device=device), vggish=load_vggish(vggish, device=device),
                   clap=load_clap_score(clap, device=device), pam=load_pam(pam_model), cavp=load_cavp(cavp_model),
                   synth=load_synth_classifier(synth_classifier),
                   sources={"panns": _s(panns), "vggish": _s(vggish), "clap": _s(clap),
                            "synth_classifier": _s(synth_classifier)})

    def reasons(self) -> dict[str, str]:
        """Why each unavailable network is unavailable."""
        return {k: getattr(self, k)[1] for k in ("panns", "vggish", "clap", "pam", "cavp", "synth")
                if getattr(self, k)[0] is None}


def _s(v: str | Path | None) -> str | None:
    return None if v is None else str(v)


@dataclass
class Evaluation:
    summary: dict[str, MetricResult]  # PAPER_COLUMNS + SYNTH_COLUMNS, in that order
    per_clip: list[dict[str, Any]]  # clip_id + PER_CLIP_METRICS present + synth_classes (one per event)
    failed: dict[str, str]  # clip_id -> one-line error

    def values(self) -> dict[str, float | None]:
        return {k: r.value for k, r in self.summary.items()}

    def unavailable(self) -> dict[str, str]:
        return {k: r.reason for k, r in self.summary.items() if r.value is None}


def load_audio(audio: Audio, sample_rate: int | None, *, what: str) -> tuple[np.ndarray, int]:
    """Mono float32 (N,) and its rate from an array (needs ``sample_rate``) or an audio file."""
    if isinstance(audio, str | Path):
        import soundfile as sf

        try:
            y, sr = sf.read(str(audio), dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - libsndfile errors: one line naming the file
            raise ValueError(f"cannot read {what} {audio}: {str(e).splitlines()[0]}") from None
        y = y.mean(axis=1)
    else:
        if sample_rate is None:
            raise ValueError(f"{what}: an array needs its sample_rate")
        y, sr = np.asarray(audio, dtype=np.float32), int(sample_rate)
        if y.ndim == 2:
            y = y.mean(axis=0)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"{what} must be non-empty mono audio, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{what} holds non-finite samples")
    return y, int(sr)


def _mean(values: Sequence[float | None], name: str, why_none: str) -> MetricResult:
    got = [v for v in values if v is not None]
    if not got:
        return MetricResult.unavailable(name, why_none)
    return MetricResult(name, float(np.mean(got)), extra={"n": len(got), "std": float(np.std(got))})


def _kl_pair(gen: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL softmax and sigmoid per paired row of (E, C) logits: two (E,) arrays (empty for E = 0)."""
    if len(gen) == 0:
        return np.zeros(0), np.zeros(0)
    return kl_per_clip(gen, ref, probs="softmax"), kl_per_clip(gen, ref, probs="sigmoid")


def _onsets(clip: ClipAudio, *durations: float) -> tuple[float, ...]:
    """The clip's true onsets that lie inside every given duration (so both sides have the same windows)."""
    end = min(durations)
    return tuple(float(t) for t in clip.events_s if 0.0 <= float(t) < end)


_FEATURES = ("panns_emb", "panns_logits", "panns_ref_emb", "panns_ref_logits", "vgg", "vgg_ref",
             "syn_emb", "syn_logits", "syn_ref_emb", "syn_ref_logits", "syn_frames", "syn_ref_frames",
             "syn_kl", "syn_kl_sigmoid")


def evaluate_all(clips: Sequence[ClipAudio], *, models: MetricModels,
                 av_align_per_clip: Mapping[str, float | None] | None = None,
                 echo: Callable[[str], None] | None = None) -> Evaluation:
    """Every paper (and synthetic-world) metric for ``clips``; see the module docstring."""
    from vta_core.av_align import av_align

    if not clips:
        raise ValueError("evaluate_all needs at least one clip")
    panns, vggish, clap, pam, cavp, synth = (getattr(models, k)[0] for k in
                                             ("panns", "vggish", "clap", "pam", "cavp", "synth"))
    has_ref = any(c.reference is not None for c in clips)
    # per clip: PANNs (D,) / (C,) rows; VGGish and synth frames (n, D); synth event windows (E, D) / (E, C)
    feats: dict[str, list] = {k: [] for k in _FEATURES}
    per_clip: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for clip in clips:
        try:
            y, sr = load_audio(clip.audio, clip.sample_rate, what=f"audio of {clip.clip_id}")
            ref = None
            if clip.reference is not None:
                ref = load_audio(clip.reference, clip.reference_sample_rate or clip.sample_rate,
                                 what=f"reference of {clip.clip_id}")
            row: dict[str, Any] = {"clip_id": clip.clip_id}
            cf: dict[str, Any] = {}  # this clip's features, kept only if the whole clip succeeds
            if panns is not None:  # one forward pass per clip: embedding (FD), logits (IS, KL)
                g = panns(y, sr)
                cf.update(panns_emb=g["embedding"], panns_logits=g["logits"])
                if ref is not None:
                    r = panns(*ref)
                    cf.update(panns_ref_emb=r["embedding"], panns_ref_logits=r["logits"])
                    kl, kl_sig = _kl_pair(g["logits"][None], r["logits"][None])
                    row.update(kl=float(kl[0]), kl_sigmoid=float(kl_sig[0]))
            if synth is not None:  # frames of the whole clip; one window per true event
                onsets = _onsets(clip, y.size / sr, *(() if ref is None else (ref[0].size / ref[1],)))
                g = synth.windows(y, sr, onsets)
                cf.update(syn_frames=synth.frames(y, sr), syn_emb=g["embedding"], syn_logits=g["logits"])
                row["synth_events"] = len(onsets)
                row["synth_classes"] = [synth.model.classes[int(i)] for i in np.argmax(g["logits"], axis=1)]
                if ref is not None:
                    r = synth.windows(*ref, onsets)
                    cf.update(syn_ref_frames=synth.frames(*ref), syn_ref_emb=r["embedding"], syn_ref_logits=r["logits"])
                    cf["syn_kl"], cf["syn_kl_sigmoid"] = _kl_pair(g["logits"], r["logits"])  # (E,) each
                    if onsets:  # the clip's mean over its event pairs
                        row.update(kl_synth=float(cf["syn_kl"].mean()), kl_synth_sigmoid=float(cf["syn_kl_sigmoid"].mean()))
            if vggish is not None:
                cf["vgg"] = vggish(y, sr)
                if ref is not None:
                    cf["vgg_ref"] = vggish(*ref)
            if clap is not None and clip.label:
                row["clap"] = clap(y, sr, clip.label)
            if pam is not None:
                row["pam"] = pam(y, sr)
            if cavp is not None and clip.video is not None:
                row["cavp"] = cavp(clip.video, y, sr)
            if av_align_per_clip is not None and clip.clip_id in av_align_per_clip:
                row["av_align"] = av_align_per_clip[clip.clip_id]
            elif clip.video is not None:
                row["av_align"] = av_align(clip.video, audio=y, audio_sr=sr)["av_align"]
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            failed[clip.clip_id] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if echo:
                echo(f"metrics: {clip.clip_id} failed: {failed[clip.clip_id]}")
            continue
        per_clip.append(row)
        for k, v in cf.items():
            feats[k].append(v)

    n = len(per_clip)
    reasons = models.reasons()
    out: dict[str, MetricResult] = {}
    has_events = any(r.get("synth_events") for r in per_clip)

    def unavailable(name: str, net: str, *, events: bool = False) -> MetricResult | None:
        if net in reasons:
            return MetricResult.unavailable(name, reasons[net])
        if events and not has_events:
            return MetricResult.unavailable(name, NO_EVENTS)
        return None

    def fd_col(name: str, gen: list, ref: list, net: str, unit: str, *, events: bool = False) -> MetricResult:
        if (none := unavailable(name, net, events=events)) is not None:
            return none
        if not has_ref:
            return MetricResult.unavailable(name, NO_REFERENCE)
        if not gen or not ref:
            return MetricResult.unavailable(name, "no clip scored")
        a, b = np.concatenate([np.atleast_2d(x) for x in gen]), np.concatenate([np.atleast_2d(x) for x in ref])
        why = too_few_samples(len(a), len(b), a.shape[1], unit=unit)
        if why:
            return MetricResult.unavailable(name, f"{name} {why}", n=len(a), n_reference=len(b), dim=a.shape[1])
        try:
            return MetricResult(name, fd_embeddings(a, b), extra={"n": len(a), "n_reference": len(b), "dim": a.shape[1]})
        except ValueError as e:
            return MetricResult.unavailable(name, f"{name}: {e}")

    def is_col(name: str, logits: list, net: str, unit: str, *, events: bool = False) -> MetricResult:
        if (none := unavailable(name, net, events=events)) is not None:
            return none
        if not logits:
            return MetricResult.unavailable(name, "no clip scored")
        x = np.concatenate([np.atleast_2d(v) for v in logits])  # (n, C)
        if len(x) < IS_MIN_CLIPS:
            return MetricResult.unavailable(name, f"{name} needs at least {IS_MIN_CLIPS} {unit} ({IS_SPLITS} splits "
                                                  f"of >= {IS_MIN_CLIPS // IS_SPLITS}), got n = {len(x)}", n=len(x))
        mean, std = inception_score(x)
        return MetricResult(name, mean, extra={"std": std, "n": len(x)})

    def kl_col(name: str, values: list[float], net: str, unit: str, *, events: bool = False) -> MetricResult:
        if (none := unavailable(name, net, events=events)) is not None:
            return none
        if not values:
            return MetricResult.unavailable(name, NO_REFERENCE if not has_ref else "no clip scored")
        return MetricResult(name, float(np.mean(values)), extra={"n": len(values), "unit": unit,
                                                                 "std": float(np.std(values))})

    pooled = lambda key: [float(v) for arr in feats[key] for v in arr]  # noqa: E731 - all event pairs
    out["fad"] = fd_col("fad", feats["vgg"], feats["vgg_ref"], "vggish", "VGGish frames")
    out["is"] = is_col("is", feats["panns_logits"], "panns", "clips")
    out["fd"] = fd_col("fd", feats["panns_emb"], feats["panns_ref_emb"], "panns", "clips")
    out["kl"] = kl_col("kl", [r["kl"] for r in per_clip if "kl" in r], "panns", "clip pairs")
    out["kl_sigmoid"] = kl_col("kl_sigmoid", [r["kl_sigmoid"] for r in per_clip if "kl_sigmoid" in r], "panns",
                               "clip pairs")
    out["pam"] = MetricResult.unavailable("pam", reasons["pam"]) if "pam" in reasons else _mean(
        [r.get("pam") for r in per_clip], "pam", "no clip scored")
    clap_none = reasons.get("clap") or "no clip has a label text"
    out["clap"] = MetricResult.unavailable("clap", clap_none) if "clap" in reasons else _mean(
        [r.get("clap") for r in per_clip], "clap", clap_none)
    out["cavp"] = MetricResult.unavailable("cavp", reasons["cavp"]) if "cavp" in reasons else _mean(
        [r.get("cavp") for r in per_clip], "cavp", "no clip has a video")
    out["av_align"] = _mean([r.get("av_align") for r in per_clip], "av_align",
                            "no clip has a video, or no clip had peaks on either side")
    out["fad_synth"] = fd_col("fad_synth", feats["syn_frames"], feats["syn_ref_frames"], "synth", "0.5 s frames")
    out["is_synth"] = is_col("is_synth", feats["syn_logits"], "synth", "event windows", events=True)
    out["fd_synth"] = fd_col("fd_synth", feats["syn_emb"], feats["syn_ref_emb"], "synth", "event windows", events=True)
    out["kl_synth"] = kl_col("kl_synth", pooled("syn_kl"), "synth", "event pairs", events=True)
    out["kl_synth_sigmoid"] = kl_col("kl_synth_sigmoid", pooled("syn_kl_sigmoid"), "synth", "event pairs", events=True)
    for r in out.values():  # every column says how many clips it saw
        r.extra.setdefault("n_clips", n)
    return Evaluation(summary={k: out[k] for k in (*PAPER_COLUMNS, *SYNTH_COLUMNS)}, per_clip=per_clip, failed=failed)
