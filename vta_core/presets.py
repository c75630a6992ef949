"""Model presets (paper / demo / tiny) and the ``vta info`` report.

- ``paper``: the official VTA-LDM UNet (578.05 M parameters), CLIP ViT-L/14 768-d frames -> φ -> 2048,
  cross-attention only (the aligned path off), ε-prediction (paper eq. 1).
- ``demo``: trains to a visible result on 2 CPU cores in minutes: 2 levels (64/128 channels),
  attention only at the lower level (320 tokens for the demo latent 8×64×20), the time-aligned path (with
  frame differences) on standardised features, frame position embeddings, v-prediction. v rather than ε:
  the event sounds are a small part of each latent, and at high noise ε-loss barely depends on the clean
  latent (its x₀ error is scaled by SNR → 0), so an ε-model gets almost no gradient to read the video;
  v-loss weights the x₀ error by SNR + 1 (a probe on the demo data: after 200 steps the x₀ error at t=850
  with true vs time-shuffled frames was 0.048 vs 0.061 with v, standardised features and differences,
  0.052 vs 0.055 with v alone, 1.178 vs 1.180 with ε).
- ``tiny``: unit tests, milliseconds per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vta_core.geometry import geometry_for
from vta_core.model import ModelConfig, VTAModel
from vta_core.unet import count_parameters

PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "demo": ModelConfig(
        latent_channels=8,
        vision_dim=768,
        position_embedding=True,
        aligned_channels=8,
        aligned_delta=True,
        feature_norm=True,
        prediction_type="v_prediction",
        cross_attention_dim=128,
        block_out_channels=(64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=(4, 4),  # diffusers reads this as heads per level
        norm_num_groups=16,
    ),
    "tiny": ModelConfig(
        latent_channels=4,
        vision_dim=32,
        position_embedding=True,
        aligned_channels=4,
        aligned_delta=True,
        feature_norm=True,
        cross_attention_dim=32,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=(2, 2),
        norm_num_groups=8,
    ),
}


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """The preset's :class:`ModelConfig`, with field overrides (e.g. ``vision_dim=512``)."""
    try:
        base = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
    return dataclasses.replace(base, **overrides)


def build_model(preset: str, *, seed: int = 0, **overrides: Any) -> VTAModel:
    """A freshly initialised model for a preset, seeded."""
    config = model_config(preset, **overrides)
    check_geometry(config, preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VTAModel(config)


def check_geometry(config: ModelConfig, preset: str) -> None:
    """Raise if the model's latent channels disagree with the preset's clip geometry."""
    geometry = geometry_for(preset)
    if geometry.latent_channels != config.latent_channels:
        raise ValueError(
            f"preset {preset!r}: model latent_channels={config.latent_channels} but geometry has "
            f"{geometry.latent_channels}"
        )


def info(preset: str) -> dict[str, Any]:
    """JSON-able geometry + parameter counts (built on the meta device: instant, no memory)."""
    config = model_config(preset)
    geometry = geometry_for(preset)
    model = VTAModel(config, empty=True)
    return {
        "preset": preset,
        "geometry": geometry.to_dict(),
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()},
        "parameters": {
            "unet": count_parameters(model.unet),
            "unet_millions": round(count_parameters(model.unet) / 1e6, 3),
            "conditioning": count_parameters(model.conditioner),
            "total": count_parameters(model),
        },
    }
