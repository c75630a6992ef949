"""Reading media: probe a container (PyAV) and decode one stream per FFmpeg pass.

FFmpeg comes from PyPI (``imageio-ffmpeg`` ships a static binary), so nothing needs root. Frame
rate, scaling and cropping run as FFmpeg filters inside one pass per stream; FFmpeg also applies
the container's rotation (display matrix) before the filters.

The two audio readers share one FFmpeg runner: :func:`read_audio` (mono at a given rate, down-mix
and resampling by FFmpeg: what decode, evaluation and the audio tests read) and
:func:`read_audio_native` (native rate, channels averaged as ``librosa.load`` does: what AV-Align reads).
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import ffmpeg
import numpy as np
import soundfile as sf

from vta_core.errors import ItemError


class MediaError(ItemError):
    """A media file that cannot be used; ``error_type`` is the manifest's error class."""


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped by ``imageio-ffmpeg``."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a file."""

    duration_s: float
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None


def probe(path: str | Path) -> MediaInfo:
    """Read stream facts from the container; raises MediaError with error_type broken_link,
    not_a_file, empty_file, permission_denied, undecodable_video or unreadable (not a container
    FFmpeg can parse: random bytes, text, a truncated MP4 without its index)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():  # dangling, or a loop (ELOOP)
        raise MediaError("broken_link", f"symbolic link that resolves to no file: {path}")
    if not path.is_file():  # FIFOs, sockets, devices: reading one could block forever
        raise MediaError("not_a_file", f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise MediaError("empty_file", f"empty file (0 bytes): {path}")
    if not os.access(path, os.R_OK):
        raise MediaError("permission_denied", f"no read permission: {path}")
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            video = next((s for s in c.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)
            audio = next(iter(c.streams.audio), None)
            duration = c.duration / av.time_base if c.duration else 0.0
            if not duration:
                lengths = [float(s.duration * s.time_base) for s in (video, audio) if s is not None and s.duration]
                duration = max(lengths, default=0.0)
            rotation = 0
            if video is not None:
                try:
                    frame = next(c.decode(video=video.index))
                    rotation = int(round(getattr(frame, "rotation", 0) or 0))
                except (StopIteration, av.FFmpegError):
                    raise MediaError("undecodable_video", f"no decodable video frame in {path.name}") from None
            rate = (video.average_rate or video.guessed_rate) if video is not None else None
            return MediaInfo(
                duration_s=float(duration),
                has_video=video is not None,
                has_audio=audio is not None,
                video_codec=video.codec_context.name if video is not None else None,
                fps=float(rate) if rate else None,
                width=video.codec_context.width if video is not None else None,
                height=video.codec_context.height if video is not None else None,
                rotation=rotation,
                audio_codec=audio.codec_context.name if audio is not None else None,
                audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
                audio_channels=audio.codec_context.channels if audio is not None else None,
            )
    except MediaError:
        raise
    except PermissionError as e:
        raise MediaError("permission_denied", f"cannot open {path.name}: {e}") from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
        raise MediaError("unreadable", f"cannot open {path.name}: {e}") from None


def _run(cmd: list[str], *, timeout_s: float | None, what: str, error_type: str = "ffmpeg_error") -> bytes:
    """Run FFmpeg, return its stdout; MediaError ``timeout`` or ``error_type`` (its last stderr line)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError("timeout", f"{what}: FFmpeg took longer than {timeout_s:g} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(error_type, f"{what}: {err[-1] if err else f'exit code {proc.returncode}'}")
    return proc.stdout


def read_frames(
    path: str | Path, *, fps: float, size: int, start_s: float = 0.0, duration_s: float | None = None,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """One FFmpeg pass: frames at ``fps``, resized (shorter side -> size, bicubic) and centre-cropped.

    Returns uint8 (N, size, size, 3) RGB.
    """
    kwargs = {"ss": f"{start_s:.6f}"} if start_s > 0 else {}
    if duration_s is not None:
        kwargs["t"] = f"{duration_s:.6f}"
    stream = (
        ffmpeg.input(str(path), **kwargs)
        .video.filter("fps", fps=fps)
        .filter("scale", size, size, force_original_aspect_ratio="increase", flags="bicubic")
        .filter("crop", size, size)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", an=None)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    )
    raw = _run(stream.compile(cmd=ffmpeg_exe()), timeout_s=timeout_s, what="video")
    frame_bytes = size * size * 3
    return np.frombuffer(raw[: len(raw) // frame_bytes * frame_bytes], np.uint8).reshape(-1, size, size, 3)


def read_audio(
    path: str | Path, *, sample_rate: int, start_s: float = 0.0, duration_s: float | None = None,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """One FFmpeg pass: the first audio stream down-mixed to mono at ``sample_rate``; float32 (N,)."""
    kwargs = {"ss": f"{start_s:.6f}"} if start_s > 0 else {}
    if duration_s is not None:
        kwargs["t"] = f"{duration_s:.6f}"
    stream = (
        ffmpeg.input(str(path), **kwargs)
        .audio.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, vn=None)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    )
    raw = _run(stream.compile(cmd=ffmpeg_exe()), timeout_s=timeout_s, what="audio")
    return np.frombuffer(raw[: len(raw) // 4 * 4], np.float32).copy()


def read_audio_native(path: str | Path, *, timeout_s: float | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream at its native rate, channels averaged: (float32 (N,), sample_rate).

    As ``librosa.load(path, sr=None)``: files libsndfile reads (wav, flac, ogg, mp3) go straight
    through soundfile; containers are first decoded by FFmpeg to a float WAV at the native rate and
    channel layout (FFmpeg applies the container's edit list: encoder priming and padding are
    trimmed); then ``librosa.to_mono``. Raises FileNotFoundError, or MediaError ``unreadable_audio``,
    ``no_audio_stream`` or ``timeout``.
    """
    from vta_core.librosa_import import librosa  # first use loads it (under a lock)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except sf.LibsndfileError:
        y, sr = _ffmpeg_wav(path, timeout_s=timeout_s)
    return np.ascontiguousarray(librosa.to_mono(y.T)), int(sr)


def _ffmpeg_wav(path: Path, *, timeout_s: float | None) -> tuple[np.ndarray, int]:
    """The first audio stream through a temporary float WAV: (float32 (N, C), rate as FFmpeg wrote it)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            has_audio = bool(container.streams.audio)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError("unreadable_audio", f"cannot open {path.name}: {e}") from None
    if not has_audio:
        raise MediaError("no_audio_stream", f"{path.name} has no audio stream")
    with tempfile.TemporaryDirectory(prefix="vta-audio-") as tmp:
        wav = Path(tmp) / "audio.wav"
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
               "-map", "0:a:0", "-vn", "-c:a", "pcm_f32le", "-rf64", "auto", str(wav)]  # fmt: skip
        what = f"FFmpeg cannot decode audio of {path.name}"
        _run(cmd, timeout_s=timeout_s, what=what, error_type="unreadable_audio")
        if not wav.is_file():
            raise MediaError("unreadable_audio", f"{what}: no output")
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)  # (N, C)
    return y, int(sr)


def peak_dbfs(audio: np.ndarray) -> float:
    """Peak level in dBFS (-inf for digital silence)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf
