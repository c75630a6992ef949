import pytest
import torch
import torch.nn.functional as F

from vta_core.conditioning import Condition, Conditioner, align_to_latents, sinusoidal_embedding
from vta_core.presets import get_preset

RATES = dict(fps=4.0, latent_frame_rate=16.0)  # frame k at k/4 s, latent frame j centred at (j + 0.5)/16 s


def _conditioner(**kw):
    torch.manual_seed(0)
    args = dict(vision_dim=6, cross_attention_dim=8, text_dim=4, flow_dim=3, position_embedding=True, aligned_channels=2)
    return Conditioner(**{**args, **kw})


def test_token_layout_masks_and_aligned_shape():
    c = _conditioner()
    vision = torch.randn(2, 5, 6)
    vmask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    cond = c(vision, latent_frames=12, **RATES, vision_mask=vmask, text=torch.randn(2, 3, 4), flow=torch.randn(2, 5, 3))
    assert cond.tokens.shape == (2, 3 + 5 + 5, 8)  # [text, vision, flow]
    assert cond.mask.shape == (2, 13)
    assert cond.mask[0, 3:8].tolist() == [True, True, True, False, False]
    assert cond.aligned.shape == (2, 2, 12)


def test_position_embedding_added_before_projection():
    c = _conditioner(text_dim=0, flow_dim=0, aligned_channels=0)
    vision = torch.randn(1, 5, 6)
    tokens = c(vision, latent_frames=4, **RATES).tokens
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
        a = c(vision, latent_frames=16, **RATES).aligned[0, 0]  # (16,)
        masked = c(vision, latent_frames=16, **RATES, vision_mask=torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)).aligned
    # frame 3 shows t = 0.75 s: only latent frames centred after frame 2 (0.5 s) see it, the last ones fully
    assert a[:8].abs().max() == 0 and a[-2:].abs().min() > 0 and a[-1] == pytest.approx(5.0 * c.aligned_proj.weight[0].sum().item())
    assert masked.abs().max() == 0  # the padded frame contributes nothing


def test_dropout_rows_become_the_null_condition():
    c = _conditioner()
    args = dict(latent_frames=8, **RATES, text=torch.randn(3, 2, 4), flow=torch.randn(3, 5, 3))
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
        c(torch.randn(2, 5, 7), latent_frames=4, **RATES)
    with pytest.raises(ValueError, match="text_dim=0"):
        c(torch.randn(2, 5, 6), latent_frames=4, **RATES, text=torch.randn(2, 1, 4))
    with pytest.raises(ValueError, match="at least one"):
        c(None, latent_frames=4, **RATES)
    with pytest.raises(ValueError, match="even vision_dim"):
        Conditioner(vision_dim=5, cross_attention_dim=8, position_embedding=True)


def test_feature_norm_standardises_with_the_training_statistics():
    c = _conditioner(text_dim=0, flow_dim=0, position_embedding=False, feature_norm=True)
    frames = torch.randn(50, 6) * torch.tensor([0.1, 1, 2, 3, 4, 0.0]) + 7.0  # the last dim is constant
    assert c.needs_feature_stats
    raw = torch.randn(1, 4, 6)
    torch.testing.assert_close(c(raw, latent_frames=4, **RATES).tokens, c.vision_proj(raw))  # identity until set
    c.set_feature_stats(frames)
    assert not c.needs_feature_stats and int(c.vision_stats_frames) == 50
    std = frames.std(0).clamp(min=1e-3)
    torch.testing.assert_close(c(raw, latent_frames=4, **RATES).tokens, c.vision_proj((raw - frames.mean(0)) / std))
    assert std[-1] == pytest.approx(1e-3)  # a constant dim is floored, not divided by zero
    state = c.state_dict()
    assert {"vision_mean", "vision_std", "vision_stats_frames"} <= set(state)
    fresh = _conditioner(text_dim=0, flow_dim=0, position_embedding=False, feature_norm=True)
    fresh.load_state_dict(state)
    assert not fresh.needs_feature_stats
    with pytest.raises(ValueError, match=r"frames \(N >= 2, 6\), got \(50, 5\)"):
        c.set_feature_stats(frames[:, :5])
    with pytest.raises(ValueError, match="feature_norm=True"):
        _conditioner().set_feature_stats(frames)


