"""Synthetic-truth metrics: onset F1 and event-class accuracy against the events of ``vta_core.synth_world``.

Both metrics are defined from the audio alone and validated on ground-truth audio (high scores) and on
wrong audio (shifted, another clip's, noise: low scores); nothing in them is fitted to a model's output.

Analysis front-end (both metrics): mono audio at 22,050 Hz (resampled when needed), power mel
spectrogram (n_fft 1024, hop 256 = 11.6 ms, 64 Slaney mels 30-8000 Hz: the band a 22.05 kHz HiFi-GAN
reproduces) in absolute dB ``S[b, t]``, and a per-band noise floor ``floor[b]``, the 20th percentile of
``S[b, :]`` over the clip.

Onsets (:func:`detect_onsets`): a noise-gated SuperFlux-style spectral flux. ``G = max(S - floor - 10 dB,
0)`` removes the stationary background (the synthetic clips carry pink noise at about -35 dBFS); the flux
``sum_b max(0, G[b, t] - max(G[b-1..b+1, t-1]))`` (a max filter over neighbouring bands, Böck & Widmer
2013, so glides and vibrato do not re-trigger) peaks where a sound starts in any band, narrow-band or
broadband. Onsets are flux peaks >= ``threshold`` (dB summed over bands) at least ``min_gap_s`` apart
(scipy ``find_peaks``). On ground-truth clips the flux at true onsets is >= 40 (>= 25 after a HiFi-GAN
round trip) and <= 5 (<= 8) elsewhere; the default threshold 15 sits between.

Event classes (:class:`EventClassifier`): **spectral templates**, not a learned classifier. Around a
time ``at_s`` the *rise profile* is ``r[b] = max(0, max_{after} S3[b, t] - median_{before} S[b, t])``
(``S3``: power averaged over 3 frames; after = [at - 0.1, at + 0.1] s, before = [at - 0.3, at - 0.1] s):
a sound that starts within the onset tolerance of ``at_s`` is seen, one starting >= ~0.2 s later is not,
and the tail of an earlier event cancels. ``max(r) < none_db`` (12 dB) means no new sound there
(``None``); otherwise the class is the template with the largest cosine similarity to ``r``. A class
template is the mean unit-normalised rise profile of ``n_per_class`` sounds from
``vta_core.synth_world.render_event_sound``, each mixed at the clips' event gain into pink noise at the clips'
level (-37..-33 dBFS), half of them after another random event 0.4-0.6 s earlier (as in the clips).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import scipy.ndimage
import scipy.optimize
import scipy.signal

from vta_core.librosa_import import librosa
from vta_core.synth_world import EVENT_GAIN, NOISE_DBFS, SOUNDING_CLASSES, render_event_sound

ANALYSIS_SR = 22050
N_FFT = 1024
HOP = 256  # 11.6 ms frames
N_MELS = 64
FMIN, FMAX = 30.0, 8000.0
FLOOR_PERCENTILE = 20.0  # per-band background level
GATE_DB = 10.0  # the flux ignores anything within this many dB of the floor
AFTER_S = (-0.1, 0.1)  # classifier window: a sound starting within the onset tolerance of at_s
BEFORE_S = (-0.3, -0.1)  # classifier reference window before it
MIN_SAMPLE_RATE = 16000  # below this the 3 kHz whistle and the clap's band are lost


def _spectrogram(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono audio ``(N,)`` -> power mel spectrogram in absolute dB, ``(N_MELS, T)`` at ``HOP / 22050`` s."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (N,), got shape {audio.shape}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate={sample_rate} too low for the synthetic sounds; use >= {MIN_SAMPLE_RATE}"
        )
    if sample_rate != ANALYSIS_SR:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=ANALYSIS_SR, res_type="soxr_hq")
    if audio.size < N_FFT:
        audio = np.pad(audio, (0, N_FFT - audio.size))
    power = librosa.feature.melspectrogram(
        y=audio,
        sr=ANALYSIS_SR,
        n_fft=N_FFT,
        hop_length=HOP,
        n_mels=N_MELS,
        fmin=FMIN,
        fmax=FMAX,
        power=2.0,
        pad_mode="reflect",  # zero padding would fake a rise at t = 0 when a sound is already playing
    )  # (B, T)
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


def _frame_times(n_frames: int) -> np.ndarray:
    return librosa.frames_to_time(np.arange(n_frames), sr=ANALYSIS_SR, hop_length=HOP)


def onset_strength(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-gated spectral flux ``(T,)`` (dB summed over mel bands) and its frame times ``(T,)`` in s."""
    spec = _spectrogram(audio, sample_rate)  # (B, T)
    floor = np.percentile(spec, FLOOR_PERCENTILE, axis=1, keepdims=True)  # (B, 1)
    gated = np.maximum(spec - floor - GATE_DB, 0.0)  # (B, T)
    reference = scipy.ndimage.maximum_filter1d(gated, size=3, axis=0)  # (B, T): max over neighbouring bands
    flux = np.maximum(gated[:, 1:] - reference[:, :-1], 0.0).sum(axis=0)  # (T - 1,)
    flux = np.concatenate([[0.0], flux])  # (T,)
    return flux, _frame_times(flux.size)


