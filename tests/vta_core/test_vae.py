"""Mel VAE: AudioLDM config, shapes per preset, save/reload, diffusers' own folder layout, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from mediafiles import DATA

from vta_core.audio import log_mel
from vta_core.media import read_audio
from vta_core.presets import get_preset
from vta_core.vae import AUDIOLDM_S_FULL, AudioVAE, load_vae, save_vae, train_vae

pytestmark = pytest.mark.usefixtures("one_thread", "offline")
TINY = get_preset("tiny").geometry


def test_paper_config_is_audioldm_s_full():
    cfg = get_preset("paper").vae
    assert cfg == AUDIOLDM_S_FULL
    assert cfg["block_out_channels"] == [128, 256, 512] and cfg["latent_channels"] == 8
    assert cfg["down_block_types"] == ["DownEncoderBlock2D"] * 3 and cfg["up_block_types"] == ["UpDecoderBlock2D"] * 3
    assert (cfg["in_channels"], cfg["out_channels"], cfg["layers_per_block"], cfg["norm_num_groups"]) == (1, 1, 2, 32)
    assert cfg["scaling_factor"] == 0.9227914214134216


def test_paper_shapes_on_meta_device():
    """Full paper geometry (1024x64 mel -> 8x256x16) without allocating or computing the 55 M weights."""
    g = get_preset("paper").geometry
    with torch.device("meta"):
        vae = AudioVAE(AutoencoderKL(**get_preset("paper").vae))
        mean, std = vae.encode(torch.empty(2, g.mel_frames, g.n_mels))
        mel = vae.decode(mean)
    assert mean.shape == std.shape == (2, *g.latent_shape) == (2, 8, 256, 16)
    assert mel.shape == (2, 1024, 64)
    assert 50e6 < sum(p.numel() for p in vae.parameters()) < 60e6  # AudioLDM s-full VAE: 55.4 M


@pytest.mark.parametrize("preset", ["demo", "tiny"])
def test_small_preset_shapes_match_geometry(preset, make_test_audio):
    g = get_preset(preset).geometry
    vae = get_preset(preset).build_vae().eval()
    assert (vae.latent_channels, vae.downsample) == (g.latent_channels, g.vae_downsample)
    mel = log_mel(make_test_audio(g.sample_rate, g.duration_s), g)[None]  # (1, T, F)
    with torch.no_grad():
        mean, std = vae.encode(mel)
        assert mean.shape == std.shape == (1, *g.latent_shape)
        assert (std > 0).all()
        assert vae.decode(mean).shape == (1, g.mel_frames, g.n_mels)


def test_build_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = get_preset("tiny").build_vae(seed=0), get_preset("tiny").build_vae(seed=0), get_preset("tiny").build_vae(seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert get_preset("tiny").build_vae(latent_channels=2).latent_channels == 2  # kwargs override the preset


@pytest.fixture
def mels(make_test_audio) -> torch.Tensor:
    """Four generated clips' log-mels, (4, 128, 80)."""
    return torch.stack([log_mel(make_test_audio(TINY.sample_rate, TINY.duration_s, seed=i), TINY) for i in range(4)])


