"""Mel VAE: diffusers ``AutoencoderKL`` in AudioLDM's layout, plus from-scratch training.

A log-mel ``(B, T, F)`` enters the autoencoder as a one-channel image ``(B, 1, T, F)`` (time = height,
mel bins = width), exactly as AudioLDM. ``encode``/``decode`` work on UNSCALED latents; the diffusion
model works on ``z * scaling_factor`` (LDM's ``scale_by_std``) and the sampler divides before decode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import Tensor

# AudioLDM s-full (diffusers' convert_original_audioldm_to_diffusers.py): ch 128, ch_mult (1, 2, 4),
# 2 res blocks, z 8, learnt scale_by_std factor. sample_size is informational only. The presets
# (vta_core/presets.py) use it as is (paper) or as the base of smaller VAEs (demo, tiny).
AUDIOLDM_S_FULL: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [128, 256, 512],
    "latent_channels": 8,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.9227914214134216,
}


class AudioVAE(torch.nn.Module):
    """Log-mel <-> latent wrapper around a one-channel diffusers ``AutoencoderKL``."""

    def __init__(self, autoencoder: AutoencoderKL) -> None:
        super().__init__()
        cfg = autoencoder.config
        if cfg.in_channels != 1 or cfg.out_channels != 1:
            raise ValueError(
                f"AudioVAE needs a one-channel AutoencoderKL, got in/out channels {cfg.in_channels}/{cfg.out_channels}"
            )
        self.autoencoder = autoencoder

    @property
    def scaling_factor(self) -> float:
        return float(self.autoencoder.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Mel -> latent factor on both axes (2 per block after the first)."""
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    def _check_mel(self, mel: Tensor) -> None:
        if mel.ndim != 3:
            raise ValueError(f"AudioVAE.encode expects a (B, T, F) log-mel, got shape {tuple(mel.shape)}")
        if mel.shape[1] % self.downsample or mel.shape[2] % self.downsample:
            raise ValueError(f"mel shape {tuple(mel.shape)}: T and F must divide by {self.downsample}")

    def posterior(self, mel: Tensor) -> DiagonalGaussianDistribution:
        """q(z | mel) over ``(B, C, T/4, F/4)`` (what ``encode`` summarises and training samples from)."""
        self._check_mel(mel)
        return self.autoencoder.encode(mel.unsqueeze(1)).latent_dist  # mel as a (B, 1, T, F) image

    def encode(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, F)`` log-mel -> posterior mean and std, each ``(B, C, T/4, F/4)``, unscaled."""
        dist = self.posterior(mel)
        return dist.mean, dist.std

    def decode(self, latents: Tensor) -> Tensor:
        """Unscaled ``(B, C, T/4, F/4)`` latents -> ``(B, T, F)`` log-mel."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"AudioVAE.decode expects (B, {self.latent_channels}, t, f) latents, got {tuple(latents.shape)}"
            )
        return self.autoencoder.decode(latents).sample.squeeze(1)