def test_aligned_delta_sees_the_frame_where_something_appears():
    c = _conditioner(text_dim=0, flow_dim=0, position_embedding=False, aligned_channels=1, aligned_delta=True)
    assert c.aligned_proj.in_features == 12  # [f_t, f_t - f_{t-1}]
    vision = torch.zeros(1, 8, 6)
    vision[0, 5:] = 1.0  # an object appears at frame 5 and stays
    with torch.no_grad():
        c.aligned_proj.weight.zero_()
        c.aligned_proj.bias.zero_()
        c.aligned_proj.weight[0, 6:] = 1.0  # read the difference half only
        a = c(vision, latent_frames=8, fps=4.0, latent_frame_rate=2.0).aligned[0, 0]  # latent j at frame 2j + 1
    assert a.tolist() == pytest.approx([0, 0, 6.0, 0, 0, 0, 0, 0])  # only latent 2 (t = 1.25 s) sees frame 5's onset
    b = c(vision, latent_frames=8, fps=4.0, latent_frame_rate=4.0 / 1.5).aligned[0, 0]  # latent j at frame 1.5j + 0.75
    assert b.tolist() == pytest.approx([0, 0, 0, 4.5, 0, 0, 0, 0])  # frame 5 = 3/4 of latent 3 (frame 5.25)


def test_align_to_latents_interpolates_by_timestamp_and_clamps():
    x = torch.tensor([[[0.0], [1.0], [3.0]]])  # (1, 3, 1): frames at 0, 0.5, 1.0 s (2 fps)
    out = align_to_latents(x, fps=2.0, latent_frame_rate=2.0, latent_frames=4)  # centres 0.25, 0.75, 1.25, 1.75 s
    assert out.shape == (1, 1, 4)
    assert out[0, 0].tolist() == pytest.approx([0.5, 2.0, 3.0, 3.0])  # linear in time; clamped after the last frame
    first = align_to_latents(x, fps=2.0, latent_frame_rate=8.0, latent_frames=1)  # centre 1/16 s: 1/8 of the way
    assert first.item() == pytest.approx(0.125)
    with pytest.raises(ValueError, match="positive, got 0.0/2.0"):
        align_to_latents(x, fps=0.0, latent_frame_rate=2.0, latent_frames=4)


@pytest.mark.parametrize("preset", ["demo", "paper"])
def test_a_frame_spike_lands_at_its_timestamp_without_drift(preset):
    """Frame k at k/fps lands within half a latent frame of k/fps, for every k of the preset's clip (demo: 29
    frames -> 64 latent frames; paper: 20 -> 256); F.interpolate over the frames drifted past that."""
    g = get_preset(preset).geometry
    T, L, rate = g.num_frames, g.latent_frames, g.latent_frame_rate
    assert (T, L) == {"demo": (29, 64), "paper": (20, 256)}[preset]
    tau = (torch.arange(L, dtype=torch.float64) + 0.5) / rate  # latent frame centres (s)
    worst_old = 0.0
    for k in range(T):
        x = torch.zeros(1, T, 1, dtype=torch.float64)
        x[0, k] = 1.0
        new = align_to_latents(x, fps=g.fps, latent_frame_rate=rate, latent_frames=L)[0, 0]
        assert abs(tau[new.argmax()] - k / g.fps) <= 0.5 / rate + 1e-9, k
        assert new.max() > 0.5  # the spike arrives (not smeared away)
        old = F.interpolate(x.transpose(1, 2), size=L, mode="linear", align_corners=False)[0, 0]
        worst_old = max(worst_old, abs(tau[old.argmax()] - k / g.fps).item())
    assert worst_old > 0.5 / rate  # the old resampling misplaced late frames by more than half a latent frame
