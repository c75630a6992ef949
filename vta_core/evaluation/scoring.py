"""evaluate: a checkpoint on the held-out clips of a ``vta synth`` folder, against its ground-truth events.

For each clip of ``split`` (labels.csv), three audio tracks over the checkpoint's window
(``min(clip, geometry.duration_s)`` seconds from t = 0) are scored the same way:

* ``generated``: the model's audio for the clip's frames;
* ``ground_truth``: the clip's own audio track (the upper bound);
* ``shuffled_video``: the same model, noise seed and settings fed the clip's frames permuted in time
  (a seeded permutation per clip): what the model makes without the video's timing (the lower bound);
* ``reconstruction``: the ground truth through the checkpoint's log-mel → VAE (posterior mean) → vocoder,
  no diffusion: the best any model with this VAE and vocoder can score.

Per track and clip: onset tp / fp / fn (±0.1 s), event-class correct / total (``vta_core.synth_metrics``)
and AV-Align of the track against the clip's video (``vta_core.av_align``). Blocks aggregate them:
micro-averaged onset F1 and class accuracy, mean AV-Align over clips where it is defined.

Outputs in ``out_dir``: ``per_clip.parquet`` (one row per clip and track) and ``clips/<clip_id>/``
holding ``generated.wav``, ``generated.mp4`` (the clip's video + generated audio), ``shuffled_video.wav``,
``ground_truth.wav`` and ``ground_truth.mp4`` (a copy of the input clip), which the HTML report links.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch

from vta_core.audio import log_mel
from vta_core.av_align import av_align, mean_av_align
from vta_core.labels import clip_id_for, read_labels
from vta_core.media import MediaError, read_audio
from vta_core.metrics.suite import SYNTH_COLUMNS, ClipAudio, MetricModels, evaluate_all
from vta_core.pipeline import VTAPipeline, mux, video_frames
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from vta_core.synth_metrics import EventClassifier, aggregate, clip_scores, read_events

VARIANTS = ("generated", "ground_truth", "shuffled_video", "reconstruction")
# The paper's metrics and their synthetic-world analogues (vta_core.metrics.suite); null with a reason
# when their networks are not given or not loadable.
PAPER_METRICS = ("fad", "is", "fd", "kl", "pam", "clap", "cavp")
METRIC_COLUMNS = (*PAPER_METRICS, *SYNTH_COLUMNS)
GEN_BATCH = 16  # clips generated together (one sampler run, batch 2 × 16 with guidance)
_SCALARS = ("tp", "fp", "fn", "onset_precision", "onset_recall", "onset_f1", "class_correct", "class_total",
            "event_class_accuracy")


def synth_clips(synth_dir: str | Path, *, split: str) -> list[tuple[str, Path]]:
    """``(clip_id, video path)`` of the clips of ``split`` in a ``vta synth`` folder, sorted by id."""
    folder = Path(synth_dir)
    for need in ("videos", "labels.csv", "events.parquet"):
        if not (folder / need).exists():
            raise FileNotFoundError(f"not a vta synth folder (no {need}): {folder}")
    labels = read_labels(folder / "labels.csv")
    for cid in labels:  # ids become paths (videos/{id}.mp4, clips/{id}/): nothing may escape the folder
        if clip_id_for(cid) != cid:
            raise ValueError(f"{folder / 'labels.csv'}: clip id {cid!r} is not a safe file name "
                             f"(letters, digits, '_' and '-' only)")
    clips = [(cid, folder / "videos" / f"{cid}.mp4") for cid, lab in sorted(labels.items()) if lab.split == split]
    if not clips:
        raise ValueError(f"no clips of split {split!r} in {folder / 'labels.csv'}")
    for cid, path in clips:
        if not path.is_file():
            raise FileNotFoundError(f"video of clip {cid} not found: {path}")
    return clips


def shuffled_frames(frames: np.ndarray, *, seed: int) -> np.ndarray:
    """``frames`` (T, ...) permuted along time with a seeded permutation (never the identity when T > 1)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(frames))
    while len(frames) > 1 and np.array_equal(perm, np.arange(len(frames))):
        perm = rng.permutation(len(frames))
    return frames[perm]