def build_vae(*, seed: int = 0, **autoencoder_kwargs: Any) -> AudioVAE:
    """A freshly initialised (seeded) VAE from ``AutoencoderKL`` keyword arguments (a preset's ``vae``)."""
    if not autoencoder_kwargs:
        raise ValueError("build_vae needs AutoencoderKL keyword arguments, e.g. get_preset('demo').vae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AudioVAE(AutoencoderKL(**autoencoder_kwargs))


def save_vae(vae: AudioVAE, folder: str | Path) -> None:
    """Write diffusers' layout: ``config.json`` + ``diffusion_pytorch_model.safetensors``."""
    vae.autoencoder.save_pretrained(str(folder), safe_serialization=True)


def load_vae(folder: str | Path) -> AudioVAE:
    """Load a diffusers-format VAE folder, e.g. ``cvssp/audioldm-s-full-v2``'s ``vae/`` (offline)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no VAE config.json in {folder}")
    autoencoder = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    return AudioVAE(autoencoder.eval())


def _batches(mels: Iterable[Tensor] | Tensor, *, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless ``(B, T, F)`` batches: random draws from a ``(N, T, F)`` tensor, or an iterable re-iterated."""
    if isinstance(mels, Tensor):
        if mels.ndim != 3 or len(mels) == 0:
            raise ValueError(f"train_vae expects mels of shape (N, T, F), got {tuple(mels.shape)}")
        while True:
            yield mels[torch.randint(len(mels), (batch_size,), generator=generator)]
    for epoch in itertools.count():
        empty = True
        for mel in mels:
            empty = False
            yield mel if mel.ndim == 3 else mel.unsqueeze(0)
        if empty:
            raise ValueError(f"train_vae: mels yielded nothing in epoch {epoch} (an exhausted iterator?)")


def train_vae(
    vae: AudioVAE,
    mels: Iterable[Tensor] | Tensor,
    *,
    steps: int,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: bool = False,
    batch_size: int = 8,
    crop_frames: int | None = None,
    delta_weight: float = 0.0,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train ``vae`` in place on log-mels; returns the loss history and the fitted scaling factor.

    ``mels`` is a ``(N, T, F)`` tensor (random batches of ``batch_size``) or an iterable of ``(B, T, F)``
    (or ``(T, F)``) batches, re-iterated each epoch. ``crop_frames`` trains on random time crops (the
    VAE is convolutional; crops are cheaper per step). Loss per clip (LDM's KL-VAE without the GAN
    and LPIPS terms, divided by T·F):  mean |x̂ - x|  +  kl_weight · KL(q(z|x) ‖ N(0, I)) / (T·F),
    plus ``delta_weight`` · mean |Δx̂ - Δx| with Δ the frame-to-frame difference along time (an attack
    term: plain L1 lets a x4-in-time latent smear a sharp onset over several frames at little cost).
    ``on_step(step)`` is called after each optimiser step (1-based), e.g. to snapshot the VAE.
    Afterwards ``scaling_factor`` is set to 1 / std(z) over up to 8 batches (LDM's ``scale_by_std``).
    """
    if steps <= 0:
        raise ValueError(f"train_vae steps must be positive, got {steps}")
    if delta_weight < 0:
        raise ValueError(f"train_vae delta_weight must be >= 0, got {delta_weight}")
    if crop_frames is not None and (crop_frames <= 0 or crop_frames % vae.downsample):
        raise ValueError(f"crop_frames={crop_frames} must be a positive multiple of {vae.downsample}")
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    device = next(vae.parameters()).device
    batches = _batches(mels, batch_size=batch_size, generator=generator)
    history: dict[str, Any] = {"loss": [], "recon_l1": [], "kl": []}
    vae.train()
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="vae", unit="step")
    for _ in bar:
        x = _crop(next(batches), crop_frames, generator).to(device)  # (B, T, F)
        dist = vae.posterior(x)
        z = dist.sample(generator=generator)  # (B, C, T/4, F/4)
        recon = vae.decode(z)
        recon_l1 = (recon - x).abs().mean()
        kl = dist.kl().mean()  # summed over latent elements, averaged over the batch
        loss = recon_l1 + kl_weight * kl / (x.shape[1] * x.shape[2])
        if delta_weight:
            delta = (recon.diff(dim=1) - x.diff(dim=1)).abs().mean()  # (B, T - 1, F) frame differences
            loss = loss + delta_weight * delta
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history["loss"].append(loss.item())
        history["recon_l1"].append(recon_l1.item())
        history["kl"].append(kl.item())
        if progress:
            bar.set_postfix(l1=f"{recon_l1.item():.3f}")
        if on_step is not None:
            on_step(len(history["loss"]))
    vae.eval()
    with torch.no_grad():
        zs = [vae.posterior(_crop(next(batches), crop_frames, generator).to(device)).sample(
            generator=generator) for _ in range(min(8, steps))]
    std = torch.cat([z.flatten() for z in zs]).std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"train_vae: latent std is {std}; cannot fit scaling_factor")
    vae.autoencoder.register_to_config(scaling_factor=1.0 / std)
    history["scaling_factor"] = 1.0 / std
    return history


def _crop(mel: Tensor, frames: int | None, generator: torch.Generator) -> Tensor:
    """A random time window of ``frames`` frames from ``(B, T, F)`` (all of it when None or longer)."""
    if frames is None or mel.shape[1] <= frames:
        return mel
    start = int(torch.randint(mel.shape[1] - frames + 1, (1,), generator=generator))
    return mel[:, start : start + frames]
