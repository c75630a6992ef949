"""The audio readers of vta_core.media: resampled mono (FFmpeg) and native rate (AV-Align's librosa.load)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from mediafiles import DATA, make_clip

from vta_core.media import MediaError, read_audio, read_audio_native

CLIP = DATA / "debian_imageio_realshort.mp4"  # 48 kHz mono AAC, 1.2 s


def test_read_audio_resamples_and_downmixes(tmp_path):
    for sr in (16000, 22050):
        y = read_audio(CLIP, sample_rate=sr)
        assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) / sr - 1.2) < 0.1
    window = read_audio(CLIP, sample_rate=16000, start_s=0.5, duration_s=0.25)
    assert len(window) == 4000
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"not a media file")
    with pytest.raises(MediaError, match="Invalid data") as e:
        read_audio(bad, sample_rate=16000)
    assert e.value.error_type == "ffmpeg_error"


def test_read_audio_native_keeps_the_rate_and_averages_channels(tmp_path):
    stereo = np.random.default_rng(0).standard_normal((2205, 2)).astype(np.float32) * 0.1
    sf.write(tmp_path / "stereo.wav", stereo, 22050, subtype="FLOAT")  # libsndfile reads it directly
    y, sr = read_audio_native(tmp_path / "stereo.wav")
    assert sr == 22050 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, stereo.T.mean(axis=0))
    y, sr = read_audio_native(CLIP)  # a container: FFmpeg -> float WAV at the native rate
    assert sr == 48000 and y.dtype == np.float32 and y.ndim == 1 and abs(len(y) / sr - 1.2) < 0.1


def test_read_audio_native_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_audio_native(tmp_path / "nope.wav")
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"not a media file")
    with pytest.raises(MediaError) as e:
        read_audio_native(bad)
    assert e.value.error_type == "unreadable_audio" and "junk.mp4" in str(e.value)
    video_only = make_clip(tmp_path / "video_only.mp4", seconds=0.4, audio_rate=None)
    with pytest.raises(MediaError, match="has no audio stream") as e:
        read_audio_native(video_only)
    assert e.value.error_type == "no_audio_stream"