def detect_onsets(
    audio: np.ndarray, sample_rate: int, *, threshold: float = 15.0, min_gap_s: float = 0.1
) -> np.ndarray:
    """Onset times (s, ascending) of the sounds in ``audio``: noise-gated flux peaks >= ``threshold``."""
    if threshold <= 0 or min_gap_s <= 0:
        raise ValueError(f"threshold and min_gap_s must be positive, got {threshold!r}, {min_gap_s!r}")
    flux, times = onset_strength(audio, sample_rate)
    distance = max(1, round(min_gap_s * ANALYSIS_SR / HOP))
    peaks, _ = scipy.signal.find_peaks(flux, height=threshold, distance=distance)
    return times[peaks]


def read_events(events_parquet: str | Path) -> dict[str, list[tuple[float, str]]]:
    """Sounding events of a ``vta synth`` folder's ``events.parquet``: clip_id -> [(onset_s, class)] by onset."""
    path = Path(events_parquet)
    if not path.is_file():
        raise FileNotFoundError(f"events file not found: {path}")
    events: dict[str, list[tuple[float, str]]] = {}
    for row in pq.read_table(path, columns=["clip_id", "onset_s", "class", "sounding"]).to_pylist():
        events.setdefault(row["clip_id"], [])
        if row["sounding"]:
            events[row["clip_id"]].append((float(row["onset_s"]), row["class"]))
    return {clip: sorted(evs) for clip, evs in events.items()}


