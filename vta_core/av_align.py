"""AV-Align (Yariv et al. 2024, "Diverse and Aligned Audio-to-Video Generation via Text-to-Video Model
Adaptation"; 2025 revision of the released ``av_align.py``), as docs/algorithms.md#av-align states it.

Video: every frame at the native rate as OpenCV's ``VideoCapture`` decodes it (BGR) ->
``cv2.cvtColor(BGR2GRAY)`` -> Farneback flow between consecutive frames (pyr_scale 0.5, levels 3,
winsize 15, iterations 3, poly_n 5, poly_sigma 1.2, flags 0) -> mean flow magnitude ``m(f_{i-1}, f_i)``.
Trajectory ``[m(f0, f1)] + [m(f_{i-1}, f_i) for i >= 1]`` (one value per frame); a video peak is a strict
local maximum ``x[i-1] < x[i] > x[i+1]`` with ``x[i] >= 0.1``, at time ``i / fps``. (Copies of the
script in circulation differ: some use ``> 0.1`` or let one video peak match several audio peaks.)

Audio: ``librosa.onset.onset_detect`` over ``librosa.onset.onset_strength`` of the mono signal at
22,050 Hz (hop 512, librosa defaults otherwise); peak times from ``librosa.frames_to_time``.

Score: each audio peak (in time order) takes the first not yet used video peak with
``|t_a - t_v| < 1 / fps``; ``I`` matches -> ``I / (|A| + |V| - I)``. One side without peaks gives 0.0;
both sides empty leave the score undefined (``None`` with a reason). Over a set of clips the metric is
the mean of the defined scores (:func:`mean_av_align`).

How audio is loaded (the reference calls ``librosa.load(path)``: native decode, channel mean, soxr_hq
resampling to 22,050 Hz). Here (``vta_core.media.read_audio_native``), with no system FFmpeg for
librosa's audioread fallback:

* files that libsndfile reads (wav, flac, ogg, mp3) are read by soundfile, as librosa.load does;
* anything else (mp4/mkv/webm containers, the video's own track): PyAV checks there is an audio stream,
  then the FFmpeg binary of imageio-ffmpeg decodes the first one to a float32 WAV at its native rate and
  channel layout (no 16-bit quantisation; the container's edit list trims encoder priming and padding),
  which soundfile reads;
* arrays: ``(N,)`` or ``(C, N)`` at ``audio_sr``.
Then, as librosa.load: channels averaged, the window ``[int(t0 * sr), int(t0 * sr) + int(d * sr))`` cut
at the native rate, ``librosa.resample(..., 22050, res_type="soxr_hq")``. For a WAV this equals
``librosa.load(path, sr=22050, offset=t0, duration=d)``.

Windows (``start_s``, ``duration_s``) are snapped to the video's frame grid: frames
``s = round(start_s * fps)`` .. ``s + round(duration_s * fps) - 1`` (to the last frame when
``duration_s`` is None); the audio window starts at ``t0 = s / fps`` and lasts ``duration_s`` (to the end
of the track when None). Audio given as a file or array starts at video time ``audio_start_s`` (default 0:
a full-length track; pass the window start for audio generated for one window) and is cut on the same
timeline. Peak times are relative to ``t0``. With ``start_s = 0`` and no duration the
result is the reference algorithm on the whole file.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vta_core.errors import ItemError
from vta_core.librosa_import import librosa
from vta_core.media import MediaError, read_audio_native
from vta_core.opticalflow import FARNEBACK

SAMPLE_RATE = 22050  # librosa.load default, used by the reference
HOP_LENGTH = 512  # librosa onset default
PEAK_MIN = 0.1  # video peaks need a mean flow magnitude >= 0.1 px
UNDEFINED = "no peaks in audio or video"


class AVAlignError(ItemError, ValueError):
    """An input the metric cannot use; ``error_type`` names the class of problem for manifests."""


# --- the algorithm ---------------------------------------------------------------------------------
def flow_magnitude(prev_gray: np.ndarray, gray: np.ndarray) -> float:
    """Mean Farneback flow magnitude between two uint8 grayscale frames (H, W), in pixels."""
    flow = cv2.calcOpticalFlowFarneback(prev_gray, gray, None, **FARNEBACK)  # (H, W, 2) float32
    return float(cv2.mean(cv2.magnitude(flow[..., 0], flow[..., 1]))[0])


def video_peak_times(trajectory: Sequence[float], fps: float) -> list[float]:
    """Times ``i / fps`` of strict local maxima of the trajectory with value >= 0.1."""
    x = np.asarray(trajectory, dtype=np.float64)
    if x.size < 3:
        return []
    mid = x[1:-1]
    peaks = np.flatnonzero((x[:-2] < mid) & (mid > x[2:]) & (mid >= PEAK_MIN)) + 1
    return [float(i / fps) for i in peaks]


def audio_peak_times(y: np.ndarray) -> list[float]:
    """Onset times (s) of a mono float signal at 22,050 Hz: librosa onset_detect over onset_strength."""
    if y.size == 0:
        return []
    env = librosa.onset.onset_strength(y=y, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    return [float(t) for t in librosa.frames_to_time(frames, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)]


def count_matches(audio_peaks: Sequence[float], video_peaks: Sequence[float], fps: float) -> int:
    """Greedy one-to-one matching: each audio peak takes the first unused video peak within 1/fps."""
    used = np.zeros(len(video_peaks), dtype=bool)
    matches = 0
    for ta in audio_peaks:
        for j, tv in enumerate(video_peaks):
            if not used[j] and abs(ta - tv) < 1.0 / fps:
                used[j] = True
                matches += 1
                break
    return matches


def score_peaks(audio_peaks: Sequence[float], video_peaks: Sequence[float], fps: float) -> dict[str, Any]:
    """IoU of matched peaks: ``I / (|A| + |V| - I)``; None (with a reason) when both sides are empty."""
    matches = count_matches(audio_peaks, video_peaks, fps)
    union = len(audio_peaks) + len(video_peaks) - matches
    return {
        "av_align": matches / union if union else None,
        "video_peaks": len(video_peaks),
        "audio_peaks": len(audio_peaks),
        "matches": matches,
        "fps": fps,
        "reason": None if union else UNDEFINED,
        "video_peak_times": list(video_peaks),
        "audio_peak_times": list(audio_peaks),
    }


def mean_av_align(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metric over clips: mean of the defined scores; undefined clips are counted, not averaged."""
    scores = [r["av_align"] for r in results if r.get("av_align") is not None]
    return {
        "av_align": float(np.mean(scores)) if scores else None,
        "n_clips": len(results),
        "n_defined": len(scores),
        "n_undefined": len(results) - len(scores),
    }


