"""Synthetic audio-visual events with known ground truth (the `vta synth` stage).

Each clip shows a dark, tinted, noisy background with a grey ball that bounces all the time (a silent
distractor). At known times large, high-contrast objects appear abruptly, stay for a fraction of a
second and vanish. Objects of a *sounding* class (one shape + colour per class) make that class's
sound, starting on the very frame where they appear; objects of a *silent* class appear the same way
and make no sound, so a model has to learn *which* objects sound, not just that something appeared.
The audio carries pink background noise at about -35 dBFS.

Onsets are snapped to the video frame grid (``onset_s = frame / fps``), so the ground truth is exact in
both streams. Every clip is rendered from its own child seed ``SeedSequence(seed, spawn_key=(i, 0))``:
clip ``i`` is the same whatever the number of clips.

Noisy pairs (``noisy_share``, off by default): a share of the *train* clips gets audio that does not
match its video, as web video often does — ``shifted`` (the clip's own audio moved by 0.3-0.8 s, wrapping
around), ``swapped`` (a clean train clip's audio track) or ``offscreen`` (its own audio plus one more
event sound with nothing on screen). The test split stays clean, so evaluation ground truth is exact; an
alignment filter has something to remove. Each noisy clip draws from its own seed
``SeedSequence(seed, spawn_key=(i, 2))``: the video and every clean clip are the same bytes as in the
clean world of that seed.

Harder worlds (each off by default and recorded in ``synth.json`` only when on, so the default world's files
and versions stay as they were; the draws of a clip change only where an option is on):

- ``lookalike``: the whistle takes the bell's look (yellow circle), so the frames cannot tell the two apart,
  and every sounding event of a clip is of the clip's one class, which its label names: only the label text
  says whether a yellow circle rings or whistles.
- ``overlap``: 3-6 sounding events with onsets only ``OVERLAP_GAP_S`` apart, so sounds (80-500 ms) overlap
  and several objects are on screen at once (each placed in a quadrant no visible object holds, when one is free).
- ``moving``: every object moves at a constant velocity while visible, bouncing off the frame edges; its
  box in ``boxes.parquet`` follows it frame by frame (``events.parquet`` keeps its onset position).

Output (``out_dir``): ``videos/{clip_id}.mp4`` (H.264 + AAC or FLAC, mono), ``labels.csv`` (VGGSound
layout, no header: ``ytid,start_seconds,label,split``), ``events.parquet`` (one row per visual event),
``boxes.parquet`` (per frame, the box of the ball and of every visible object: what saliency is
measured against), ``synth.json`` (parameters and the class table) and, in a noisy world, ``pairs.parquet`` (one row per
clip: how its audio relates to its video).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from rich.progress import track

from vta_core.geometry import frame_count, sample_count

SOUNDING_CLASSES: tuple[str, ...] = ("drum", "bell", "whistle", "clap")
SILENT_CLASSES: tuple[str, ...] = ("leaf",)


@dataclass(frozen=True)
class _Look:
    shape: str
    rgb: tuple[int, int, int]
    sound: str | None  # None: the class never sounds


CLASS_TABLE: dict[str, _Look] = {
    "drum": _Look(
        "square", (235, 45, 40), "low thump: sine gliding ~160 -> ~100 Hz, 2 ms attack, ~80 ms decay"
    ),
    "bell": _Look("circle", (245, 215, 35), "bell: inharmonic partials ~1.0/1.4/1.9/2.5 kHz, 1 ms attack"),
    "whistle": _Look("triangle", (50, 110, 255), "whistle: tone gliding ~2.7 -> 3.3 kHz with vibrato"),
    "clap": _Look("diamond", (235, 60, 235), "clap: three broadband noise bursts with a short noisy tail"),
    "leaf": _Look("cross", (60, 220, 80), None),
}

ONSET_MIN_S = 0.15  # no onset before this
END_MARGIN_S = 0.5  # no onset in the last END_MARGIN_S seconds (room for the longest sound)
MIN_GAP_S = 0.4  # onsets of any two events in a clip are at least this far apart
SILENT_DURATION_S = (0.2, 0.5)  # how long a silent decoy stays visible
OBJECT_HALF_SIZE = (0.11, 0.14)  # object half-size as a fraction of the frame (22-28 % wide)
BALL_RADIUS = 0.07  # distractor radius as a fraction of the frame
EVENT_GAIN = (0.55, 0.85)  # peak amplitude of one event's sound
NOISE_DBFS = (-37.0, -33.0)  # RMS of the audio background noise
PIXEL_NOISE_STD = (4.0, 10.0)  # per-frame Gaussian pixel noise (0-255 scale)
AUDIO_PEAK_LIMIT = 0.9  # mixes louder than this are scaled down (headroom for the AAC encoder)
AUDIO_CODECS = {"aac": ["-c:a", "aac", "-b:a", "128k"], "flac": ["-c:a", "flac", "-sample_fmt", "s16"]}
MIN_SAMPLE_RATE = 16000  # the whistle (~3.3 kHz) and the clap need the band up to ~8 kHz
NOISY_KINDS: tuple[str, ...] = ("shifted", "swapped", "offscreen")  # how a noisy pair's audio is wrong
WORLD_OPTIONS = ("lookalike", "overlap", "moving")  # the harder worlds (module docstring)
LOOKALIKE = {"whistle": "bell"}  # class -> the class whose look it takes in a look-alike world
OVERLAP_GAP_S = 0.12  # onset gap in an overlap world: shorter than most sounds, so they overlap
OVERLAP_SOUNDING = (3, 6)  # sounding events per clip in an overlap world (as the onset window allows)
MOVE_SPEED = (0.25, 0.5)  # moving objects: speed in frame sizes per second
SHIFT_S = (0.3, 0.8)  # |shift| of a shifted pair's audio, seconds (either direction, wrapping around)


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    videos: list[Path]
    labels_csv: Path
    events_parquet: Path
    n_clips: int


@dataclass(frozen=True)
class _Event:
    onset_frame: int
    onset_s: float
    offset_s: float
    cls: str
    x: float  # object centre, pixels (column)
    y: float  # object centre, pixels (row)
    half: float  # half-size, pixels
    rgb: np.ndarray  # (3,) float32
    sound: np.ndarray | None  # (N,) float32 at the clip's sample rate; None for silent decoys
    shape: str = ""  # the drawn shape (the class's own, or a look-alike's); "" = the class's own
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels per second (a moving world), from the onset frame

    def centres(self, frames: range, *, fps: float, size: int) -> np.ndarray:
        """(len(frames), 2) centre (x, y) in pixels on each of ``frames``: bouncing off the frame edges."""
        if self.velocity == (0.0, 0.0):  # exactly the onset position (no float round trip)
            return np.tile(np.array([self.x, self.y], dtype=np.float64), (len(frames), 1))
        dt = (np.arange(frames.start, frames.stop) - self.onset_frame) / fps
        lo, hi = self.half, size - self.half
        return np.stack([_bounce(self.x, self.velocity[0] * dt, lo, hi),
                         _bounce(self.y, self.velocity[1] * dt, lo, hi)], axis=1)


# --- sounds ---------------------------------------------------------------------------------------------


def _envelope(
    n: int, sample_rate: int, *, attack_s: float, decay_s: float | None, release_s: float
) -> np.ndarray:
    """Linear attack, exponential decay (or sustain when ``decay_s`` is None), linear release."""
    t = np.arange(n) / sample_rate
    env = np.ones(n) if decay_s is None else np.exp(-t / decay_s)
    env *= np.clip(t / attack_s, 0.0, 1.0)
    env *= np.clip((n / sample_rate - t) / release_s, 0.0, 1.0)
    return env


def _drum(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(rng.uniform(0.25, 0.35) * sample_rate)
    t = np.arange(n) / sample_rate
    f_end = rng.uniform(90.0, 110.0)
    freq = f_end * (1.0 + 0.6 * np.exp(-t / 0.04))  # pitch drops from 1.6 f_end to f_end
    tone = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    return tone * _envelope(n, sample_rate, attack_s=0.002, decay_s=rng.uniform(0.07, 0.1), release_s=0.01)


def _bell(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(rng.uniform(0.4, 0.5) * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(1000.0, 1080.0)
    out = np.zeros(n)
    # inharmonic partials (ratios are not integers), higher ones decay faster
    for ratio, amp, tau in ((1.0, 1.0, 0.25), (1.34, 0.7, 0.18), (1.83, 0.5, 0.12), (2.36, 0.35, 0.09)):
        phase = rng.uniform(0, 2 * np.pi)
        out += amp * np.sin(2 * np.pi * ratio * f0 * t + phase) * np.exp(-t / (tau * rng.uniform(0.9, 1.1)))
    return out * _envelope(n, sample_rate, attack_s=0.001, decay_s=None, release_s=0.01)


def _whistle(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(rng.uniform(0.25, 0.4) * sample_rate)
    t = np.arange(n) / sample_rate
    f_start = rng.uniform(2650.0, 2750.0)
    freq = f_start + 600.0 * t / t[-1] + 40.0 * np.sin(2 * np.pi * rng.uniform(5.0, 7.0) * t)
    tone = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    return tone * _envelope(n, sample_rate, attack_s=0.005, decay_s=None, release_s=0.03)


def _clap(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    n = round(rng.uniform(0.2, 0.3) * sample_rate)
    t = np.arange(n) / sample_rate
    # uniform rather than Gaussian noise: its low crest factor keeps the clap loud at peak 1
    noise = rng.uniform(-1.0, 1.0, n)
    noise[1:] -= 0.5 * noise[:-1]  # mild pre-emphasis: tilt the broadband spectrum upwards
    env = 0.5 * np.exp(-t / 0.06)  # noisy tail
    for start in (0.0, rng.uniform(0.009, 0.013), rng.uniform(0.02, 0.026)):  # three quick bursts
        env = np.maximum(env, np.where(t >= start, np.exp(-(t - start) / 0.01), 0.0))
    return noise * env * _envelope(n, sample_rate, attack_s=0.0005, decay_s=None, release_s=0.01)


_SOUNDS = {"drum": _drum, "bell": _bell, "whistle": _whistle, "clap": _clap}


def render_event_sound(cls: str, *, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One event's sound for a sounding class: mono float32, peak 1, 0.2-0.5 s, sharp onset at sample 0."""
    if cls not in _SOUNDS:
        raise ValueError(f"no sound for class {cls!r}; sounding classes are {list(SOUNDING_CLASSES)}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate} too low for the event sounds; use >= {MIN_SAMPLE_RATE}")
    wave = _SOUNDS[cls](sample_rate, rng)
    return (wave / np.abs(wave).max()).astype(np.float32)


