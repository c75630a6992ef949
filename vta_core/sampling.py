"""Sampling: diffusers schedulers + classifier-free guidance -> latents -> VAE -> vocoder -> waveforms.

The generate path, step by step (diffusers pipeline style):
1. check inputs and the latent length (the clip duration sets it: ClipGeometry.with_duration);
2. encode the condition c and its null ∅, batched as [∅, c] so guidance costs one forward per step
   (``unconditional=True``: ∅ alone, one forward per step, no guidance);
3. timesteps from a scheduler built on the model's training schedule (DDPM / DDIM / DPM-Solver++ / UniPC /
   Euler);
4. noise: batch row i has ONE CPU generator seeded ``seeds[i]``, drawing its initial noise and then its
   ancestral noise (DDPM; diffusers' ``randn_tensor`` takes the list of generators, one per row; DDIM with
   eta 0, DPM-Solver++, UniPC and churn-free Euler draw none), so a row's noise depends on its seed alone;
5. guided denoising: ε̃ = w·ε(z,t,c) + (1−w)·ε(z,t,∅) (eq. 2; the same for v-prediction);
6. VAE decode of z / scaling_factor -> log-mel; 7. vocoder -> waveform at the vocoder's rate.

Windows (:func:`generate_long`): a clip of T <= W = ``geometry.num_frames`` frames is one window that
generates exactly its own seconds; a longer one is cut into W-frame windows, each generating the geometry's
full clip (``duration_s``) placed at its first frame's time s / fps, joined with crossfades. Window 0 of a
clip uses the clip seed, window w > 0 the seed :func:`window_seed` derives from (clip seed, w).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from tqdm.auto import tqdm

from vta_core.accel import step_begin
from vta_core.conditioning import Condition
from vta_core.diffusion import guided
from vta_core.geometry import ClipGeometry
from vta_core.model import Batch, VTAModel
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

OVERLAP_S = 1.0  # videos longer than one clip: windows overlap by this much, joined with crossfades
MAX_WINDOWS = 16  # windows (jobs) sampled together: one batch of 2 × 16 with guidance


Scheduler = (DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler | UniPCMultistepScheduler
             | EulerDiscreteScheduler)


def make_sampler(name: str, model: VTAModel) -> Scheduler:
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
    if name == "dpmsolver++":  # 2nd-order multistep, ~25 steps; deterministic (the "sde-" variants draw noise)
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    if name == "unipc":  # UniPC (bh2 predictor + corrector), 2nd order, deterministic
        return UniPCMultistepScheduler(**common, solver_order=2)
    if name == "euler":  # Euler in sigma space (Karras et al.'s ODE step; s_churn 0: deterministic)
        return EulerDiscreteScheduler(**common)
    raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def window_seed(clip_seed: int, window: int) -> int:
    """Noise seed of window ``window`` of a clip seeded ``clip_seed``: the clip seed itself for window 0,
    else the first 64-bit word of ``numpy.random.SeedSequence([clip_seed, window])`` (never another clip's
    seed + i, and different for each window)."""
    if clip_seed < 0 or window < 0:
        raise ValueError(f"clip seed and window must be >= 0, got {clip_seed}, {window}")
    if window == 0:
        return int(clip_seed)
    return int(np.random.SeedSequence([int(clip_seed), int(window)]).generate_state(1, dtype=np.uint64)[0])


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """(B, C, T, F) standard normal noise, row i drawn from its own CPU generator seeded ``seeds[i]``, and
    those B generators, advanced past it: the sampler continues them for its ancestral noise."""
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in generators]), generators


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
    seeds: Sequence[int],
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    unconditional: bool = False,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Scaled latents (B, C, T_lat, F_lat) of ``geometry`` for a batch of conditions (``vision`` etc., on
    the model's device); row i's noise comes from ``seeds[i]`` alone. ``guidance == 1`` skips the
    unconditional branch; ``unconditional=True`` samples with ∅ only (``guidance`` does not apply)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    C, T, F = geometry.latent_shape
    if C != model.config.latent_channels:
        raise ValueError(f"geometry has {C} latent channels, the model {model.config.latent_channels}")
    device = next(model.parameters()).device
    B = _batch_size(cond_batch)
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} seeds for a batch of {B} rows; give one seed per row")
    cond = model.condition(cond_batch, latent_frames=T, geometry=geometry)
    if unconditional:  # ∅ alone (zero tokens, zero aligned channels): one forward per step, no CFG
        cond, guidance = cond.null(), 1.0
    use_cfg = guidance != 1.0
    both = cond.null().cat(cond) if use_cfg else cond  # [∅, c]: one batched forward per step

    scheduler = make_sampler(sampler, model)
    scheduler.set_timesteps(steps, device=device)
    noise, generators = initial_noise(seeds, (C, T, F))
    # row i's ancestral noise: generator i (UniPC's step takes no generator: it draws no noise)
    step_kw = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    z = noise.to(device) * scheduler.init_noise_sigma
    for t in tqdm(scheduler.timesteps, disable=not progress, desc=f"{sampler} x{steps}"):
        x = scheduler.scale_model_input(z, t)
        step_begin()  # a compiled denoiser on CUDA graphs: this step may reuse the last step's output buffers
        with _autocast(device, precision):
            pred = guided_prediction(model, x, t, both, guidance=guidance)
        z = scheduler.step(pred, t, z, **step_kw).prev_sample
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
    """Seconds a batch generates: ``duration_s`` when given (the pipeline always passes the clips' seconds),
    else a span whose floor(d·fps) is its T frames: the geometry's clip (``duration_s``) when T ==
    ``num_frames``, else T / fps."""
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
    seeds: Sequence[int],
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    duration_s: float | None = None,
    unconditional: bool = False,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Waveforms (B, N) float32 at ``vocoder.sample_rate``, N = round(duration · rate), one sampler call;
    row i's noise from ``seeds[i]``. The latent length is ``geometry.with_duration(duration)``.

    ``vae`` is an AudioVAE (decode: unscaled z (B, C, T, F) -> log-mel (B, T_mel, n_mels)); ``vocoder``
    maps log-mel to waveform. Model, VAE and vocoder live on the same device.
    """
    seconds = clip_duration(geometry, cond_batch, duration_s)
    clip = geometry.with_duration(seconds)  # latent length follows the duration
    z = sample_latents(
        model, cond_batch, geometry=clip, seeds=seeds, sampler=sampler, steps=steps, guidance=guidance,
        unconditional=unconditional, precision=precision, progress=progress,
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


def crossfade(waves: torch.Tensor, jobs: Sequence[tuple[int, int]], *, batch: int, fps: float,
              sample_rate: int) -> torch.Tensor:
    """Window waveforms (J, N_win), job j = (clip b, start frame s) placed at s / fps, joined with linear
    crossfades over the overlap of consecutive windows -> (batch, N), N = the end of the latest window."""
    n_win = waves.shape[1]
    placed: dict[int, list[tuple[int, int]]] = {}  # clip -> [(job, first sample)] in time order
    for j, (b, s) in enumerate(jobs):
        placed.setdefault(b, []).append((j, round(s / fps * sample_rate)))
    n_total = max(a for items in placed.values() for _, a in items) + n_win
    out, norm = torch.zeros(batch, n_total), torch.zeros(batch, n_total)

    def ramp(n: int) -> torch.Tensor:  # (n,) rising, never exactly 0: every sample keeps some weight
        return (torch.arange(n) + 0.5) / n

    for b, items in placed.items():
        items.sort(key=lambda item: item[1])
        for k, (j, a) in enumerate(items):
            weight = torch.ones(n_win)
            if k > 0 and (n := min(n_win, items[k - 1][1] + n_win - a)) > 0:  # fade in over the previous window
                weight[:n] = torch.minimum(weight[:n], ramp(n))
            if k + 1 < len(items) and (n := min(n_win, a + n_win - items[k + 1][1])) > 0:  # fade out under the next
                weight[n_win - n:] = torch.minimum(weight[n_win - n:], ramp(n).flip(0))
            out[b, a : a + n_win] += waves[j] * weight
            norm[b, a : a + n_win] += weight
    return out / norm.clamp_min(1e-8)


@torch.no_grad()
def generate_long(
    model: VTAModel,
    tokens: torch.Tensor | Batch,
    *,
    vae,
    vocoder,
    geometry: ClipGeometry,
    seeds: Sequence[int],
    duration_s: float | None = None,
    overlap_s: float = OVERLAP_S,
    max_batch: int = MAX_WINDOWS,
    extra: Batch | None = None,
    **sample_kwargs,
) -> torch.Tensor:
    """Audio for B clips of T frames each, clip b's noise from ``seeds[b]`` -> (B, N) on the CPU.

    ``tokens``: per-frame tokens, the vision tensor (B, T, D) or a dict of them (``vision``, ``flow``);
    ``extra``: per-clip, not per-frame, inputs (``text``, ``text_mask``). T <= W = ``geometry.num_frames``:
    one window per clip generating ``duration_s`` (default :func:`clip_duration`) of audio. T > W: windows
    of W frames overlapping by ``overlap_s``, window w of clip b seeded ``window_seed(seeds[b], w)``, each
    generating the geometry's clip (``duration_s``) at s / fps, joined with crossfades; N covers
    max(T / fps, last start / fps + duration_s), the caller fits it to the clip. Jobs (clip windows) run in
    batches of ``max_batch``, one sampler call each.
    """
    frame_tokens = {"vision": tokens} if isinstance(tokens, torch.Tensor) else dict(tokens)
    B, T, _ = next(iter(frame_tokens.values())).shape
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} seeds for {B} clips; give one seed per clip")
    W, fps = geometry.num_frames, geometry.fps
    overlap = round(overlap_s * fps)
    starts = window_starts(T, window=W, overlap=overlap)
    one_window = T <= W
    seconds = duration_s if one_window else geometry.duration_s  # what each window generates
    extra = extra or {}
    jobs = [(b, w, s) for b in range(B) for w, s in enumerate(starts)]  # (clip, window index, first frame)
    waves = []
    for i in range(0, len(jobs), max_batch):
        chunk = jobs[i : i + max_batch]
        cond = {k: torch.stack([v[b, s : s + W] for b, _, s in chunk]) for k, v in frame_tokens.items()}
        cond.update({k: torch.stack([v[b] for b, _, _ in chunk]) for k, v in extra.items()})
        waves.append(generate(model, cond, vae=vae, vocoder=vocoder, geometry=geometry, duration_s=seconds,
                              seeds=[window_seed(seeds[b], w) for b, w, _ in chunk], **sample_kwargs).cpu())
    wave = torch.cat(waves)  # (J, N_win)
    if one_window:
        return wave
    return crossfade(wave, [(b, s) for b, _, s in jobs], batch=B, fps=fps, sample_rate=vocoder.sample_rate)