def onset_f1(pred: Sequence[float], truth: Sequence[float], *, tolerance_s: float = 0.1) -> dict[str, Any]:
    """Precision / recall / F1 of predicted onsets under an optimal one-to-one matching within ``tolerance_s``.

    The matching has the most pairs ``|p - t| <= tolerance_s`` (ties: least total distance; Hungarian
    algorithm), so each prediction and each true onset counts at most once (duplicates are false
    positives / misses). ``f1 = 2 tp / (2 tp + fp + fn)``. Empty cases: ``precision`` is None without
    predictions, ``recall`` is None without true onsets, ``f1`` is None only when both are empty (nothing
    to score); one empty side gives f1 = 0.
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s!r}")
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    tp = 0
    if p.size and t.size:
        dist = np.abs(p[:, None] - t[None, :])  # (P, T)
        ok = dist <= tolerance_s + 1e-9  # float slack: 0.82 - 0.72 counts as 0.1
        # any valid pair costs less than all valid distances together, so cardinality is maximised first
        cost = np.where(ok, dist, tolerance_s * (min(p.size, t.size) + 1) + 1.0)
        rows, cols = scipy.optimize.linear_sum_assignment(cost)
        tp = int(ok[rows, cols].sum())
    fp, fn = int(p.size - tp), int(t.size - tp)
    return {
        "precision": tp / p.size if p.size else None,
        "recall": tp / t.size if t.size else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


class EventClassifier:
    """Nearest spectral template (cosine similarity of rise profiles); see the module docstring."""

    def __init__(self, *, classes: Sequence[str], templates: np.ndarray, none_db: float = 12.0) -> None:
        templates = np.asarray(templates, dtype=np.float64)
        if templates.shape != (len(classes), N_MELS):
            raise ValueError(f"templates must be ({len(classes)}, {N_MELS}), got {templates.shape}")
        self.classes = tuple(classes)
        self.templates = templates / np.linalg.norm(templates, axis=1, keepdims=True)  # (C, B) unit rows
        self.none_db = none_db

    @classmethod
    def fit_templates(cls, *, sample_rate: int, seed: int = 0, n_per_class: int = 32) -> EventClassifier:
        """Templates from ``n_per_class`` rendered sounds per class of ``vta_core.synth_world`` (seeded)."""
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {n_per_class!r}")
        rng = np.random.default_rng(seed)
        at_s = 0.6
        n = round((at_s + 0.6) * sample_rate)
        templates = []
        for name in SOUNDING_CLASSES:
            profiles = []
            for _ in range(n_per_class):
                audio = _pink_noise(n, rng) * 10 ** (rng.uniform(*NOISE_DBFS) / 20)
                if rng.random() < 0.5:  # an earlier event still ringing, as in the clips
                    earlier = str(rng.choice(SOUNDING_CLASSES))
                    _add(
                        audio,
                        _event(earlier, sample_rate, rng),
                        round((at_s - rng.uniform(0.4, 0.6)) * sample_rate),
                    )
                _add(audio, _event(name, sample_rate, rng), round(at_s * sample_rate))
                rise = _rise_profile(_spectrogram(audio, sample_rate), at_s)
                profiles.append(rise / max(np.linalg.norm(rise), 1e-9))
            templates.append(np.mean(profiles, axis=0))
        return cls(classes=SOUNDING_CLASSES, templates=np.stack(templates))

    def classify(self, audio: np.ndarray, sample_rate: int, at_s: float) -> str | None:
        """The class whose sound starts around ``at_s`` (s), or None when no new sound is there."""
        return self.classify_many(audio, sample_rate, [at_s])[0]

    def classify_many(
        self, audio: np.ndarray, sample_rate: int, times_s: Sequence[float]
    ) -> list[str | None]:
        """:meth:`classify` for several times of one clip (one spectrogram)."""
        spec = _spectrogram(audio, sample_rate)
        out: list[str | None] = []
        for at_s in times_s:
            rise = _rise_profile(spec, float(at_s))  # (B,)
            if rise.max() < self.none_db:
                out.append(None)
                continue
            similarity = self.templates @ (rise / np.linalg.norm(rise))  # (C,)
            out.append(self.classes[int(np.argmax(similarity))])
        return out


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise ``(n,)``."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    noise = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 1e-3)), n=n)
    return noise / np.sqrt(np.mean(noise**2))


def _event(name: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One rendered sound at a clip's event gain (``vta_core.synth_world.EVENT_GAIN``)."""
    return render_event_sound(name, sample_rate=sample_rate, rng=rng) * rng.uniform(*EVENT_GAIN)


def _add(audio: np.ndarray, sound: np.ndarray, start: int) -> None:
    seg = sound[: audio.size - start]
    audio[start : start + seg.size] += seg


