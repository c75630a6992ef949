"""Videos -> frames -> frame features with decoding overlapped with encoding.

:func:`decode_ahead` decodes videos on worker threads (FFmpeg decodes in its own processes, so threads
decode in parallel while this thread encodes or generates), at most ``depth`` videos ahead, yielding in
input order. :func:`encode_videos` feeds the decoded frames of consecutive videos to a frozen encoder in
batches that span videos (bf16 on CUDA: vta_core.vision), so the device waits neither for FFmpeg nor for
small per-video batches. A video that cannot be read is yielded with its one-line error; the others go on.
"""

from __future__ import annotations

import subprocess
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from vta_core.geometry import ClipGeometry, frame_count
from vta_core.media import MediaError, probe, read_frames
from vta_core.vision import VisionEncoder, encode_clips

T = TypeVar("T")
READ_ERRORS = (MediaError, ValueError, OSError, subprocess.TimeoutExpired)  # a bad file, never a crashed batch


def video_frames(path: str | Path, *, geometry: ClipGeometry, duration_s: float | None = None) -> tuple[np.ndarray, float]:
    """uint8 (T, S, S, 3) frames at the geometry's fps of ``seconds`` (the video's duration, or ``duration_s``
    when shorter), T = floor(seconds · fps) (frame k shows k / fps); raises MediaError for unusable files."""
    name = Path(path).name
    info = probe(path)
    if not info.has_video:
        raise MediaError("no_video_stream", f"{name} has no video stream")
    seconds = info.duration_s if duration_s is None else min(duration_s, info.duration_s or duration_s)
    if seconds <= 0:
        raise MediaError("unreadable", f"{name}: duration is {seconds} s")
    frames = read_frames(path, fps=geometry.fps, size=geometry.frame_size, duration_s=seconds)
    if len(frames) == 0:
        raise MediaError("undecodable_video", f"{name}: FFmpeg produced no video frames")
    need = frame_count(seconds, geometry.fps)  # the frame rule: floor(seconds · fps)
    if len(frames) < need:  # FFmpeg's fps filter rounds: repeat the last frame (extras are cut below)
        frames = np.concatenate([frames, np.repeat(frames[-1:], need - len(frames), axis=0)])
    return np.array(frames[:need]), seconds  # a writable copy (FFmpeg's buffer is read-only)


def decode_ahead(paths: Sequence[str | Path], read: Callable[[Path], T], *, workers: int = 4,
                 depth: int | None = None) -> Iterator[tuple[Path, T | Exception]]:
    """``(path, read(path))`` for each path in order, ``read`` running on ``workers`` threads at most
    ``depth`` (default 2 × workers) videos ahead of the consumer; an error of :data:`READ_ERRORS` is
    yielded in place of the result."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    depth = depth or 2 * workers
    todo = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vta-decode") as pool:
        queue: deque[tuple[Path, Future]] = deque()
        nxt = 0
        while nxt < len(todo) or queue:
            while nxt < len(todo) and len(queue) < depth:
                queue.append((todo[nxt], pool.submit(read, todo[nxt])))
                nxt += 1
            path, fut = queue.popleft()
            try:
                yield path, fut.result()
            except READ_ERRORS as e:
                yield path, e


def encode_videos(paths: Sequence[str | Path], *, encoder: VisionEncoder, geometry: ClipGeometry,
                  duration_s: float | None = None, workers: int = 4,
                  batch_frames: int = 256) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """(path, float32 (T, D) features of its frames at the geometry's fps and frame size) per video, in input
    order; frames of consecutive videos are encoded together once ``batch_frames`` are waiting (and at the
    end). Bad videos are yielded with their error."""
    def read(path: Path) -> np.ndarray:
        return video_frames(path, geometry=geometry, duration_s=duration_s)[0]

    waiting: list[tuple[Path, np.ndarray | Exception]] = []

    def flush() -> Iterator[tuple[Path, np.ndarray | Exception]]:
        good = [f for _, f in waiting if isinstance(f, np.ndarray)]
        emb = encode_clips(encoder, good) if good else None  # (ΣT, D)
        at = 0
        for path, f in waiting:
            if isinstance(f, np.ndarray):
                yield path, emb[at : at + len(f)]
                at += len(f)
            else:
                yield path, f
        waiting.clear()

    pending = 0
    for path, frames in decode_ahead(paths, read, workers=workers):
        waiting.append((path, frames))
        pending += len(frames) if isinstance(frames, np.ndarray) else 0
        if pending >= batch_frames:
            yield from flush()
            pending = 0
    yield from flush()
