"""The denoiser: a diffusers ``UNet2DConditionModel`` over audio latents (B, C, T_lat, F_lat).

Time runs along the UNet's height axis and mel frequency along its width, as in AudioLDM/VTA-LDM.
With the time-aligned conditioning path on, the input has ``latent_channels + aligned_channels``
channels and the output ``latent_channels``.
"""

from __future__ import annotations

from collections.abc import Sequence

from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel


def build_unet(
    *,
    latent_channels: int,
    aligned_channels: int,
    block_out_channels: Sequence[int],
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    layers_per_block: int,
    attention_head_dim: int | Sequence[int],
    cross_attention_dim: int,
    use_linear_projection: bool,
    upcast_attention: bool,
    norm_num_groups: int,
    empty: bool = False,
) -> UNet2DConditionModel:
    """A UNet2DConditionModel; ``empty=True`` builds it on the meta device (shapes only, no memory)."""
    if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
        raise ValueError(
            f"{len(block_out_channels)} block_out_channels need as many down/up blocks, got "
            f"{len(down_block_types)}/{len(up_block_types)}"
        )
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"block_out_channels {bad} not divisible by norm_num_groups={norm_num_groups}")
    kwargs = dict(
        sample_size=None,
        in_channels=latent_channels + aligned_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(block_out_channels),
        down_block_types=tuple(down_block_types),
        up_block_types=tuple(up_block_types),
        layers_per_block=layers_per_block,
        attention_head_dim=attention_head_dim if isinstance(attention_head_dim, int) else tuple(attention_head_dim),
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=use_linear_projection,
        upcast_attention=upcast_attention,
        norm_num_groups=norm_num_groups,
    )
    if empty:
        with init_empty_weights():
            return UNet2DConditionModel(**kwargs)
    return UNet2DConditionModel(**kwargs)


def count_parameters(module) -> int:
    """Number of parameters (works on meta-device modules too)."""
    return sum(p.numel() for p in module.parameters())