# --- one clip -------------------------------------------------------------------------------------------


def _onset_window(duration_s: float, fps: float, *, gap_s: float = MIN_GAP_S) -> tuple[int, int, int]:
    """(first, last, gap) onset frames allowed by ONSET_MIN_S, END_MARGIN_S and ``gap_s``."""
    first = math.ceil(ONSET_MIN_S * fps - 1e-9)
    last = math.floor((duration_s - END_MARGIN_S) * fps + 1e-9)
    gap = max(1, math.ceil(gap_s * fps - 1e-9))
    return first, last, gap


def _plan_clip(
    rng: np.random.Generator, *, duration_s: float, fps: float, size: int, sample_rate: int,
    lookalike: bool = False, overlap: bool = False, moving: bool = False,
) -> list[_Event]:
    """Draw the clip's events: 1-4 sounding + 0-2 silent, onsets >= MIN_GAP_S apart on the frame grid (the
    harder worlds' options: module docstring)."""
    first, last, gap = _onset_window(duration_s, fps, gap_s=OVERLAP_GAP_S if overlap else MIN_GAP_S)
    capacity = (last - first) // gap + 1
    lo_sound, hi_sound = OVERLAP_SOUNDING if overlap else (1, 4)
    n_sound = int(rng.integers(min(lo_sound, capacity), min(hi_sound, capacity) + 1))
    n_silent = int(rng.integers(0, min(2, capacity - n_sound) + 1))
    n = n_sound + n_silent
    # sorted draws in [0, slack] plus i * gap: any two onsets are >= gap frames apart
    slack = last - first - (n - 1) * gap
    frames = first + np.sort(rng.integers(0, slack + 1, n)) + gap * np.arange(n)
    sounding = rng.permutation(np.arange(n) < n_sound)
    clip_class = str(rng.choice(SOUNDING_CLASSES)) if lookalike else None  # a look-alike clip's one class
    events: list[_Event] = []
    prev_quadrant = -1
    for frame, is_sounding in zip(frames.tolist(), sounding.tolist(), strict=True):
        if is_sounding:
            cls = clip_class or str(rng.choice(SOUNDING_CLASSES))
        else:
            cls = str(rng.choice(SILENT_CLASSES))
        onset_s = frame / fps
        if is_sounding:
            sound = render_event_sound(cls, sample_rate=sample_rate, rng=rng) * rng.uniform(*EVENT_GAIN)
            offset_s = onset_s + len(sound) / sample_rate
        else:
            sound = None
            offset_s = onset_s + rng.uniform(*SILENT_DURATION_S)
        if overlap:  # a quadrant no object visible at this onset holds, when one is free
            held = {_quadrant(ev, size) for ev in events if ev.offset_s > onset_s}
            free = [q for q in range(4) if q not in held] or [q for q in range(4) if q != prev_quadrant]
            quadrant = int(rng.choice(free))
        else:  # events overlap in time only with their predecessor (durations <= 0.5 s < 2 * MIN_GAP_S), so a
            # quadrant other than the previous one keeps visible objects apart
            quadrant = int(rng.choice([q for q in range(4) if q != prev_quadrant]))
        prev_quadrant = quadrant
        x = size * (0.25 + 0.5 * (quadrant % 2) + rng.uniform(-0.04, 0.04))
        y = size * (0.25 + 0.5 * (quadrant // 2) + rng.uniform(-0.04, 0.04))
        look = CLASS_TABLE[LOOKALIKE.get(cls, cls) if lookalike else cls]
        rgb = np.clip(np.array(look.rgb) + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)
        half = size * rng.uniform(*OBJECT_HALF_SIZE)
        velocity = (0.0, 0.0)
        if moving:
            speed, angle = rng.uniform(*MOVE_SPEED) * size, rng.uniform(0, 2 * np.pi)
            velocity = (float(speed * np.cos(angle)), float(speed * np.sin(angle)))
        events.append(_Event(frame, onset_s, offset_s, cls, x, y, half, rgb, sound, look.shape, velocity))
    return events


def _quadrant(ev: _Event, size: int) -> int:
    """The frame quadrant (0-3, row-major) of an event's onset position."""
    return int(ev.x >= size / 2) + 2 * int(ev.y >= size / 2)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of half-size ``r``; ``dx``/``dy`` are pixel offsets from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return (ax <= 0.85 * r) & (ay <= 0.85 * r)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "triangle":  # apex up, base at 0.8 r below the centre
        return (dy <= 0.8 * r) & (ax <= (dy + r) / 1.8)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":
        return ((ax <= r) & (ay <= 0.35 * r)) | ((ay <= r) & (ax <= 0.35 * r))
    raise ValueError(f"unknown shape {shape!r}")


def _bounce(start: float, velocity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions of a point moving at constant velocity between reflecting walls at lo and hi."""
    span = hi - lo
    u = np.mod(start - lo + velocity, 2 * span)
    return lo + np.where(u < span, u, 2 * span - u)


def _render_video(
    events: list[_Event], rng: np.random.Generator, *, n_frames: int, fps: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, S, S, 3) uint8: tinted background, bouncing grey ball, event objects, pixel noise; and the
    ball's centre per frame (T, 2) float (x, y) in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (S, S)
    tint = rng.uniform(15, 75, 3).astype(np.float32)
    frames = np.broadcast_to(tint, (n_frames, size, size, 3)).copy()  # (T, S, S, 3) float32

    radius = BALL_RADIUS * size
    grey = np.float32(rng.uniform(130, 170))
    speed = rng.uniform(0.4, 0.8) * size  # pixels per second
    angle = rng.uniform(0, 2 * np.pi)
    t = np.arange(n_frames) / fps
    bx = _bounce(rng.uniform(radius, size - radius), speed * np.cos(angle) * t, radius, size - radius)
    by = _bounce(rng.uniform(radius, size - radius), speed * np.sin(angle) * t, radius, size - radius)
    for j in range(n_frames):
        frames[j][(xx - bx[j]) ** 2 + (yy - by[j]) ** 2 <= radius**2] = grey

    for ev in events:
        shape = ev.shape or CLASS_TABLE[ev.cls].shape
        shown = _visible_frames(ev, n_frames=n_frames, fps=fps)  # from onset while frame time < offset
        if ev.velocity == (0.0, 0.0):
            frames[shown.start : shown.stop, _shape_mask(shape, xx - ev.x, yy - ev.y, ev.half)] = ev.rgb
            continue
        for j, (x, y) in zip(shown, ev.centres(shown, fps=fps, size=size), strict=True):  # a moving object
            frames[j][_shape_mask(shape, xx - x, yy - y, ev.half)] = ev.rgb

    frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(rng.uniform(*PIXEL_NOISE_STD))
    return np.clip(frames, 0, 255).astype(np.uint8), np.stack([bx, by], axis=1)


def _visible_frames(ev: _Event, *, n_frames: int, fps: float) -> range:
    """The frames showing ``ev``: from its onset frame while frame time < offset (at least one frame)."""
    end = min(n_frames, math.ceil(ev.offset_s * fps - 1e-9))
    return range(ev.onset_frame, max(end, ev.onset_frame + 1))


def _box_rows(clip_id: str, events: list[_Event], ball: np.ndarray, *, fps: float, size: int) -> list[tuple]:
    """One row per frame and visible thing: (clip_id, frame, t_s, kind, class, x0, y0, x1, y1), kind
    ``ball`` (every frame), ``sounding`` or ``silent``; boxes in pixels, clipped to the frame."""
    rows: list[tuple] = []
    radius = BALL_RADIUS * size

    def box(x: float, y: float, r: float) -> tuple[float, float, float, float]:
        return max(0.0, x - r), max(0.0, y - r), min(float(size), x + r), min(float(size), y + r)

    for j, (x, y) in enumerate(ball.tolist()):
        rows.append((clip_id, j, j / fps, "ball", "ball", *box(x, y, radius)))
    for ev in events:
        kind = "sounding" if ev.sound is not None else "silent"
        shown = _visible_frames(ev, n_frames=len(ball), fps=fps)
        for j, (x, y) in zip(shown, ev.centres(shown, fps=fps, size=size).tolist(), strict=True):
            rows.append((clip_id, j, j / fps, kind, ev.cls, *box(x, y, ev.half)))
    return sorted(rows, key=lambda r: (r[1], r[3] != "ball", r[3]))


def _render_audio(
    events: list[_Event], rng: np.random.Generator, *, n_samples: int, sample_rate: int,
    extra: tuple[tuple[float, np.ndarray], ...] = (),
) -> np.ndarray:
    """Mono float32 mix: pink background noise + every sounding event at its onset sample (+ ``extra``
    (onset_s, sound) pairs with nothing on screen: an off-screen pair's sound)."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, d=1.0 / sample_rate)
    noise = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 20.0)), n=n_samples)  # 1/f power
    audio = noise * (10 ** (rng.uniform(*NOISE_DBFS) / 20) / np.sqrt(np.mean(noise**2)))
    for ev in events:
        if ev.sound is not None:
            start = round(ev.onset_s * sample_rate)
            seg = ev.sound[: n_samples - start]
            audio[start : start + len(seg)] += seg
    for onset_s, sound in extra:
        start = round(onset_s * sample_rate)
        audio[start : start + len(sound[: n_samples - start])] += sound[: n_samples - start]
    peak = np.abs(audio).max()
    if peak > AUDIO_PEAK_LIMIT:  # only ever scale down: no clipping, background level otherwise kept
        audio *= AUDIO_PEAK_LIMIT / peak
    return audio.astype(np.float32)


def _encode_mp4(
    frames: np.ndarray, wav: Path, out: Path, *, fps: float, sample_rate: int, audio_codec: str
) -> None:
    """One FFmpeg process: raw RGB frames on stdin + a WAV file -> H.264/yuv420p + mono audio MP4."""
    _, height, width, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", f"{rate.numerator}/{rate.denominator}",
        "-i", "pipe:0", "-i", str(wav),
        "-map", "0:v:0", "-map", "1:a:0",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-threads", "1",
        *AUDIO_CODECS[audio_codec], "-ac", "1", "-ar", str(sample_rate),
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
        str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=frames.tobytes(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg failed for {out}: {msg[-1] if msg else f'exit {proc.returncode}'}")


# --- noisy pairs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    kind: str  # clean | shifted | swapped | offscreen
    shift_s: float | None = None  # shifted: audio moved by this much (+: later), wrapping around
    partner: int | None = None  # swapped: the clean train clip whose audio track this clip carries
    offscreen_class: str | None = None  # offscreen: the extra sound's class ...
    offscreen_onset_s: float | None = None  # ... and its onset (on the frame grid)


def _plan_pairs(
    is_test: np.ndarray, *, seed: int, noisy_share: float, duration_s: float, fps: float
) -> list[_Pair]:
    """Which train clips are noisy pairs and how: clip i draws from ``SeedSequence(seed, spawn_key=(i, 2))``
    (whether it is noisy, then its kind and details); swapped clips take a clean train clip's audio."""
    rngs = [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 2))) for i in range(len(is_test))]
    noisy = [not test and rng.random() < noisy_share for test, rng in zip(is_test.tolist(), rngs, strict=True)]
    clean_train = [i for i, (test, n) in enumerate(zip(is_test.tolist(), noisy, strict=True)) if not test and not n]
    first, last, _ = _onset_window(duration_s, fps)
    pairs: list[_Pair] = []
    for i, rng in enumerate(rngs):
        if not noisy[i]:
            pairs.append(_Pair("clean"))
            continue
        kind = str(rng.choice(NOISY_KINDS))
        if kind == "swapped" and not clean_train:  # nothing clean to take audio from: shift instead
            kind = "shifted"
        if kind == "shifted":
            pairs.append(_Pair(kind, shift_s=float(rng.choice([-1, 1]) * rng.uniform(*SHIFT_S))))
        elif kind == "swapped":
            pairs.append(_Pair(kind, partner=int(rng.choice(clean_train))))
        else:
            pairs.append(_Pair(kind, offscreen_class=str(rng.choice(SOUNDING_CLASSES)),
                               offscreen_onset_s=int(rng.integers(first, last + 1)) / fps))
    return pairs