# --- video -----------------------------------------------------------------------------------------
def _frame_spans(fps: float, windows: Sequence[tuple[float, float | None]]) -> list[tuple[int, int]]:
    """(first frame, end frame exclusive) per window; an open window ends at ``sys.maxsize``."""
    spans = []
    for start_s, duration_s in windows:
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise ValueError(f"invalid AV-Align window start_s={start_s!r} duration_s={duration_s!r}")
        s = round(start_s * fps)
        spans.append((s, sys.maxsize if duration_s is None else s + max(1, round(duration_s * fps))))
    return spans


def video_trajectories(
    video: str | Path, windows: Sequence[tuple[float, float | None]]
) -> tuple[list[np.ndarray], list[int], float]:
    """Flow trajectory of each ``(start_s, duration_s)`` window of one video, decoding it once.

    Frames are read in order (``grab`` only for frames no window needs); flow is computed once per
    consecutive pair inside some window; only the previous grayscale frame is held in memory.
    Returns (trajectories, frames per window, fps).
    """
    path = Path(video)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise AVAlignError("unreadable_video", f"OpenCV cannot open {path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(fps) or fps <= 0:
            raise AVAlignError("unreadable_video", f"{path.name}: OpenCV reports frame rate {fps!r}")
        spans = _frame_spans(fps, windows)
        last = max(e for _, e in spans) - 1

        def pair_needed(i: int) -> bool:  # is m(f_{i-1}, f_i) inside some window?
            return any(s < i < e for s, e in spans)

        mags: dict[int, float] = {}  # i -> m(f_{i-1}, f_i)
        prev: np.ndarray | None = None
        n_frames = 0  # frames decoded so far = index of the next frame
        while n_frames <= last:
            i = n_frames
            if not (pair_needed(i) or pair_needed(i + 1)):
                if not cap.grab():
                    break
                prev = None
            else:
                ok, frame = cap.read()  # (H, W, 3) uint8 BGR
                if not ok:
                    break
                gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                if prev is not None and pair_needed(i):
                    mags[i] = flow_magnitude(prev, gray)
                prev = gray
            n_frames += 1
    finally:
        cap.release()
    if n_frames == 0:
        raise AVAlignError("unreadable_video", f"OpenCV decoded no frames from {path.name}")
    out, counts = [], []
    for s, e in spans:
        e = min(e, n_frames)
        if s >= e:
            raise AVAlignError(
                "window_out_of_range", f"{path.name}: window starts at frame {s}, the video has {n_frames} frames"
            )
        pairs = [mags[i] for i in range(s + 1, e)]  # m(f_{i-1}, f_i) inside the window
        out.append(np.asarray(pairs[:1] + pairs, dtype=np.float64))  # [m(f0, f1)] + [m(f_{i-1}, f_i)]
        counts.append(e - s)
    return out, counts, fps


# --- audio -----------------------------------------------------------------------------------------
def _read_track(path: str | Path) -> tuple[np.ndarray, int]:
    """:func:`vta_core.media.read_audio_native` (native rate, channels averaged, as ``librosa.load``),
    its MediaError raised as this metric's AVAlignError with the same ``error_type``."""
    try:
        return read_audio_native(path)
    except MediaError as e:
        raise AVAlignError(e.error_type, str(e)) from None


def audio_window(y: np.ndarray, sr: int, t0: float, duration_s: float | None) -> np.ndarray:
    """Mono ``y`` at ``sr`` -> the window at 22,050 Hz (cut at ``sr`` as librosa.load's offset/duration).

    ``t0 < 0`` (audio that starts up to half a frame after the snapped window start) is zero-padded.
    """
    if t0 < 0:
        y, t0 = np.concatenate([np.zeros(round(-t0 * sr), np.float32), y]), 0.0
    start = int(t0 * sr)
    y = y[start:] if duration_s is None else y[start : start + int(duration_s * sr)]
    if sr != SAMPLE_RATE and y.size:
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _mono(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 2:
        return librosa.to_mono(a)  # (C, N) -> (N,)
    if a.ndim != 1:
        raise ValueError(f"audio must be (N,) or (C, N), got shape {a.shape}")
    return a


# --- entry points ----------------------------------------------------------------------------------
def av_align_windows(
    video: str | Path,
    windows: Sequence[tuple[float, float | None]],
    *,
    audio: str | Path | np.ndarray | None = None,
    audio_sr: int | None = None,
    audio_start_s: float = 0.0,
) -> list[dict[str, Any]]:
    """AV-Align of several ``(start_s, duration_s)`` windows of one video, decoding it once.

    ``audio``: None = the video's own first audio stream; a file path; or an array at ``audio_sr``;
    it begins at video time ``audio_start_s``.
    Each result: ``{"av_align", "video_peaks", "audio_peaks", "matches", "fps", "reason",
    "video_peak_times", "audio_peak_times", "start_s", "duration_s", "n_frames"}``.
    """
    if not Path(video).is_file():
        raise FileNotFoundError(f"video not found: {video}")
    if isinstance(audio, np.ndarray):
        if audio_sr is None or audio_sr <= 0:
            raise ValueError(f"audio given as an array needs a positive audio_sr, got {audio_sr!r}")
        y, sr = _mono(audio), int(audio_sr)
    else:
        y, sr = _read_track(video if audio is None else audio)
    trajectories, frame_counts, fps = video_trajectories(video, windows)
    results = []
    for (start_s, duration_s), traj, n_frames in zip(windows, trajectories, frame_counts, strict=True):
        t0 = round(start_s * fps) / fps
        a = audio_window(y, sr, t0 - audio_start_s, duration_s)
        res = score_peaks(audio_peak_times(a), video_peak_times(traj, fps), fps)
        results.append({**res, "start_s": t0, "duration_s": duration_s, "n_frames": n_frames})
    return results


def av_align(
    video: str | Path,
    *,
    audio: str | Path | np.ndarray | None = None,
    audio_sr: int | None = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
    audio_start_s: float = 0.0,
) -> dict[str, Any]:
    """AV-Align of one video (or one window of it) against its own audio track or ``audio``
    (which begins at video time ``audio_start_s``)."""
    return av_align_windows(
        video, [(start_s, duration_s)], audio=audio, audio_sr=audio_sr, audio_start_s=audio_start_s
    )[0]


def av_align_cli(video: str | Path, audio: str | Path | None = None) -> dict[str, Any]:
    """What ``vta metrics av-align VIDEO [--audio FILE] --json`` prints: the whole file's result."""
    result = av_align(video, audio=audio)
    return {"video": str(video), "audio": None if audio is None else str(audio), **result}
