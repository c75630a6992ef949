import dataclasses

import pytest
import torch

from vta_core.diffusion import loss_weights
from vta_core.model import ModelConfig, VTAModel
from vta_core.presets import build_model, get_preset

G = get_preset("tiny").geometry


def _batch(B=4, seed=0):
    g = G
    gen = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(B, *g.latent_shape, generator=gen),
        "vision": torch.randn(B, g.num_frames, 32, generator=gen),
    }


@pytest.mark.parametrize("prediction_type,snr_gamma", [("epsilon", None), ("v_prediction", 5.0)])
def test_tiny_model_overfits_one_batch(prediction_type, snr_gamma):
    """Same batch, same (t, ε) every step: the loss must fall by >= 90%."""
    torch.set_num_threads(1)
    model = build_model("tiny", seed=0, prediction_type=prediction_type, snr_gamma=snr_gamma, cond_dropout=0.0)
    batch = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(60):
        loss = model.loss(batch, geometry=G, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_loss_is_reproducible_and_condition_dropout_trains_the_null_condition():
    batch, other = _batch(seed=0), _batch(seed=0)
    other["vision"] = torch.randn_like(other["vision"])  # same latents, different video
    model = build_model("tiny", cond_dropout=0.0)
    a = model.loss(batch, geometry=G, generator=torch.Generator().manual_seed(3))
    assert a.item() == model.loss(batch, geometry=G, generator=torch.Generator().manual_seed(3)).item()
    assert a.item() != model.loss(other, geometry=G, generator=torch.Generator().manual_seed(3)).item()
    # every row dropped (p = 0.99, this seed drops all 4): the video no longer matters
    model = build_model("tiny", cond_dropout=0.99)
    a = model.loss(batch, geometry=G, generator=torch.Generator().manual_seed(3))
    assert a.item() == model.loss(other, geometry=G, generator=torch.Generator().manual_seed(3)).item()


def test_projection_receives_gradients():
    model = build_model("tiny", cond_dropout=0.0)
    model.loss(_batch(), geometry=G, generator=torch.Generator().manual_seed(0)).backward()
    assert model.conditioner.vision_proj.weight.grad.abs().sum() > 0
    assert model.conditioner.aligned_proj.weight.grad.abs().sum() > 0


def test_audio_only_condition_is_null_unless_text():
    model = build_model("tiny")
    batch = _batch()
    cond = model.condition(batch, latent_frames=32, geometry=G, use_vision=False)
    assert cond.tokens.abs().max() == 0 and cond.aligned.abs().max() == 0
    with_text = build_model("tiny", text_dim=6)
    batch["text"] = torch.randn(4, 2, 6)
    cond = with_text.condition(batch, latent_frames=32, geometry=G, use_vision=False)
    assert cond.tokens.shape[1] == 2 and cond.tokens.abs().max() > 0


def test_config_round_trip_and_errors():
    c = ModelConfig(block_out_channels=[32, 64], attention_head_dim=[2, 2])
    assert c.block_out_channels == (32, 64)
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="cond_dropout"):
        ModelConfig(cond_dropout=1.5)
    model = VTAModel(ModelConfig(), empty=True)
    with pytest.raises(ValueError, match=r"latents must be \(B, 8, T, F\)"):
        model.loss({"latents": torch.zeros(1, 4, 8, 8)}, geometry=get_preset("paper").geometry)
    with pytest.raises(ValueError, match=r"snr_weighting must be None or one of \('epsilon', 'v_prediction'\), got 'eps'"):
        ModelConfig(snr_weighting="eps")
    with pytest.raises(ValueError, match="snr_gamma must be positive or None, got 0"):
        ModelConfig(snr_gamma=0)


def test_condition_places_frames_at_the_geometry_timestamps():
    """The aligned path puts frame k at k/fps on the latent axis of the geometry passed in."""
    model = build_model("tiny", cond_dropout=0.0)
    with torch.no_grad():
        model.conditioner.aligned_proj.weight.zero_()
        model.conditioner.aligned_proj.bias.zero_()
        model.conditioner.aligned_proj.weight[0, 0] = 1.0  # channel 0 = feature 0 of the frame
    for g in (G, dataclasses.replace(G, fps=8.0)):  # 5 frames at 4 fps span 1 s, at 8 fps 0.5 s
        vision = torch.zeros(1, g.num_frames, 32)
        vision[0, 3, 0] = 1.0
        with torch.no_grad():
            a = model.condition({"vision": vision}, latent_frames=g.latent_frames, geometry=g).aligned[0, 0]
        peak_s = (a.argmax().item() + 0.5) / g.latent_frame_rate
        assert abs(peak_s - 3 / g.fps) <= 0.5 / g.latent_frame_rate, (g.fps, peak_s)


def test_the_release_weights_v_with_the_epsilon_form():
    """snr_weighting="epsilon" with a v target: min(SNR, 5)/SNR (the release), not min(SNR, 5)/(SNR + 1)."""
    release = build_model("tiny", prediction_type="v_prediction", snr_gamma=5.0, snr_weighting="epsilon")
    paper_form = build_model("tiny", prediction_type="v_prediction", snr_gamma=5.0)
    t = torch.tensor([0, 100, 500, 999])
    s = release.scheduler.alphas_cumprod[t] / (1 - release.scheduler.alphas_cumprod[t])
    w = loss_weights(release.scheduler, t, 5.0, release.config.snr_weighting)
    torch.testing.assert_close(w, torch.clamp(s, max=5) / s)
    assert not torch.allclose(w, loss_weights(paper_form.scheduler, t, 5.0, paper_form.config.snr_weighting))
    # and model.loss uses it: the same draws, different weights -> different losses
    batch = _batch()
    a = release.loss(batch, geometry=G, generator=torch.Generator().manual_seed(1))
    b = paper_form.loss(batch, geometry=G, generator=torch.Generator().manual_seed(1))
    assert a.item() != b.item()
