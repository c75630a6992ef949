"""Sampling: diffusers schedulers + classifier-free guidance -> latents -> VAE -> vocoder -> waveforms.

The generate path, step by step (diffusers pipeline style):
1. check inputs and the latent length (the clip duration sets it: ClipGeometry.with_duration);
2. encode the condition c and its null ∅, batched as [∅, c] so guidance costs one forward per step;
3. timesteps from a scheduler built on the model's training schedule (DDPM / DDIM / DPM-Solver++);
4. initial noise, one seeded generator per clip (a clip's noise does not depend on its batch);
5. guided denoising: ε̃ = w·ε(z,t,c) + (1−w)·ε(z,t,∅) (eq. 2; the same for v-prediction);
6. VAE decode of z / scaling_factor -> log-mel; 7. vocoder -> waveform at the vocoder's rate.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from vta_core.conditioning import Condition
from vta_core.diffusion import guided
from vta_core.geometry import ClipGeometry
from vta_core.model import Batch, VTAModel
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

OVERLAP_S = 1.0  # videos longer than one clip: windows overlap by this much, joined with crossfades
MAX_WINDOWS = 16  # windows sampled together (one batch of 2 × 16 with guidance)


def make_sampler(name: str, model: VTAModel) -> DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler:
    """An inference scheduler on the model's training schedule (betas, prediction type, steps_offset)."""
    c = model.config
    common = dict(
        num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
        beta_schedule=c.beta_schedule, prediction_type=c.prediction_type, steps_offset=c.steps_offset,
    )
    if name == "ddpm":  # ancestral sampling, as the official release (300 steps)
        return DDPMScheduler(**common, clip_sample=False)
    if name == "ddim":  # eta = 0: deterministic
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False)
    if name == "dpmsolver++":  # 2nd-order multistep, ~25 steps
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def initial_noise(batch_size: int, shape: tuple[int, int, int], *, seed: int) -> torch.Tensor:
    """(B, C, T, F) standard normal noise; clip i uses its own CPU generator seeded ``seed + i``."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(batch_size)])


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


@torch.no_grad()
def sample_latents(
    model: VTAModel,
    cond_batch: Batch,
    *,
    geometry: ClipGeometry,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Scaled latents (B, C, T_lat, F_lat) of ``geometry`` for a batch of conditions (``vision`` etc., on
    the model's device). ``guidance == 1`` skips the unconditional branch."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    C, T, F = geometry.latent_shape
    if C != model.config.latent_channels:
        raise ValueError(f"geometry has {C} latent channels, the model {model.config.latent_channels}")
    device = next(model.parameters()).device
    B = _batch_size(cond_batch)
    cond = model.condition(cond_batch, latent_frames=T)
    use_cfg = guidance != 1.0
    both = cond.null().cat(cond) if use_cfg else cond  # [∅, c]: one batched forward per step

    scheduler = make_sampler(sampler, model)
    scheduler.set_timesteps(steps, device=device)
    z = initial_noise(B, (C, T, F), seed=seed).to(device) * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(seed)  # ancestral (DDPM) noise
    for t in tqdm(scheduler.timesteps, disable=not progress, desc=f"{sampler} x{steps}"):
        x = scheduler.scale_model_input(z, t)
        with _autocast(device, precision):
            pred = guided_prediction(model, x, t, both, guidance=guidance)
        z = scheduler.step(pred, t, z, generator=generator).prev_sample
    return z


def guided_prediction(model: VTAModel, z: torch.Tensor, t: torch.Tensor, both: Condition, *, guidance: float) -> torch.Tensor:
    """ε̃ = w·ε(z,t,c) + (1−w)·ε(z,t,∅) with [∅, c] in ``both`` run as one batch (2B) forward;
    with guidance 1, ``both`` is just c (B rows). Returns float32 (B, C, T, F)."""
    if guidance == 1.0:
        return model(z, t.expand(z.shape[0]), both).float()
    pred = model(torch.cat([z, z]), t.expand(2 * z.shape[0]), both).float()
    pred_uncond, pred_cond = pred.chunk(2)
    return guided(pred_cond, pred_uncond, guidance)


def _batch_size(cond_batch: Batch) -> int:
    for key in ("vision", "text", "flow"):
        if key in cond_batch:
            return cond_batch[key].shape[0]
    raise ValueError(f"cond_batch needs one of vision/text/flow, got keys {sorted(cond_batch)}")


def clip_duration(geometry: ClipGeometry, cond_batch: Batch, duration_s: float | None) -> float:
    """Seconds to generate: ``duration_s``, else the frames' span (the preset's clip for its frame count)."""
    if duration_s is not None:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        return float(duration_s)
    if "vision" not in cond_batch:
        raise ValueError("duration_s is required without vision frames")
    frames = cond_batch["vision"].shape[1]
    return geometry.duration_s if frames == geometry.num_frames else frames / geometry.fps


@torch.no_grad()
def generate(
    model: VTAModel,
    cond_batch: Batch,
    *,
    vae,
    vocoder,
    geometry: ClipGeometry,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    duration_s: float | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Waveforms (B, N) float32 at ``vocoder.sample_rate``, N = round(duration · rate).

    ``vae`` is an AudioVAE (decode: unscaled z (B, C, T, F) -> log-mel (B, T_mel, n_mels)); ``vocoder``
    maps log-mel to waveform. Model, VAE and vocoder live on the same device.
    """
    seconds = clip_duration(geometry, cond_batch, duration_s)
    clip = geometry.with_duration(seconds)  # latent length follows the duration
    z = sample_latents(
        model, cond_batch, geometry=clip, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
        precision=precision, progress=progress,
    )
    return decode(z, vae=vae, vocoder=vocoder, seconds=seconds, precision=precision)


