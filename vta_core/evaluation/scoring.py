"""evaluate: a checkpoint on the held-out clips of a ``vta synth`` folder, against its ground-truth events.

Every clip of ``split`` (labels.csv, sorted by id) is scored in each track of :data:`TRACKS`, over the
checkpoint's window (``min(clip, geometry.duration_s)`` seconds from t = 0), all on the same clips:

* ``generated``: the model's audio for the clip's frames;
* the controls, each what it differs in and what it rules out (:data:`CONTROLS`): ``mismatched_video``
  (another test clip's frames), ``shuffled_video`` (the clip's own frames rotated in time),
  ``unconditional`` (no video: the null condition ∅), ``reconstruction`` (the ground truth through the
  VAE and vocoder: the ceiling of any model with them) and ``ground_truth`` (the clip's own audio: the
  detectors' ceiling).

The four diffusion tracks run as ONE pipeline call each over the whole split (the pipeline batches clips of
equal frame count), and clip i of the split gets noise seed ``seed + i`` in every one of them: the tracks of
a clip differ only in their conditioning, never in their noise. ``mismatched_video`` is a derangement
within each group of clips with the same frame count (sorted ids): clip k of a group gets the frames of
clip (k + 1) mod n, whole and in order; a clip alone in its group has no mismatched track (a reason in
``missing``).

Per track and clip: onset tp / fp / fn (±0.1 s), event-class correct / total (``vta_core.synth_metrics``)
and AV-Align of the track against the clip's own video (``vta_core.av_align``). Blocks aggregate them:
micro-averaged onset F1 and class accuracy, mean AV-Align over clips where it is defined, each with a
bootstrap 95% interval over clips, and in the generated block the paired difference generated − track for
every other track (``vta_core.evaluation.intervals``).

Outputs in ``out_dir``: ``per_clip.parquet`` (one row per clip and track) and ``clips/<clip_id>/`` holding
``<track>.wav`` for every track the clip has, ``generated.mp4`` (the clip's video + generated audio) and
``ground_truth.mp4`` (a copy of the input clip), which the HTML report links.

Saliency (``vta_core.saliency``, paper Fig. 2/3/6), when the model reads frames through an encoder with a
differentiable ``features``: per clip the map of its frames for the latent of its ``generated`` track, and
for the latent of its ``mismatched_video`` track (sampled from the partner's frames, same seed) — the one
thing the control changes is the sound being explained, so a model whose maps follow what *sounds* has a
higher sounding-object lift in ``generated``. With the synth folder's ``boxes.parquet``, the share of each
map inside the sounding object, the silent decoy and the ball against their area (``saliency``), and the
overlays ``clips/<id>/saliency_<track>.png``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
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
from vta_core.evaluation.intervals import LEVEL, RESAMPLES, bootstrap
from vta_core.labels import clip_id_for, read_labels
from vta_core.media import MediaError, read_audio
from vta_core.metrics.suite import PAPER_COLUMNS, SYNTH_COLUMNS, ClipAudio, MetricModels, evaluate_all
from vta_core.pipeline import VTAPipeline, mux, video_frames
from vta_core.saliency import (
    box_shares,
    clip_boxes,
    generated_latent,
    overlay_png,
    saliency_map,
    summarise,
    unavailable_reason,
)
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS
from vta_core.synth_metrics import EventClassifier, aggregate, clip_scores, read_events

TRACKS = ("generated", "mismatched_video", "shuffled_video", "unconditional", "reconstruction", "ground_truth")
DIFFUSION_TRACKS = ("generated", "mismatched_video", "shuffled_video", "unconditional")  # sampled, seed + i
# Each track beside `generated`: what it differs in / what it rules out (the report and summary show these).
CONTROLS: dict[str, str] = {
    "mismatched_video": "the same model, noise and settings fed another test clip's frames (whole, in order, "
                        "same length) / rules out \"any plausible video gives these scores\": the sound follows "
                        "THIS video",
    "shuffled_video": "the clip's own frames rotated in time by half the clip (same content, in order, only the "
                      "timing moves) / rules out \"the content alone, without its timing\"",
    "unconditional": "the same model and noise with the null condition ∅ (no video at all) / rules out \"the "
                     "model's prior without any video\"",
    "reconstruction": "the ground truth through the checkpoint's VAE and vocoder, no diffusion / the ceiling: "
                      "what any model with this VAE and vocoder can reach",
    "ground_truth": "the clip's own audio / the detectors' ceiling: what the onset detector and the event "
                    "classifier find in the real sound",
}
# The paper's metrics and their synthetic-world analogues (vta_core.metrics.suite); null with a reason
# when their networks are not given or not loadable.
PAPER_METRICS = tuple(c for c in PAPER_COLUMNS if c != "av_align")  # av_align has its own per-track mean
METRIC_COLUMNS = (*PAPER_METRICS, *SYNTH_COLUMNS)
_SCALARS = ("tp", "fp", "fn", "onset_precision", "onset_recall", "onset_f1", "class_correct", "class_total",
            "event_class_accuracy")


def synth_clips(synth_dir: str | Path, *, split: str, split_default: str | None = None) -> list[tuple[str, Path]]:
    """``(clip_id, video path)`` of the clips of ``split`` in a ``vta synth`` folder, sorted by id.
    ``split_default``: the split of labels.csv rows without one (None = such a row is an error)."""
    folder = Path(synth_dir)
    for need in ("videos", "labels.csv", "events.parquet"):
        if not (folder / need).exists():
            raise FileNotFoundError(f"not a vta synth folder (no {need}): {folder}")
    labels = read_labels(folder / "labels.csv", split_default=split_default)
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


def shuffled_frames(frames: np.ndarray) -> np.ndarray:
    """The ``shuffled_video`` control: ``frames`` (T, ...) rotated in time by T // 2 (frame k shows original
    frame (k + T // 2) mod T). Every frame stays a real, in-order frame of the clip (in distribution, the
    frame differences too except at the one seam); only the timing moves, by half the clip (T = the clip's
    frames, the geometry's window W for a one-window clip). Deterministic: no seed."""
    return np.roll(frames, -(len(frames) // 2), axis=0)


def mismatched_partners(frame_counts: Mapping[str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """The ``mismatched_video`` derangement: ``({clip: the clip whose frames it gets}, {clip: reason})``.

    Clips are grouped by frame count (in the given order); clip k of a group of n >= 2 gets clip
    (k + 1) mod n's frames, so no clip gets its own and every clip's frames are used once. A clip alone in
    its group has no partner of the same length: it lands in the reasons instead."""
    groups: dict[int, list[str]] = {}
    for cid, n in frame_counts.items():
        groups.setdefault(n, []).append(cid)
    partner: dict[str, str] = {}
    missing: dict[str, str] = {}
    for n, ids in groups.items():
        if len(ids) == 1:
            missing[ids[0]] = f"no other test clip has {n} frames (mismatched_video needs one of the same length)"
            continue
        partner.update({cid: ids[(k + 1) % len(ids)] for k, cid in enumerate(ids)})
    return partner, missing


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

    ``metrics``: per track (:data:`TRACKS`) a block with ``av_align``, ``onset_f1``, ``event_class_accuracy``
    (+ precision, recall, counts, ``n_clips``), :data:`METRIC_COLUMNS` (each a number or None with its
    reason in ``unavailable``: the generated block's reasons), ``intervals`` (``{metric: [lo, hi] | None}``,
    bootstrap 95% over clips) and ``missing`` (``{clip_id: reason}`` of clips without this track); the
    generated block also has ``paired``: ``{track: {metric: {"diff", "lo", "hi", "n_clips"}}}``, generated −
    track on the clips both have. ``clips``: per evaluated clip ``{"clip_id", "seconds", "seed",
    "mismatched_with", "files": {name: path relative to the folder}, "scores": {track: ...}, "missing":
    {track: reason}}`` (a track without audio for the clip is in ``missing``, not in ``scores`` / ``files``);
    ``failed``: ``{clip_id: "ErrorType: message"}`` of the clips left out. ``metric_details``: per track and
    metric, the suite's result (value, reason, counts).
    """

    metrics: dict[str, dict[str, Any]]
    unavailable: dict[str, str]
    clips: list[dict[str, Any]]
    per_clip_parquet: str
    timings_s: dict[str, float]
    settings: dict[str, Any]  # sampler, steps, guidance, seed, split, vocoder, sample_rate, window_s, ...
    checkpoint: str  # the checkpoint folder
    failed: dict[str, str] = field(default_factory=dict)
    metric_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    saliency: dict[str, Any] = field(default_factory=dict)  # {"summary", "unavailable", "tracks"} (module docstring)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Clip:
    clip_id: str
    video: Path
    seed: int  # seed + i, i = its index in the sorted split
    frames: np.ndarray  # uint8 (T, S, S, 3)
    seconds: float
    truth: np.ndarray  # float32 (N,) at the vocoder rate


def read_clips(clips: Sequence[tuple[str, Path]], pipe: VTAPipeline, *, seed: int,
                echo: Callable[[str], None]) -> tuple[list[_Clip], dict[str, str]]:
    """Frames and ground-truth audio of every clip; one that cannot be read is a failed entry."""
    g, out, failed = pipe.geometry, [], {}
    for i, (clip_id, video) in enumerate(clips):
        try:
            frames, seconds = video_frames(video, geometry=g, duration_s=g.duration_s)
            truth = read_audio(video, sample_rate=pipe.sample_rate, duration_s=seconds)
        except MediaError as e:
            failed[clip_id] = f"{e.error_type}: {e}"
            echo(f"{clip_id}: FAILED {e}")
            continue
        out.append(_Clip(clip_id, video, seed + i, frames, seconds, truth))
    return out, failed


def _diffusion_tracks(pipe: VTAPipeline, clips: list[_Clip], partner: Mapping[str, str], *,
                      timings: dict[str, float], **kw: Any) -> dict[str, dict[str, np.ndarray]]:
    """track -> {clip_id: audio (N,)}: one pipeline call per track over every clip it has, clip seeds alike."""
    by_id = {c.clip_id: c for c in clips}
    plan: dict[str, tuple[list[_Clip], list[np.ndarray], dict[str, Any]]] = {
        "generated": (clips, [c.frames for c in clips], {}),
        "mismatched_video": ([c for c in clips if c.clip_id in partner],
                             [by_id[partner[c.clip_id]].frames for c in clips if c.clip_id in partner], {}),
        "shuffled_video": (clips, [shuffled_frames(c.frames) for c in clips], {}),
        "unconditional": (clips, [c.frames for c in clips], {"unconditional": True}),
    }
    out: dict[str, dict[str, np.ndarray]] = {}
    for track in DIFFUSION_TRACKS:
        who, frames, extra = plan[track]
        t = time.perf_counter()
        waves = pipe(frames, [c.seconds for c in who], seeds=[c.seed for c in who], **kw, **extra) if who else []
        out[track] = {c.clip_id: w for c, w in zip(who, waves, strict=True)}
        timings[f"generate_{track}_s"] = time.perf_counter() - t
    return out


SALIENCY_TRACKS = ("generated", "mismatched_video")


def _saliency(pipe: VTAPipeline, clips: list[_Clip], partner: Mapping[str, str], *, synth_dir: Path, out: Path,
              per_clip: list[dict[str, Any]], resamples: int, echo: Callable[[str], None], **sample: Any) -> dict[str, Any]:
    """Maps, overlays and box shares of :data:`SALIENCY_TRACKS` for every clip (module docstring); adds
    ``saliency`` (track -> shares) and the overlay files to each ``per_clip`` entry."""
    why = unavailable_reason(pipe)
    if why is not None:
        return {"summary": {}, "unavailable": why, "tracks": list(SALIENCY_TRACKS)}
    has_boxes = (synth_dir / "boxes.parquet").is_file()
    by_id, entry = {c.clip_id: c for c in clips}, {e["clip_id"]: e for e in per_clip}
    g = pipe.geometry
    shares: dict[str, list[dict[str, Any] | None]] = {t: [] for t in SALIENCY_TRACKS}
    for c in clips:
        boxes = clip_boxes(synth_dir, c.clip_id, n_frames=len(c.frames), fps=g.fps, frame_size=g.frame_size) \
            if has_boxes else None
        sources = {"generated": c, "mismatched_video": by_id.get(partner.get(c.clip_id, ""))}
        e = entry[c.clip_id]
        for track, src in sources.items():
            if src is None:
                shares[track].append(None)
                continue
            latent = generated_latent(pipe, src.frames, c.seconds, seed=c.seed, **sample)
            maps = saliency_map(pipe, c.frames, c.seconds, latent=latent, seed=c.seed)
            png = Path("clips") / c.clip_id / f"saliency_{track}.png"
            overlay_png(c.frames, maps, out / png, boxes=boxes, fps=g.fps,
                        title=f"{c.clip_id}: saliency for the {track.replace('_', ' ')} audio")
            e["files"][f"saliency_{track}_png"] = str(png)
            s = box_shares(maps, boxes) if boxes is not None else None
            e.setdefault("saliency", {})[track] = s
            shares[track].append(s)
        if boxes is not None:
            lift = e["saliency"]["generated"]["sounding"]["lift"]
            echo(f"saliency {c.clip_id}: sounding-object lift {lift if lift is None else round(lift, 2)}")
    summary = summarise(shares, resamples=resamples) if has_boxes else {}
    return {"summary": summary, "unavailable": None if has_boxes else f"{synth_dir} has no boxes.parquet: maps only",
            "tracks": list(SALIENCY_TRACKS)}


def _row(clip_id: str, track: str, s: dict[str, Any]) -> dict[str, Any]:
    return {"clip_id": clip_id, "track": track, **{k: s[k] for k in (*_SCALARS, "av_align")},
            "detected_onsets_s": s["detected_onsets_s"], "true_onsets_s": s["true_onsets_s"],
            "true_classes": s["true_classes"], "predicted_classes": [c or "" for c in s["predicted_classes"]]}


def evaluate_synthetic(
    *,
    checkpoint: str | Path,
    synth_dir: str | Path,
    out_dir: str | Path,
    split: str = "test",
    split_default: str | None = None,
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    max_clips: int | None = None,
    device: str = "cpu",
    metric_weights: dict[str, str | None] | None = None,
    resamples: int = RESAMPLES,
    echo: Callable[[str], None] = print,
) -> SyntheticEvaluation:
    """Score every track of :data:`TRACKS` on the ``split`` clips of ``synth_dir`` (the first ``max_clips``
    of the sorted ids), writing the clip files and ``per_clip.parquet`` to ``out_dir``.

    ``split_default``: the split of labels.csv rows without one (None: such a row is an error naming the
    clip). The paper metrics (:data:`METRIC_COLUMNS`) come from ``vta_core.metrics.evaluate_all`` with the
    networks of ``metric_weights`` (keys ``panns``, ``vggish``, ``clap``, ``synth_classifier``); FAD, FD and
    KL compare a track with the ground truth, so they are None for the ground-truth block itself.
    ``resamples``: bootstrap resamples of the intervals (numpy ``default_rng(0)``).
    """
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    clips = synth_clips(synth_dir, split=split, split_default=split_default)[:max_clips]
    labels = read_labels(Path(synth_dir) / "labels.csv", split_default=split_default)
    events = read_events(Path(synth_dir) / "events.parquet")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipe = VTAPipeline.from_checkpoint(checkpoint, device=device)
    sr = pipe.sample_rate
    clf = EventClassifier.fit_templates(sample_rate=sr)  # fixed templates: the metric ignores `seed`
    timings = {"load_s": time.perf_counter() - t0}
    settings = {"steps": steps, "sampler": sampler, "guidance": guidance, "seed": seed, "split": split,
                "split_default": split_default, "vocoder": pipe.vocoder.name, "sample_rate": sr,
                "window_s": pipe.geometry.duration_s, "tracks": list(TRACKS), "noise": "clip i of the split: seed + i, "
                "in every diffusion track", "shuffle": "rotation by T // 2 frames", "mismatch": "clip k of each "
                "equal-frame-count group gets clip (k + 1) mod n's frames", "bootstrap": {"resamples": resamples,
                "level": LEVEL, "seed": 0, "unit": "clip"}}
    # 1. frames and ground truth of every clip (a clip that cannot be read is left out of every track)
    t = time.perf_counter()
    ready, failed = read_clips(clips, pipe, seed=seed, echo=echo)
    if not ready:
        raise ValueError(f"no clip of split {split!r} could be evaluated: {failed}")
    partner, no_partner = mismatched_partners({c.clip_id: len(c.frames) for c in ready})
    timings["read_s"] = time.perf_counter() - t
    # 2. the diffusion tracks: one pipeline call per track over the whole split, seed + i for clip i
    t = time.perf_counter()
    sampled = _diffusion_tracks(pipe, ready, partner, timings=timings, steps=steps, sampler=sampler,
                                guidance=guidance)
    timings["generate_s"] = time.perf_counter() - t
    # 3. the clips' files and per-clip scores in every track
    rows: list[dict[str, Any]] = []
    per_clip: list[dict[str, Any]] = []
    metric_clips: dict[str, list[ClipAudio]] = {v: [] for v in TRACKS}
    timings["reconstruct_s"] = timings["score_s"] = 0.0
    for n, c in enumerate(ready):
        t = time.perf_counter()
        audio = {track: sampled[track][c.clip_id] for track in DIFFUSION_TRACKS if c.clip_id in sampled[track]}
        audio["reconstruction"] = reconstruct(pipe, c.truth)
        audio["ground_truth"] = c.truth
        timings["reconstruct_s"] += time.perf_counter() - t
        t = time.perf_counter()
        folder = out / "clips" / c.clip_id
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        scores: dict[str, dict[str, Any]] = {}
        for track in TRACKS:
            if track not in audio:
                continue
            wav = folder / f"{track}.wav"
            sf.write(wav, audio[track], sr, subtype="PCM_16")
            files[f"{track}_wav"] = str(wav.relative_to(out))
            s = clip_scores(audio[track], sr, events.get(c.clip_id, []), clf=clf, window_duration_s=c.seconds)
            s["av_align"] = av_align(c.video, audio=audio[track], audio_sr=sr, duration_s=c.seconds)["av_align"]
            scores[track] = s
            rows.append(_row(c.clip_id, track, s))
            ref = None if track == "ground_truth" else c.truth
            metric_clips[track].append(ClipAudio(c.clip_id, audio[track], sr, reference=ref,
                                                 label=labels[c.clip_id].label, video=c.video,
                                                 events_s=tuple(s["true_onsets_s"])))
        mux(c.video, folder / "generated.wav", folder / "generated.mp4")
        shutil.copyfile(c.video, folder / "ground_truth.mp4")
        files.update(generated_mp4=str((folder / "generated.mp4").relative_to(out)),
                     ground_truth_mp4=str((folder / "ground_truth.mp4").relative_to(out)))
        missing = {"mismatched_video": no_partner[c.clip_id]} if c.clip_id in no_partner else {}
        timings["score_s"] += time.perf_counter() - t
        per_clip.append({"clip_id": c.clip_id, "seconds": c.seconds, "seed": c.seed,
                         "mismatched_with": partner.get(c.clip_id), "files": files, "scores": scores,
                         "missing": missing})
        g = scores["generated"]
        echo(f"[{n + 1}/{len(ready)}] {c.clip_id}: onsets {g['tp']}/{g['tp'] + g['fn']} found, {g['fp']} extra; "
             f"classes {g['class_correct']}/{g['class_total']}; AV-Align {g['av_align']}")
    # 4. the paper metrics per track, then the blocks with their intervals and paired differences
    t = time.perf_counter()
    models = MetricModels.load(**(metric_weights or {}), device=device)
    paper: dict[str, Any] = {}
    for track in TRACKS:
        if not metric_clips[track]:
            continue
        av = {c["clip_id"]: c["scores"][track]["av_align"] for c in per_clip if track in c["scores"]}
        paper[track] = evaluate_all(metric_clips[track], models=models, av_align_per_clip=av, echo=echo)
        by_clip = {r["clip_id"]: r for r in paper[track].per_clip}
        for row in rows:
            if row["track"] == track:
                row.update({k: v for k, v in by_clip.get(row["clip_id"], {}).items() if k not in ("clip_id", "av_align")})
    timings["metrics_s"] = time.perf_counter() - t
    keys = list(dict.fromkeys(k for r in rows for k in r))  # the union: every row gets every column
    table = out / "per_clip.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), table)
    boot = bootstrap({track: [c["scores"].get(track) for c in per_clip] for track in TRACKS}, resamples=resamples)
    metrics: dict[str, dict[str, Any]] = {}
    for track in TRACKS:
        blocks = [c["scores"][track] for c in per_clip if track in c["scores"]]
        av = mean_av_align(blocks)
        values = paper[track].values() if track in paper else {}
        metrics[track] = {**aggregate(blocks), "av_align": av["av_align"], "av_align_defined": av["n_defined"],
                          **{k: values.get(k) for k in METRIC_COLUMNS}, "intervals": boot["intervals"][track],
                          "missing": {c["clip_id"]: c["missing"][track] for c in per_clip if track in c["missing"]}}
    metrics["generated"]["paired"] = boot["paired"]
    # 5. saliency: where in the frames the generated (vs the mismatched) audio comes from
    t = time.perf_counter()
    sal = _saliency(pipe, ready, partner, synth_dir=Path(synth_dir), out=out, per_clip=per_clip,
                    resamples=resamples, echo=echo, steps=steps, sampler=sampler, guidance=guidance)
    timings["saliency_s"] = time.perf_counter() - t
    unavailable = {k: r for k, r in paper["generated"].unavailable().items() if k in METRIC_COLUMNS}
    return SyntheticEvaluation(
        metrics=metrics, unavailable=unavailable, clips=per_clip, per_clip_parquet=str(table), timings_s=timings,
        settings=settings, checkpoint=str(pipe.checkpoint), failed=failed,
        metric_details={v: {k: r.to_dict() for k, r in paper[v].summary.items()} for v in paper}, saliency=sal)
