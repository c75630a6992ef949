"""Diffusion objective: the DDPM noise schedule, prediction targets and min-SNR loss weights.

Forward process (DDPM): z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε. Targets:
- ε-prediction, the paper's eq. 1: ‖ε − ε_θ(z_t, t, φ(f_V))‖²;
- v-prediction (the official release): v = √ᾱ_t ε − √(1−ᾱ_t) z_0.
Min-SNR-γ weighting (Hang et al. 2023, SNR = ᾱ/(1−ᾱ)): w = min(SNR, γ)/SNR for an ε target and
min(SNR, γ)/(SNR + 1) for a v target — the form of the prediction type by default. The official release
applies the ε form min(SNR, 5)/SNR to its v target (its models.py, adapted from diffusers'
train_text_to_image of the time); ``weighting="epsilon"`` selects that form whatever the target (the
paper preset does, as the release).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

PREDICTION_TYPES = ("epsilon", "v_prediction")
SNR_WEIGHTINGS = ("epsilon", "v_prediction")  # the min-SNR form: min(SNR,γ)/SNR | min(SNR,γ)/(SNR+1)


def training_scheduler(
    *,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    prediction_type: str,
    steps_offset: int,
) -> DDPMScheduler:
    """The training schedule (DDPM, 1000 steps, scaled_linear 0.00085–0.012 for every preset)."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        steps_offset=steps_offset,
        clip_sample=False,
    )


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t) for integer timesteps (B,) -> (B,) float32."""
    abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return abar / (1.0 - abar)


def check_snr_weighting(weighting: str | None) -> None:
    """Raise unless ``weighting`` is None (the prediction type's form) or one of :data:`SNR_WEIGHTINGS`."""
    if weighting is not None and weighting not in SNR_WEIGHTINGS:
        raise ValueError(f"snr_weighting must be None or one of {SNR_WEIGHTINGS}, got {weighting!r}")


def snr_weight_formula(snr_gamma: float | None, weighting: str | None, prediction_type: str) -> str:
    """The weight as text, e.g. ``min(SNR, 5)/SNR`` (``1`` when unweighted), for reports."""
    if snr_gamma is None:
        return "1"
    form = weighting or prediction_type
    g = f"{snr_gamma:g}"
    return f"min(SNR, {g})/SNR" if form == "epsilon" else f"min(SNR, {g})/(SNR + 1)"


def loss_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, snr_gamma: float | None, weighting: str | None = None
) -> torch.Tensor:
    """Per-sample loss weights (B,): ones, or min-SNR-γ in the form ``weighting`` (None = the
    scheduler's prediction type; "epsilon" = min(SNR,γ)/SNR, "v_prediction" = min(SNR,γ)/(SNR+1))."""
    check_snr_weighting(weighting)
    if snr_gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    s = snr(scheduler, timesteps)
    clipped = torch.clamp(s, max=snr_gamma)
    if (weighting or scheduler.config.prediction_type) == "epsilon":
        return clipped / s
    return clipped / (s + 1.0)


def target(scheduler: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the denoiser regresses: ε, or v = √ᾱ ε − √(1−ᾱ) z_0."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(z0, noise, timesteps)


def guided(pred_cond: torch.Tensor, pred_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance (eq. 2): ε̃ = w·ε(z,t,c) + (1−w)·ε(z,t,∅) (same form for v)."""
    return guidance * pred_cond + (1.0 - guidance) * pred_uncond