@torch.no_grad()
def decode(z: torch.Tensor, *, vae, vocoder, seconds: float, precision: str = "fp32") -> torch.Tensor:
    """Scaled latents (B, C, T_lat, F_lat) -> VAE log-mel -> vocoder -> waveforms (B, N), N = round(seconds · rate)."""
    with _autocast(z.device, precision):
        mel = vae.decode(z / vae.scaling_factor).float()  # (B, T_mel, n_mels)
        wave = vocoder(mel).float()  # (B, T_mel * hop)
    n = round(seconds * vocoder.sample_rate)
    if wave.shape[1] < n:
        wave = torch.nn.functional.pad(wave, (0, n - wave.shape[1]))
    return wave[:, :n]


def window_starts(num_frames: int, *, window: int, overlap: int) -> list[int]:
    """First frames of ``window``-frame windows overlapping by ``overlap`` frames over ``num_frames``
    frames; the last window ends with the video. ``[0]`` when one window covers it."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap of {overlap} frames; need 0 <= overlap < {window} (window)")
    if num_frames <= window:
        return [0]
    return list(range(0, num_frames - window, window - overlap)) + [num_frames - window]


def crossfade(waves: torch.Tensor, jobs: list[tuple[int, int]], *, batch: int, num_frames: int, window: int,
              overlap: int, fps: float, sample_rate: int) -> torch.Tensor:
    """Window waveforms (J, N_win), job j = (clip b, start frame s), joined with linear crossfades over
    the overlaps -> (batch, N), N = round(num_frames / fps · rate)."""
    sr = sample_rate
    n_total, n_win, ramp = round(num_frames / fps * sr), waves.shape[1], max(1, round(overlap / fps * sr))
    out = torch.zeros(batch, n_total)
    norm = torch.zeros(batch, n_total)
    rise = (torch.arange(ramp) + 0.5) / ramp  # never exactly 0: every sample keeps some weight
    for (b, s), wave in zip(jobs, waves, strict=True):
        weight = torch.ones(n_win)
        if s > 0:
            weight[:ramp] = rise
        if s + window < num_frames:
            weight[-ramp:] = torch.minimum(weight[-ramp:], rise.flip(0))
        a = round(s / fps * sr)
        n = min(n_win, n_total - a)
        out[b, a : a + n] += wave[:n] * weight[:n]
        norm[b, a : a + n] += weight[:n]
    return out / norm.clamp_min(1e-8)


@torch.no_grad()
def generate_long(
    model: VTAModel,
    tokens: torch.Tensor | Batch,
    *,
    vae,
    vocoder,
    geometry: ClipGeometry,
    overlap_s: float = OVERLAP_S,
    max_batch: int = MAX_WINDOWS,
    seed: int = 0,
    extra: Batch | None = None,
    **sample_kwargs,
) -> torch.Tensor:
    """Audio for videos longer than a clip: windows of ``geometry.num_frames`` frames overlapping by
    ``overlap_s``, generated in batches, joined with linear crossfades. ``tokens``: per-frame tokens, the
    vision tensor (B, T_long, D) or a dict of them (``vision``, ``flow``) -> (B, N), N = round(T_long / fps ·
    rate); one window when T_long fits one. ``extra``: per-clip, not per-frame, inputs (``text``, ``text_mask``)."""
    frame_tokens = {"vision": tokens} if isinstance(tokens, torch.Tensor) else dict(tokens)
    B, T_long, _ = next(iter(frame_tokens.values())).shape
    W, fps = geometry.num_frames, geometry.fps
    overlap = round(overlap_s * fps)
    starts = window_starts(T_long, window=W, overlap=overlap)
    extra = extra or {}
    if T_long <= W:
        return generate(model, {**frame_tokens, **extra}, vae=vae, vocoder=vocoder, geometry=geometry,
                        duration_s=T_long / fps, seed=seed, **sample_kwargs)
    jobs = [(b, s) for b in range(B) for s in starts]
    waves = []
    for i in range(0, len(jobs), max_batch):  # clip j of the whole job list gets seed + j
        chunk = jobs[i : i + max_batch]
        cond = {k: torch.stack([v[b, s : s + W] for b, s in chunk]) for k, v in frame_tokens.items()}
        cond.update({k: torch.stack([v[b] for b, _ in chunk]) for k, v in extra.items()})
        waves.append(generate(model, cond, vae=vae, vocoder=vocoder, geometry=geometry, duration_s=W / fps,
                              seed=seed + i, **sample_kwargs).cpu())
    return crossfade(torch.cat(waves), jobs, batch=B, num_frames=T_long, window=W, overlap=overlap, fps=fps,
                     sample_rate=vocoder.sample_rate)
