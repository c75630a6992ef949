"""All metrics of the paper's table for one set of clips: ``evaluate_all``.

Column order is Table 1's: FAD, IS, FD, KL, PAM, CLAP, CAVP, AV-Align (:data:`PAPER_COLUMNS`), then the
synthetic-world analogues (:data:`SYNTH_COLUMNS`, from ``vta_core.metrics.synth_classifier``). Every
column is a :class:`MetricResult`: a number, or None with the reason (missing weights, no reference
audio, too few clips for IS's 10 splits, ...). Reference-based columns (FAD, FD, KL and their synthetic
versions) compare the evaluated audio with each clip's reference (ground truth); they are None when no
reference is given (e.g. when the set *is* the ground truth).

One clip that cannot be read or scored is reported in ``failed`` and left out; it never stops the set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vta_core.metrics.frechet import fd_embeddings
from vta_core.metrics.inception import IS_SPLITS, inception_score, kl_per_clip
from vta_core.metrics.result import MetricResult

PAPER_COLUMNS = ("fad", "is", "fd", "kl", "pam", "clap", "cavp", "av_align")
SYNTH_COLUMNS = ("fad_synth", "is_synth", "fd_synth", "kl_synth")
NO_REFERENCE = "no reference audio for this set (FAD, FD and KL compare with the ground truth)"

Audio = np.ndarray | str | Path


@dataclass(frozen=True)
class ClipAudio:
    """One clip: the audio to score (array at ``sample_rate``, or a file), its reference, label and video."""

    clip_id: str
    audio: Audio
    sample_rate: int | None = None
    reference: Audio | None = None
    reference_sample_rate: int | None = None
    label: str | None = None
    video: str | Path | None = None


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
    per_clip: list[dict[str, Any]]  # clip_id + per-clip metrics (kl, clap, pam, cavp, av_align, kl_synth)
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


_OUTPUT_KEYS = {"emb": "embedding", "logits": "logits", "frames": "frames"}  # feature name -> network output


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
    feats: dict[str, list] = {k: [] for k in ("panns_emb", "panns_logits", "panns_ref_emb", "panns_ref_logits",
                                              "vgg", "vgg_ref", "syn_emb", "syn_logits", "syn_ref_emb",
                                              "syn_ref_logits", "syn_frames", "syn_ref_frames")}
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
            # classifier networks: embedding + logits (+ frames) of the clip and of its reference, and KL
            for net, prefix, kl_name, outputs in ((panns, "panns", "kl", ("emb", "logits")),
                                                  (synth, "syn", "kl_synth", ("emb", "logits", "frames"))):
                if net is None:
                    continue
                g = net(y, sr)
                cf.update({f"{prefix}_{k}": g[_OUTPUT_KEYS[k]] for k in outputs})
                if ref is not None:
                    r = net(*ref)
                    cf.update({f"{prefix}_ref_{k}": r[_OUTPUT_KEYS[k]] for k in outputs})
                    row[kl_name] = float(kl_per_clip(g["logits"][None], r["logits"][None])[0])
            if vggish is not None:
                cf["vgg"] = vggish(y, sr)
                if ref is not None:
                    cf["vgg_ref"] = vggish(*ref)
            if synth is not None:
                row["synth_class"] = synth.model.classes[int(np.argmax(cf["syn_logits"]))]
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

    def fd_col(name: str, gen: list, ref: list, net: str, stack: Callable[[list], np.ndarray]) -> MetricResult:
        if net in reasons:
            return MetricResult.unavailable(name, reasons[net])
        if not has_ref:
            return MetricResult.unavailable(name, NO_REFERENCE)
        try:
            a, b = stack(gen), stack(ref)
            return MetricResult(name, fd_embeddings(a, b), extra={"n": len(a), "n_reference": len(b)})
        except ValueError as e:
            return MetricResult.unavailable(name, f"{name}: {e}")

    def is_col(name: str, logits: list, net: str) -> MetricResult:
        if net in reasons:
            return MetricResult.unavailable(name, reasons[net])
        if n < IS_SPLITS:
            return MetricResult.unavailable(name, f"IS needs at least {IS_SPLITS} clips ({IS_SPLITS} splits), got {n}")
        mean, std = inception_score(np.stack(logits))
        return MetricResult(name, mean, extra={"std": std, "n": n})

    def kl_col(name: str, key: str, net: str) -> MetricResult:
        if net in reasons:
            return MetricResult.unavailable(name, reasons[net])
        return _mean([r.get(key) for r in per_clip], name, NO_REFERENCE if not has_ref else "no clip scored")

    frames = lambda lst: np.concatenate(lst) if lst else np.zeros((0, 1))  # noqa: E731
    out["fad"] = fd_col("fad", feats["vgg"], feats["vgg_ref"], "vggish", frames)
    out["is"] = is_col("is", feats["panns_logits"], "panns")
    out["fd"] = fd_col("fd", feats["panns_emb"], feats["panns_ref_emb"], "panns", np.stack)
    out["kl"] = kl_col("kl", "kl", "panns")
    out["pam"] = MetricResult.unavailable("pam", reasons["pam"]) if "pam" in reasons else _mean(
        [r.get("pam") for r in per_clip], "pam", "no clip scored")
    clap_none = reasons.get("clap") or "no clip has a label text"
    out["clap"] = MetricResult.unavailable("clap", clap_none) if "clap" in reasons else _mean(
        [r.get("clap") for r in per_clip], "clap", clap_none)
    out["cavp"] = MetricResult.unavailable("cavp", reasons["cavp"]) if "cavp" in reasons else _mean(
        [r.get("cavp") for r in per_clip], "cavp", "no clip has a video")
    out["av_align"] = _mean([r.get("av_align") for r in per_clip], "av_align",
                            "no clip has a video, or no clip had peaks on either side")
    out["fad_synth"] = fd_col("fad_synth", feats["syn_frames"], feats["syn_ref_frames"], "synth", frames)
    out["is_synth"] = is_col("is_synth", feats["syn_logits"], "synth")
    out["fd_synth"] = fd_col("fd_synth", feats["syn_emb"], feats["syn_ref_emb"], "synth", np.stack)
    out["kl_synth"] = kl_col("kl_synth", "kl_synth", "synth")
    return Evaluation(summary={k: out[k] for k in (*PAPER_COLUMNS, *SYNTH_COLUMNS)}, per_clip=per_clip, failed=failed)