def _offscreen_sound(pair: _Pair, *, seed: int, i: int, sample_rate: int) -> tuple[tuple[float, np.ndarray], ...]:
    """An off-screen pair's extra (onset_s, sound), drawn from its own ``spawn_key=(i, 3)``; else none."""
    if pair.offscreen_class is None or pair.offscreen_onset_s is None:
        return ()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 3)))
    sound = render_event_sound(pair.offscreen_class, sample_rate=sample_rate, rng=rng) * rng.uniform(*EVENT_GAIN)
    return ((pair.offscreen_onset_s, sound.astype(np.float32)),)


def _swap_audio(video: Path, donor: Path) -> None:
    """Replace ``video``'s audio track with ``donor``'s, both streams copied (no re-encode)."""
    tmp = video.with_name(video.stem + ".swap.mp4")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(donor),
        "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-fflags", "+bitexact", "-map_metadata", "-1", str(tmp),
    ]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg failed swapping audio into {video}: {msg[-1] if msg else proc.returncode}")
    tmp.replace(video)


_PAIRS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("pair", pa.string()),
        ("shift_s", pa.float64()),
        ("partner", pa.string()),
        ("offscreen_class", pa.string()),
        ("offscreen_onset_s", pa.float64()),
    ]
)


# --- the dataset ----------------------------------------------------------------------------------------


