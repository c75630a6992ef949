"""VTA-LDM: conditioner (φ + auxiliaries) + UNet denoiser + training objective, in one module.

The model works on scaled latents z = vae_latent * vae.scaling_factor, shape (B, C, T_lat, F_lat).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vta_core.conditioning import Condition, Conditioner
from vta_core.diffusion import check_snr_weighting, loss_weights, target, training_scheduler
from vta_core.geometry import ClipGeometry
from vta_core.unet import build_unet

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`VTAModel` (saved as JSON beside its weights).

    Defaults: the official VTA-LDM UNet (578.05 M parameters) with the paper's eq. 1 objective (ε,
    unweighted, ``steps_offset`` 0); the ``paper`` preset sets the release's recipe on top (v,
    ``steps_offset`` 1, min(SNR, 5)/SNR). ``snr_weighting``: the min-SNR form, None = the prediction
    type's, "epsilon" = min(SNR, γ)/SNR whatever the target (the release), "v_prediction" =
    min(SNR, γ)/(SNR + 1).
    """

    latent_channels: int = 8
    # conditioning
    vision_dim: int = 768  # CLIP ViT-L/14 image_embeds
    vision_tokens: bool = True  # False: the model never sees the frames (the paper's text-only row)
    text_dim: int = 0  # 0 = no text tokens
    flow_dim: int = 0  # 0 = no flow tokens
    position_embedding: bool = False
    aligned_channels: int = 0  # 0 = no time-aligned input path
    aligned_delta: bool = False  # the aligned path also sees frame differences
    feature_norm: bool = False  # standardise frame features with training-data statistics
    cond_dropout: float = 0.1  # P(condition -> ∅) in training
    # UNet
    cross_attention_dim: int = 2048
    block_out_channels: tuple[int, ...] = (320, 640, 640, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: int = 2
    attention_head_dim: tuple[int, ...] = (5, 10, 20, 20)
    use_linear_projection: bool = True
    upcast_attention: bool = True
    norm_num_groups: int = 32
    # diffusion
    prediction_type: str = "epsilon"
    snr_gamma: float | None = None
    snr_weighting: str | None = None  # None | "epsilon" | "v_prediction" (vta_core.diffusion.SNR_WEIGHTINGS)
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    steps_offset: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        check_snr_weighting(self.snr_weighting)
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive or None, got {self.snr_gamma}")
        for name in ("block_out_channels", "down_block_types", "up_block_types", "attention_head_dim"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["vision_tokens"]:  # recorded only when off: configs (and train versions) from before it are unchanged
            del d["vision_tokens"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**d)


class VTAModel(nn.Module):
    """Conditioner + UNet + DDPM training schedule."""

    def __init__(self, config: ModelConfig, *, empty: bool = False) -> None:
        super().__init__()
        self.config = config
        c = config
        self.conditioner = Conditioner(
            vision_dim=c.vision_dim, cross_attention_dim=c.cross_attention_dim, text_dim=c.text_dim,
            flow_dim=c.flow_dim, position_embedding=c.position_embedding, aligned_channels=c.aligned_channels,
            aligned_delta=c.aligned_delta, feature_norm=c.feature_norm,
        )
        self.unet = build_unet(
            latent_channels=c.latent_channels, aligned_channels=c.aligned_channels,
            block_out_channels=c.block_out_channels, down_block_types=c.down_block_types,
            up_block_types=c.up_block_types, layers_per_block=c.layers_per_block,
            attention_head_dim=c.attention_head_dim, cross_attention_dim=c.cross_attention_dim,
            use_linear_projection=c.use_linear_projection, upcast_attention=c.upcast_attention,
            norm_num_groups=c.norm_num_groups, empty=empty,
        )
        self.scheduler = training_scheduler(
            num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
            beta_schedule=c.beta_schedule, prediction_type=c.prediction_type, steps_offset=c.steps_offset,
        )

    # --- conditioning -----------------------------------------------------------------------
    def condition(
        self, batch: Batch, *, latent_frames: int, geometry: ClipGeometry, drop: torch.Tensor | None = None,
        use_vision: bool = True,
    ) -> Condition:
        """Batch keys: ``vision`` (B,T,D), ``vision_mask`` (B,T) bool, ``text`` (B,L,Dt), ``text_mask``
        (B,L), ``flow`` (B,T',Df), ``flow_mask`` (B,T') — all optional. ``use_vision=False``: audio-only (text or ∅).
        ``geometry`` places frame k at k / fps on the latent axis (latent_frame_rate) for the aligned path."""
        use_vision = use_vision and self.config.vision_tokens
        vision = batch.get("vision") if use_vision else None
        text = batch.get("text") if self.conditioner.text_proj is not None else None
        flow = batch.get("flow") if use_vision and self.conditioner.flow_proj is not None else None
        if vision is None and text is None and flow is None:  # audio-only without text: always ∅
            ref = batch["latents"] if "latents" in batch else batch["vision"]
            return self.conditioner.null(ref.shape[0], latent_frames=latent_frames, device=ref.device)
        return self.conditioner(
            vision, latent_frames=latent_frames, fps=geometry.fps, latent_frame_rate=geometry.latent_frame_rate,
            vision_mask=batch.get("vision_mask") if use_vision else None,
            text=text, text_mask=batch.get("text_mask"), flow=flow, flow_mask=batch.get("flow_mask"), drop=drop,
        )

    # --- denoising --------------------------------------------------------------------------
    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Denoiser prediction (ε or v) for z_t (B, C, T, F) at timesteps t (B,) given cond."""
        x = z_t
        if cond.aligned is not None:  # (B, A, T) -> broadcast over F, concat to input channels
            a = cond.aligned[..., None].expand(-1, -1, -1, z_t.shape[-1]).to(z_t.dtype)
            x = torch.cat([z_t, a], dim=1)
        return self.unet(x, t, encoder_hidden_states=cond.tokens, encoder_attention_mask=cond.mask).sample

    # --- objective --------------------------------------------------------------------------
    def loss(
        self, batch: Batch, *, geometry: ClipGeometry, generator: torch.Generator | None = None,
        use_vision: bool = True, reduction: str = "mean",
    ) -> torch.Tensor:
        """Weighted diffusion loss on ``batch["latents"]`` (B, C, T, F), already scaled, of clips of
        ``geometry`` (its frame and latent rates align the frames; see :meth:`condition`).

        t ~ U{0..N−1}, ε ~ N(0, I), a row is dropped to ∅ with probability cond_dropout. The draws come
        from the batch when it carries them per sample (``t_u``, ``noise``, ``drop_u``:
        ``vta_core.data.seeded_collate``, so a sample's loss does not depend on its batch), else from
        ``generator`` (or the global RNG), on the CPU. reduction: ``mean`` or ``sum`` over the batch.
        """
        z0 = batch["latents"]
        if z0.ndim != 4 or z0.shape[1] != self.config.latent_channels:
            raise ValueError(f"latents must be (B, {self.config.latent_channels}, T, F), got {tuple(z0.shape)}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be mean or sum, got {reduction!r}")
        B, device = z0.shape[0], z0.device
        n = self.scheduler.config.num_train_timesteps
        if "noise" in batch:
            t = (batch["t_u"].to(device) * n).long().clamp(max=n - 1)  # on the device: no host sync
            noise = batch["noise"].to(device, z0.dtype)
            drop = (batch["drop_u"] < self.config.cond_dropout).to(device)
        else:
            t = torch.randint(0, n, (B,), generator=generator).to(device)
            noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(device, z0.dtype)
            drop = (torch.rand(B, generator=generator) < self.config.cond_dropout).to(device)
        cond = self.condition(batch, latent_frames=z0.shape[2], geometry=geometry, drop=drop, use_vision=use_vision)
        z_t = self.scheduler.add_noise(z0, noise, t)
        pred = self(z_t, t, cond)
        per_sample = F.mse_loss(pred.float(), target(self.scheduler, z0, noise, t).float(), reduction="none")
        per_sample = per_sample.mean(dim=(1, 2, 3))  # (B,)
        weights = loss_weights(self.scheduler, t, self.config.snr_gamma, self.config.snr_weighting)  # (B,)
        return (per_sample * weights).sum() if reduction == "sum" else (per_sample * weights).mean()