def test_save_reload_gives_identical_outputs(tmp_path, mels):
    vae = get_preset("tiny").build_vae(seed=3).eval()
    vae.autoencoder.register_to_config(scaling_factor=0.77)
    save_vae(vae, tmp_path / "vae")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    again = load_vae(tmp_path / "vae")
    mel = mels[:2]
    with torch.no_grad():
        m1, s1 = vae.encode(mel)
        m2, s2 = again.encode(mel)
        assert torch.equal(m1, m2) and torch.equal(s1, s2)
        assert torch.equal(vae.decode(m1), again.decode(m2))
    assert again.scaling_factor == 0.77 and again.latent_channels == 4


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_loads_a_folder_written_by_diffusers_itself(tmp_path, safe, mels):
    """The real cvssp/audioldm-s-full-v2 vae/ layout: AutoencoderKL.save_pretrained + its scaling_factor."""
    cfg = {**AUDIOLDM_S_FULL, "block_out_channels": [32, 32, 32], "scaling_factor": 0.9392935633659363}
    torch.manual_seed(0)
    reference = AutoencoderKL(**cfg).eval()
    reference.save_pretrained(tmp_path, safe_serialization=safe)
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    vae = load_vae(tmp_path)
    assert vae.scaling_factor == 0.9392935633659363 and vae.latent_channels == 8
    mel = mels[:1, :64, :64]  # (1, 64, 64)
    with torch.no_grad():
        expected = reference.encode(mel[:, None]).latent_dist
        mean, std = vae.encode(mel)
        assert torch.equal(mean, expected.mean) and torch.equal(std, expected.std)
        assert torch.equal(vae.decode(mean), reference.decode(expected.mean).sample[:, 0])


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        load_vae(tmp_path / "missing_dir")
    AutoencoderKL(block_out_channels=[8], norm_num_groups=4, latent_channels=2).save_pretrained(tmp_path / "rgb")
    with pytest.raises(ValueError, match="in/out channels 3/3"):
        load_vae(tmp_path / "rgb")
    vae = get_preset("tiny").build_vae()
    with pytest.raises(ValueError, match=r"\(1, 30, 80\)"):
        vae.encode(torch.zeros(1, 30, 80))
    with pytest.raises(ValueError, match="4, t, f"):
        vae.decode(torch.zeros(1, 8, 8, 20))


def test_training_reduces_reconstruction_loss_on_real_and_generated_mels(make_test_audio):
    torch.manual_seed(0)
    real = read_audio(DATA / "debian_imageio_realshort.mp4", sample_rate=TINY.sample_rate)
    windows = [real[i : i + 16384] for i in range(0, len(real) - 16384, 4096)]  # 0.74 s windows
    gen = [make_test_audio(TINY.sample_rate, 0.75, seed=s)[:16384] for s in range(6)]
    mels = log_mel(np.stack(windows + gen), TINY)  # (N, 64, 80)
    vae = get_preset("tiny").build_vae(seed=0)
    history = train_vae(vae, mels, steps=60, lr=5e-3, batch_size=4, crop_frames=32, seed=0)
    l1 = history["recon_l1"]
    assert len(l1) == len(history["loss"]) == len(history["kl"]) == 60
    start = np.mean(l1[:5])  # ~4.5 (log-mel units)
    assert np.mean(l1[-10:]) < 0.4 * start, (l1[:5], l1[-10:])  # measured: ~1.0
    assert history["scaling_factor"] == vae.scaling_factor and 0 < vae.scaling_factor < 100
    assert not vae.training
    with torch.no_grad():  # full-length clips through posterior means: the conv VAE was trained on crops
        mean, _ = vae.encode(mels)
        assert (vae.decode(mean) - mels).abs().mean() < 0.5 * start


def test_training_is_deterministic_and_accepts_batch_iterables(mels):
    mels = mels[:, :32]  # (4, 32, 80)
    runs = []
    for _ in range(2):
        vae = get_preset("tiny").build_vae(seed=1)
        runs.append(train_vae(vae, [mels[:2], mels[2:]], steps=3, seed=5)["loss"])
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="steps must be positive, got 0"):
        train_vae(get_preset("tiny").build_vae(), mels, steps=0)
    with pytest.raises(ValueError, match="crop_frames=30"):
        train_vae(get_preset("tiny").build_vae(), mels, steps=1, crop_frames=30)
    with pytest.raises(ValueError, match="exhausted"):
        train_vae(get_preset("tiny").build_vae(), iter([mels]), steps=2)


def test_delta_term_adds_the_frame_difference_error_and_on_step_sees_every_step(mels):
    mels = mels[:, :32]  # (4, 32, 80)
    runs, steps_seen = {}, []
    for weight in (0.0, 1.0):
        vae = get_preset("tiny").build_vae(seed=1)
        on_step = steps_seen.append if weight else None
        runs[weight] = train_vae(vae, mels, steps=2, seed=5, delta_weight=weight, on_step=on_step)
    # same draws, same first step: the loss differs only by the delta term, which is positive
    assert runs[1.0]["recon_l1"][0] == runs[0.0]["recon_l1"][0]
    assert runs[1.0]["loss"][0] > runs[0.0]["loss"][0]
    assert steps_seen == [1, 2]
    with pytest.raises(ValueError, match="delta_weight must be >= 0, got -1"):
        train_vae(get_preset("tiny").build_vae(), mels, steps=1, delta_weight=-1.0)
