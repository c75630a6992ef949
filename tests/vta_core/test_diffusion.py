import pytest
import torch

from vta_core.diffusion import guided, loss_weights, snr, snr_weight_formula, target, training_scheduler


def _sched(prediction_type):
    return training_scheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type=prediction_type, steps_offset=0)


def test_schedule_is_scaled_linear_0_00085_to_0_012():
    s = _sched("epsilon")
    assert s.betas[0].item() == pytest.approx(0.00085, rel=1e-5)
    assert s.betas[-1].item() == pytest.approx(0.012, rel=1e-5)
    assert torch.allclose(s.betas.sqrt().diff(), s.betas.sqrt().diff()[0].expand(999), atol=1e-7)


def test_v_target_and_min_snr_weights():
    t = torch.tensor([0, 300, 999])
    z0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sv = _sched("v_prediction")
    abar = sv.alphas_cumprod[t].view(3, 1, 1, 1)
    torch.testing.assert_close(target(sv, z0, eps, t), abar.sqrt() * eps - (1 - abar).sqrt() * z0)
    torch.testing.assert_close(target(_sched("epsilon"), z0, eps, t), eps)

    s = snr(sv, t)
    torch.testing.assert_close(s, (abar / (1 - abar)).flatten())
    assert s[0] > 5 > s[2]  # small t: clipped; large t: weight ~1 for ε
    torch.testing.assert_close(loss_weights(_sched("epsilon"), t, 5.0), torch.clamp(s, max=5) / s)
    torch.testing.assert_close(loss_weights(sv, t, 5.0), torch.clamp(s, max=5) / (s + 1))
    assert loss_weights(sv, t, None).tolist() == [1.0, 1.0, 1.0]
    # an explicit form overrides the prediction type's: the release's ε form on a v target
    torch.testing.assert_close(loss_weights(sv, t, 5.0, "epsilon"), torch.clamp(s, max=5) / s)
    torch.testing.assert_close(loss_weights(_sched("epsilon"), t, 5.0, "v_prediction"), torch.clamp(s, max=5) / (s + 1))
    with pytest.raises(ValueError, match="got 'min_snr'"):
        loss_weights(sv, t, 5.0, "min_snr")
    assert snr_weight_formula(5.0, "epsilon", "v_prediction") == "min(SNR, 5)/SNR"
    assert snr_weight_formula(5.0, None, "v_prediction") == "min(SNR, 5)/(SNR + 1)"
    assert snr_weight_formula(None, None, "epsilon") == "1"


def test_guidance_equation_2():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(guided(c, u, 3.0), torch.tensor([3 * 1.0 - 2 * 0.5, 3 * 2.0 - 2 * -1.0]))
    torch.testing.assert_close(guided(c, u, 1.0), c)
    torch.testing.assert_close(guided(c, u, 0.0), u)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="'sample'"):
        _sched("sample")
