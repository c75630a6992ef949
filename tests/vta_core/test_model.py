import pytest
import torch

from vta_core.model import ModelConfig, VTAModel
from vta_core.presets import build_model, get_preset


def _batch(B=4, seed=0):
    g = get_preset("tiny").geometry
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
        loss = model.loss(batch, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_loss_is_reproducible_and_condition_dropout_trains_the_null_condition():
    batch, other = _batch(seed=0), _batch(seed=0)
    other["vision"] = torch.randn_like(other["vision"])  # same latents, different video
    model = build_model("tiny", cond_dropout=0.0)
    a = model.loss(batch, generator=torch.Generator().manual_seed(3))
    assert a.item() == model.loss(batch, generator=torch.Generator().manual_seed(3)).item()
    assert a.item() != model.loss(other, generator=torch.Generator().manual_seed(3)).item()
    # every row dropped (p = 0.99, this seed drops all 4): the video no longer matters
    model = build_model("tiny", cond_dropout=0.99)
    a = model.loss(batch, generator=torch.Generator().manual_seed(3))
    assert a.item() == model.loss(other, generator=torch.Generator().manual_seed(3)).item()


def test_projection_receives_gradients():
    model = build_model("tiny", cond_dropout=0.0)
    model.loss(_batch(), generator=torch.Generator().manual_seed(0)).backward()
    assert model.conditioner.vision_proj.weight.grad.abs().sum() > 0
    assert model.conditioner.aligned_proj.weight.grad.abs().sum() > 0


def test_audio_only_condition_is_null_unless_text():
    model = build_model("tiny")
    batch = _batch()
    cond = model.condition(batch, latent_frames=32, use_vision=False)
    assert cond.tokens.abs().max() == 0 and cond.aligned.abs().max() == 0
    with_text = build_model("tiny", text_dim=6)
    batch["text"] = torch.randn(4, 2, 6)
    cond = with_text.condition(batch, latent_frames=32, use_vision=False)
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
        model.loss({"latents": torch.zeros(1, 4, 8, 8)})