def _rise_profile(spec: np.ndarray, at_s: float) -> np.ndarray:
    """``(B,)`` dB rise per band: max of the 3-frame-smoothed power after ``at_s`` over the median before it."""
    times = _frame_times(spec.shape[1])
    power = scipy.ndimage.uniform_filter1d(10 ** (spec / 10), size=3, axis=1, mode="nearest")  # (B, T)
    after = (times >= at_s + AFTER_S[0]) & (times <= at_s + AFTER_S[1])
    before = (times >= at_s + BEFORE_S[0]) & (times < at_s + BEFORE_S[1])
    if not after.any():
        raise ValueError(f"at_s={at_s} lies outside the audio (0-{times[-1]:.2f} s)")
    if before.sum() < 2:  # event at the very start: compare with the clip's background instead
        reference = np.percentile(spec, FLOOR_PERCENTILE, axis=1)
    else:
        reference = np.median(spec[:, before], axis=1)
    return np.maximum(10 * np.log10(power[:, after].max(axis=1)) - reference, 0.0)


def event_class_accuracy(
    audio: np.ndarray, sample_rate: int, events: Sequence[tuple[float, str]], clf: EventClassifier
) -> dict[str, Any]:
    """Share of ``events`` ``(onset_s, class)`` whose class ``clf`` finds around the onset (None if no events)."""
    for _, name in events:
        if name not in clf.classes:
            raise ValueError(f"event class {name!r} is not one the classifier knows: {list(clf.classes)}")
    predicted = clf.classify_many(audio, sample_rate, [t for t, _ in events]) if events else []
    correct = [p == name for p, (_, name) in zip(predicted, events, strict=True)]
    return {
        "accuracy": sum(correct) / len(correct) if correct else None,
        "correct": int(sum(correct)),
        "n": len(correct),
        "predicted": predicted,
    }


def clip_scores(
    audio: np.ndarray,
    sample_rate: int,
    events: Sequence[tuple[float, str]],
    *,
    clf: EventClassifier,
    window_start_s: float = 0.0,
    window_duration_s: float | None = None,
    tolerance_s: float = 0.1,
) -> dict[str, Any]:
    """Onset and class scores of one clip window.

    ``audio`` covers the window ``[window_start_s, window_start_s + window_duration_s)`` of the clip
    (duration None: the length of ``audio``); ``events`` are the clip's sounding events ``(onset_s, class)``
    in clip time. Events outside the window are ignored; the rest are scored at window-relative times.
    """
    duration = audio.shape[-1] / sample_rate if window_duration_s is None else window_duration_s
    if duration <= 0:
        raise ValueError(f"window_duration_s must be positive, got {window_duration_s!r}")
    inside = [(t - window_start_s, c) for t, c in events if window_start_s <= t < window_start_s + duration]
    onsets = detect_onsets(audio, sample_rate)
    f1 = onset_f1(onsets, [t for t, _ in inside], tolerance_s=tolerance_s)
    acc = event_class_accuracy(audio, sample_rate, inside, clf)
    return {
        "tp": f1["tp"], "fp": f1["fp"], "fn": f1["fn"],
        "onset_precision": f1["precision"], "onset_recall": f1["recall"], "onset_f1": f1["f1"],
        "class_correct": acc["correct"], "class_total": acc["n"], "event_class_accuracy": acc["accuracy"],
        "detected_onsets_s": [float(t) for t in onsets],
        "true_onsets_s": [float(t) for t, _ in inside],
        "true_classes": [c for _, c in inside],
        "predicted_classes": acc["predicted"],
    }  # fmt: skip


def aggregate(per_clip: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Micro-averaged onset precision / recall / F1 (pooled tp, fp, fn) and class accuracy over clips."""
    tp, fp, fn = (sum(int(c[k]) for c in per_clip) for k in ("tp", "fp", "fn"))
    correct = sum(int(c["class_correct"]) for c in per_clip)
    total = sum(int(c["class_total"]) for c in per_clip)
    return {
        "onset_precision": tp / (tp + fp) if tp + fp else None,
        "onset_recall": tp / (tp + fn) if tp + fn else None,
        "onset_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "event_class_accuracy": correct / total if total else None,
        "tp": tp, "fp": fp, "fn": fn,
        "class_correct": correct, "class_total": total,
        "n_clips": len(per_clip),
    }  # fmt: skip