@torch.no_grad()
def reconstruct(pipe: VTAPipeline, wave: np.ndarray) -> np.ndarray:
    """Audio (N,) at the vocoder rate -> log-mel -> VAE posterior mean -> decoded log-mel -> vocoder -> (N,)."""
    g, vae = pipe.geometry, pipe.vae
    device = next(vae.parameters()).device
    unit = g.hop_length * vae.downsample * g.latent_multiple  # whole latent frames of the VAE's multiple
    padded = np.pad(wave, (0, -len(wave) % unit + g.n_fft))  # + n_fft: log_mel drops the last partial frame
    mel = log_mel(torch.from_numpy(padded.astype(np.float32)).to(device), g)
    mel = mel[: mel.shape[0] // (vae.downsample * g.latent_multiple) * vae.downsample * g.latent_multiple]
    mean, _ = vae.encode(mel[None])
    out = pipe.vocoder(vae.decode(mean).float()).float()[0].cpu().numpy()
    return np.pad(out, (0, max(0, len(wave) - len(out))))[: len(wave)]


@dataclass
class SyntheticEvaluation:
    """What :func:`evaluate_synthetic` returns; its clip files lie in the folder of ``per_clip_parquet``.

    ``metrics``: per track (:data:`VARIANTS`) a block with ``av_align``, ``onset_f1``,
    ``event_class_accuracy`` (+ precision, recall, counts) and :data:`METRIC_COLUMNS`, each a number or
    None with its reason in ``unavailable`` (the generated block's reasons). ``clips``: per evaluated clip
    ``{"clip_id", "seconds", "files": {name: path relative to the folder}, "scores": {track: ...}}``;
    ``failed``: ``{clip_id: "ErrorType: message"}`` of the clips left out. ``metric_details``: per track and
    metric, the suite's result (value, reason, counts).
    """

    metrics: dict[str, dict[str, Any]]
    unavailable: dict[str, str]
    clips: list[dict[str, Any]]
    per_clip_parquet: str
    timings_s: dict[str, float]
    settings: dict[str, Any]  # sampler, steps, guidance, seed, split, vocoder, sample_rate, window_s
    checkpoint: str  # the checkpoint folder
    failed: dict[str, str] = field(default_factory=dict)
    metric_details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_synthetic(
    *,
    checkpoint: str | Path,
    synth_dir: str | Path,
    out_dir: str | Path,
    split: str = "test",
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    max_clips: int | None = None,
    device: str = "cpu",
    metric_weights: dict[str, str | None] | None = None,
    echo: Callable[[str], None] = print,
) -> SyntheticEvaluation:
    """Score generated, ground-truth, shuffled-video and reconstructed audio on the ``split`` clips of
    ``synth_dir``, writing the clip files and ``per_clip.parquet`` to ``out_dir``.

    The paper metrics (:data:`METRIC_COLUMNS`) come from ``vta_core.metrics.evaluate_all`` with the
    networks of ``metric_weights`` (keys ``panns``, ``vggish``, ``clap``, ``synth_classifier``); FAD, FD
    and KL compare a track with the ground truth, so they are None for the ground-truth block itself.
    """
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    clips = synth_clips(synth_dir, split=split)[:max_clips]
    events = read_events(Path(synth_dir) / "events.parquet")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipe = VTAPipeline.from_checkpoint(checkpoint, device=device)
    sr = pipe.sample_rate
    clf = EventClassifier.fit_templates(sample_rate=sr)  # fixed templates: the metric ignores `seed`
    timings = {"load_s": time.perf_counter() - t0, "generate_s": 0.0, "score_s": 0.0}
    settings = {"steps": steps, "sampler": sampler, "guidance": guidance, "seed": seed, "split": split,
                "vocoder": pipe.vocoder.name, "sample_rate": sr, "window_s": pipe.geometry.duration_s}
    rows: list[dict[str, Any]] = []
    per_clip: list[dict[str, Any]] = []
    labels = read_labels(Path(synth_dir) / "labels.csv")
    metric_clips: dict[str, list[ClipAudio]] = {v: [] for v in VARIANTS}
    kw = dict(steps=steps, sampler=sampler, guidance=guidance)
    generated: dict[str, np.ndarray] = {}
    shuffled: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}  # clip_id -> "ErrorType: message" (the clip is left out; the rest go on)
    for i, (clip_id, video) in enumerate(clips):
        t = time.perf_counter()
        if clip_id not in generated and clip_id not in failed:  # the next GEN_BATCH clips in one sampler run
            chunk = [(c, v) for c, v in clips[i : i + GEN_BATCH] if c not in failed]
            decoded = {}
            for c, v in chunk:
                try:
                    decoded[c] = video_frames(v, geometry=pipe.geometry, duration_s=pipe.geometry.duration_s)
                except MediaError as e:
                    failed[c] = f"{e.error_type}: {e}"
                    echo(f"{c}: FAILED {e}")
            ids = list(decoded)
            frames_, seconds_ = [decoded[c][0] for c in ids], [decoded[c][1] for c in ids]
            if ids:  # clip i of the whole split gets noise seed + i; shuffled frames get the same noise
                order = {c: k for k, (c, _) in enumerate(clips)}
                base = seed + order[ids[0]]
                generated.update(zip(ids, pipe(frames_, seconds_, seed=base, **kw), strict=True))
                mixed = [shuffled_frames(f, seed=seed * 100_003 + order[c]) for c, f in zip(ids, frames_, strict=True)]
                shuffled.update(zip(ids, pipe(mixed, seconds_, seed=base, **kw), strict=True))
            lengths = {c: decoded[c][1] for c in ids}
        if clip_id in failed:
            continue
        seconds = lengths[clip_id]
        try:
            truth = read_audio(video, sample_rate=sr, duration_s=seconds)
        except MediaError as e:
            failed[clip_id] = f"{e.error_type}: {e}"
            echo(f"{clip_id}: FAILED {e}")
            generated.pop(clip_id), shuffled.pop(clip_id)
            continue
        audio = {"generated": generated.pop(clip_id), "shuffled_video": shuffled.pop(clip_id), "ground_truth": truth}
        audio["reconstruction"] = reconstruct(pipe, audio["ground_truth"])
        timings["generate_s"] += time.perf_counter() - t
        t = time.perf_counter()
        folder = out / "clips" / clip_id
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        scores: dict[str, dict[str, Any]] = {}
        for variant in VARIANTS:
            wav = folder / f"{variant}.wav"
            sf.write(wav, audio[variant], sr, subtype="PCM_16")
            files[f"{variant}_wav"] = str(wav.relative_to(out))
            s = clip_scores(audio[variant], sr, events.get(clip_id, []), clf=clf, window_duration_s=seconds)
            s["av_align"] = av_align(video, audio=audio[variant], audio_sr=sr, duration_s=seconds)["av_align"]
            scores[variant] = s
            rows.append({"clip_id": clip_id, "variant": variant, **{k: s[k] for k in (*_SCALARS, "av_align")},
                         "detected_onsets_s": s["detected_onsets_s"], "true_onsets_s": s["true_onsets_s"],
                         "true_classes": s["true_classes"],
                         "predicted_classes": [c or "" for c in s["predicted_classes"]]})
        for variant in VARIANTS:
            ref = None if variant == "ground_truth" else audio["ground_truth"]
            metric_clips[variant].append(ClipAudio(clip_id, audio[variant], sr, reference=ref,
                                                   label=labels[clip_id].label, video=video))
        mux(video, folder / "generated.wav", folder / "generated.mp4")
        shutil.copyfile(video, folder / "ground_truth.mp4")
        files.update(generated_mp4=str((folder / "generated.mp4").relative_to(out)),
                     ground_truth_mp4=str((folder / "ground_truth.mp4").relative_to(out)))
        timings["score_s"] += time.perf_counter() - t
        per_clip.append({"clip_id": clip_id, "seconds": seconds, "files": files, "scores": scores})
        g = scores["generated"]
        echo(f"[{i + 1}/{len(clips)}] {clip_id}: onsets {g['tp']}/{g['tp'] + g['fn']} found, {g['fp']} extra; "
             f"classes {g['class_correct']}/{g['class_total']}; AV-Align {g['av_align']}")
    if not per_clip:
        raise ValueError(f"no clip of split {split!r} could be evaluated: {failed}")
    t = time.perf_counter()
    models = MetricModels.load(**(metric_weights or {}), device=device)
    paper: dict[str, Any] = {}
    for variant in VARIANTS:
        av = {c["clip_id"]: c["scores"][variant]["av_align"] for c in per_clip}
        paper[variant] = evaluate_all(metric_clips[variant], models=models, av_align_per_clip=av, echo=echo)
        by_clip = {r["clip_id"]: r for r in paper[variant].per_clip}
        for row in rows:
            if row["variant"] == variant:
                row.update({k: by_clip.get(row["clip_id"], {}).get(k) for k in ("kl", "clap", "pam", "cavp", "kl_synth")})
    timings["metrics_s"] = time.perf_counter() - t
    table = out / "per_clip.parquet"
    pq.write_table(pa.Table.from_pylist(rows), table)
    metrics = {}
    for variant in VARIANTS:
        blocks = [c["scores"][variant] for c in per_clip]
        av = mean_av_align(blocks)
        values = paper[variant].values()
        metrics[variant] = {**aggregate(blocks), "av_align": av["av_align"], "av_align_defined": av["n_defined"],
                            **{k: values[k] for k in METRIC_COLUMNS}}
    unavailable = {k: r for k, r in paper["generated"].unavailable().items() if k in METRIC_COLUMNS}
    return SyntheticEvaluation(
        metrics=metrics, unavailable=unavailable, clips=per_clip, per_clip_parquet=str(table), timings_s=timings,
        settings=settings, checkpoint=str(pipe.checkpoint), failed=failed,
        metric_details={v: {k: r.to_dict() for k, r in paper[v].summary.items()} for v in VARIANTS})