def _check_args(
    *,
    clips: int,
    duration_s: float,
    fps: float,
    size: int,
    sample_rate: int,
    test_fraction: float,
    audio_codec: str,
    noisy_share: float = 0.0,
) -> None:
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips!r}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 32 (yuv420p), got {size!r}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate} too low for the event sounds; use >= {MIN_SAMPLE_RATE}")
    if not 0.0 < test_fraction <= 1.0:  # 1.0: a test set only (every clip in the test split)
        raise ValueError(f"test_fraction must be in (0, 1], got {test_fraction!r}")
    if not 0.0 <= noisy_share <= 1.0:
        raise ValueError(f"noisy_share must be in [0, 1], got {noisy_share!r}")
    if audio_codec not in AUDIO_CODECS:
        raise ValueError(f"unknown audio_codec {audio_codec!r}; choose one of {sorted(AUDIO_CODECS)}")
    first, last, _ = _onset_window(duration_s, fps)
    if last < first:
        raise ValueError(
            f"duration_s={duration_s} too short for an event: onsets must lie on a frame in "
            f"[{ONSET_MIN_S}, duration_s - {END_MARGIN_S}] s (fps={fps})"
        )


def world_kwargs(options: list[str] | tuple[str, ...] | None) -> dict[str, bool]:
    """``["lookalike", "moving"]`` -> ``{"lookalike": True, "moving": True}`` (generate_synth keywords, in
    WORLD_OPTIONS order; only the options that are on, so the default world keeps its version)."""
    unknown = sorted(set(options or ()) - set(WORLD_OPTIONS))
    if unknown:
        raise ValueError(f"unknown synthetic world option(s) {unknown}; known: {list(WORLD_OPTIONS)}")
    return {k: True for k in WORLD_OPTIONS if k in (options or ())}


