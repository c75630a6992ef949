import pytest
import torch

from vta_core.conditioning import Condition, Conditioner, sinusoidal_embedding


def _conditioner(**kw):
    torch.manual_seed(0)
    args = dict(vision_dim=6, cross_attention_dim=8, text_dim=4, flow_dim=3, position_embedding=True, aligned_channels=2)
    return Conditioner(**{**args, **kw})


def test_token_layout_masks_and_aligned_shape():
    c = _conditioner()
    vision = torch.randn(2, 5, 6)
    vmask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    cond = c(vision, latent_frames=12, vision_mask=vmask, text=torch.randn(2, 3, 4), flow=torch.randn(2, 5, 3))
    assert cond.tokens.shape == (2, 3 + 5 + 5, 8)  # [text, vision, flow]
    assert cond.mask.shape == (2, 13)
    assert cond.mask[0, 3:8].tolist() == [True, True, True, False, False]
    assert cond.aligned.shape == (2, 2, 12)


def test_position_embedding_added_before_projection():
    c = _conditioner(text_dim=0, flow_dim=0, aligned_channels=0)
    vision = torch.randn(1, 5, 6)
    tokens = c(vision, latent_frames=4).tokens
    expected = c.vision_proj(vision + sinusoidal_embedding(5, 6))
    torch.testing.assert_close(tokens, expected)
    pe = sinusoidal_embedding(3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0] and pe[1, 0] == pytest.approx(torch.sin(torch.tensor(1.0)).item())


def test_aligned_path_follows_frame_timing_and_ignores_padding():
    c = _conditioner(text_dim=0, flow_dim=0, position_embedding=False)
    vision = torch.zeros(1, 4, 6)
    vision[0, 3] = 5.0  # an event in the last frame only
    with torch.no_grad():
        c.aligned_proj.bias.zero_()
        a = c(vision, latent_frames=16).aligned[0, 0]  # (16,)
        masked = c(vision, latent_frames=16, vision_mask=torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)).aligned
    assert a[:8].abs().max() == 0 and a[-2:].abs().min() > 0  # nonzero only at the end of the latent axis
    assert masked.abs().max() == 0  # the padded frame contributes nothing


def test_dropout_rows_become_the_null_condition():
    c = _conditioner()
    args = dict(latent_frames=8, text=torch.randn(3, 2, 4), flow=torch.randn(3, 5, 3))
    vision = torch.randn(3, 5, 6)
    full = c(vision, **args)
    dropped = c(vision, drop=torch.tensor([False, True, False]), **args)
    null = full.null()
    torch.testing.assert_close(dropped.tokens[1], null.tokens[1])
    assert dropped.tokens[1].abs().max() == 0 and dropped.aligned[1].abs().max() == 0
    assert dropped.mask[1].all()
    torch.testing.assert_close(dropped.tokens[[0, 2]], full.tokens[[0, 2]])


def test_null_condition_for_batches_without_inputs_and_cat():
    c = _conditioner()
    n = c.null(2, latent_frames=6)
    assert n.tokens.shape == (2, 1, 8) and n.aligned.shape == (2, 2, 6) and n.mask.all()
    both = n.cat(n)
    assert isinstance(both, Condition) and both.tokens.shape[0] == 4
    with pytest.raises(ValueError, match="cannot batch"):
        n.cat(Condition(torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool), None))


def test_errors_name_the_bad_value():
    c = _conditioner(text_dim=0)
    with pytest.raises(ValueError, match=r"\(B, T, 6\), got \(2, 5, 7\)"):
        c(torch.randn(2, 5, 7), latent_frames=4)
    with pytest.raises(ValueError, match="text_dim=0"):
        c(torch.randn(2, 5, 6), latent_frames=4, text=torch.randn(2, 1, 4))
    with pytest.raises(ValueError, match="at least one"):
        c(None, latent_frames=4)
    with pytest.raises(ValueError, match="even vision_dim"):
        Conditioner(vision_dim=5, cross_attention_dim=8, position_embedding=True)