def _test_split(clips: int, seed: int, test_fraction: float) -> np.ndarray:
    """(clips,) bool, True = test: the round(clips * fraction) clips with the smallest per-clip key.

    Each clip's key comes from its own seed, so growing ``clips`` moves few clips between splits.
    """
    keys = np.array(
        [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 1))).random() for i in range(clips)]
    )
    n_test = round(clips * test_fraction)
    if clips >= 2 and test_fraction < 1.0:  # both splits non-empty unless a pure test set is asked for
        n_test = min(max(n_test, 1), clips - 1)
    is_test = np.zeros(clips, dtype=bool)
    is_test[np.argsort(keys, kind="stable")[:n_test]] = True
    return is_test


_BOXES_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("frame", pa.int32()),
        ("t_s", pa.float64()),
        ("kind", pa.string()),  # ball | sounding | silent
        ("class", pa.string()),
        ("x0", pa.float64()),
        ("y0", pa.float64()),
        ("x1", pa.float64()),
        ("y1", pa.float64()),
    ]
)
_EVENTS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("onset_s", pa.float64()),
        ("offset_s", pa.float64()),
        ("class", pa.string()),
        ("sounding", pa.bool_()),
        ("x", pa.float64()),
        ("y", pa.float64()),
    ]
)


def generate_synth(
    out_dir: str | Path,
    *,
    clips: int,
    seed: int = 0,
    duration_s: float = 3.0,
    fps: float = 25.0,
    size: int = 128,
    sample_rate: int = 22050,
    test_fraction: float = 0.2,
    audio_codec: str = "aac",
    noisy_share: float = 0.0,
    lookalike: bool = False,
    overlap: bool = False,
    moving: bool = False,
    progress: bool = False,
) -> SynthResult:
    """Write ``clips`` synthetic audio-visual clips with ground-truth events to ``out_dir``; ``noisy_share``
    of the train clips (in expectation) are noisy pairs; ``lookalike`` / ``overlap`` / ``moving``: the harder
    worlds (module docstring)."""
    _check_args(
        clips=clips, duration_s=duration_s, fps=fps, size=size, sample_rate=sample_rate,
        test_fraction=test_fraction, audio_codec=audio_codec, noisy_share=noisy_share,
    )  # fmt: skip
    out_dir = Path(out_dir)
    video_dir = out_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    n_frames = frame_count(duration_s, fps)  # the clip geometry's rules: decode cuts the same windows
    n_samples = sample_count(duration_s, sample_rate)
    is_test = _test_split(clips, seed, test_fraction)
    pairs = _plan_pairs(is_test, seed=seed, noisy_share=noisy_share, duration_s=duration_s, fps=fps)

    videos: list[Path] = []
    labels: list[tuple[str, int, str, str]] = []
    rows: dict[str, list] = {name: [] for name in _EVENTS_SCHEMA.names}
    boxes: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="vta-synth-") as tmp:
        wav = Path(tmp) / "audio.wav"
        for i in track(range(clips), description="synth", disable=not progress):
            clip_id = f"synth{seed}_{i:05d}"
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 0)))
            events = _plan_clip(rng, duration_s=duration_s, fps=fps, size=size, sample_rate=sample_rate,
                                lookalike=lookalike, overlap=overlap, moving=moving)
            frames, ball = _render_video(events, rng, n_frames=n_frames, fps=fps, size=size)
            boxes.extend(_box_rows(clip_id, events, ball, fps=fps, size=size))
            audio = _render_audio(events, rng, n_samples=n_samples, sample_rate=sample_rate,
                                  extra=_offscreen_sound(pairs[i], seed=seed, i=i, sample_rate=sample_rate))
            if pairs[i].shift_s is not None:  # the clip's own audio, moved (wrapping around)
                audio = np.roll(audio, round(pairs[i].shift_s * sample_rate))
            sf.write(wav, audio, sample_rate, subtype="FLOAT")
            path = video_dir / f"{clip_id}.mp4"
            _encode_mp4(frames, wav, path, fps=fps, sample_rate=sample_rate, audio_codec=audio_codec)
            videos.append(path)
            first_sounding = next(ev.cls for ev in events if ev.sound is not None)
            labels.append((clip_id, 0, first_sounding, "test" if is_test[i] else "train"))
            for ev in events:
                for name, value in zip(
                    _EVENTS_SCHEMA.names,
                    (clip_id, ev.onset_s, ev.offset_s, ev.cls, ev.sound is not None, ev.x, ev.y),
                    strict=True,
                ):
                    rows[name].append(value)
        for i, pair in enumerate(pairs):  # after every clip is written: swapped pairs take a clean clip's track
            if pair.partner is not None:
                _swap_audio(videos[i], videos[pair.partner])

    labels_csv = out_dir / "labels.csv"
    with labels_csv.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(labels)
    events_parquet = out_dir / "events.parquet"
    pq.write_table(pa.table(rows, schema=_EVENTS_SCHEMA), events_parquet)
    pq.write_table(pa.Table.from_pylist([dict(zip(_BOXES_SCHEMA.names, r, strict=True)) for r in boxes],
                                        schema=_BOXES_SCHEMA), out_dir / "boxes.parquet")
    meta = {
        "params": {
            "clips": clips, "seed": seed, "duration_s": duration_s, "fps": fps, "size": size,
            "sample_rate": sample_rate, "test_fraction": test_fraction, "audio_codec": audio_codec,
            "n_frames": n_frames, "n_samples": n_samples,
        },
        "timing": {
            "onset_min_s": ONSET_MIN_S, "end_margin_s": END_MARGIN_S, "min_gap_s": MIN_GAP_S,
            "sounding_events_per_clip": [1, 4], "silent_events_per_clip": [0, 2],
            "silent_duration_s": list(SILENT_DURATION_S), "onsets_on_frame_grid": True,
        },
        "classes": {
            name: {"sounding": look.sound is not None, "shape": look.shape, "rgb": list(look.rgb), "sound": look.sound}
            for name, look in CLASS_TABLE.items()
        },
        "distractor": f"grey ball (radius {BALL_RADIUS} x size) bouncing off the frame edges in every clip, silent",
        "noise": {
            "pixel_std": list(PIXEL_NOISE_STD), "background_tint": [15, 75],
            "audio": "pink noise", "audio_dbfs": list(NOISE_DBFS), "audio_peak_limit": AUDIO_PEAK_LIMIT,
        },
        "boxes": f"boxes.parquet: per frame (at {fps:g} fps, {size}x{size} px) the box of the ball and of each "
                 "visible object (kind sounding / silent), x0 y0 x1 y1 in pixels",
        "splits": {"train": int((~is_test).sum()), "test": int(is_test.sum())},
        "n_events": {"sounding": int(sum(rows["sounding"])), "silent": len(rows["sounding"]) - int(sum(rows["sounding"]))},
    }  # fmt: skip
    if noisy_share > 0:  # only a noisy world records it: the clean world's files stay as they were
        ids = [p.stem for p in videos]
        pq.write_table(pa.table({
            "clip_id": ids, "pair": [p.kind for p in pairs], "shift_s": [p.shift_s for p in pairs],
            "partner": [None if p.partner is None else ids[p.partner] for p in pairs],
            "offscreen_class": [p.offscreen_class for p in pairs],
            "offscreen_onset_s": [p.offscreen_onset_s for p in pairs],
        }, schema=_PAIRS_SCHEMA), out_dir / "pairs.parquet")  # fmt: skip
        meta["params"]["noisy_share"] = noisy_share
        meta["noisy_pairs"] = {
            "split": "train only (test clips are clean)", "shift_s": list(SHIFT_S),
            "kinds": {k: sum(p.kind == k for p in pairs) for k in ("clean", *NOISY_KINDS)},
        }
    options = {k: True for k, on in (("lookalike", lookalike), ("overlap", overlap), ("moving", moving)) if on}
    if options:  # only a harder world records them: the default world's synth.json stays as it was
        meta["params"].update(options)
        meta["world"] = {
            **({"lookalike": {"looks": {c: LOOKALIKE.get(c, c) for c in SOUNDING_CLASSES},
                              "one_sounding_class_per_clip": True}} if lookalike else {}),
            **({"overlap": {"min_gap_s": OVERLAP_GAP_S, "sounding_events_per_clip": list(OVERLAP_SOUNDING)}}
               if overlap else {}),
            **({"moving": {"speed_frames_per_s": list(MOVE_SPEED), "edges": "bounce",
                           "events_xy": "onset position"}} if moving else {}),
        }
    (out_dir / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return SynthResult(out_dir, videos, labels_csv, events_parquet, clips)
