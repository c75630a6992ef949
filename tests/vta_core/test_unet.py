import pytest

from vta_core.model import ModelConfig
from vta_core.unet import build_unet, count_parameters


def _kwargs(**kw):
    c = ModelConfig()
    args = dict(
        latent_channels=8, aligned_channels=0, block_out_channels=c.block_out_channels,
        down_block_types=c.down_block_types, up_block_types=c.up_block_types, layers_per_block=2,
        attention_head_dim=c.attention_head_dim, cross_attention_dim=2048, use_linear_projection=True,
        upcast_attention=True, norm_num_groups=32,
    )
    return {**args, **kw}


def test_official_unet_has_578_05m_parameters():
    unet = build_unet(**_kwargs(), empty=True)  # meta device: no memory
    assert abs(count_parameters(unet) - 578.05e6) < 0.1e6
    assert unet.config.in_channels == 8 and unet.config.out_channels == 8


def test_aligned_channels_widen_only_the_input():
    unet = build_unet(**_kwargs(aligned_channels=8), empty=True)
    assert unet.conv_in.weight.shape == (320, 16, 3, 3)
    assert unet.conv_out.weight.shape == (8, 320, 3, 3)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="need as many down/up blocks"):
        build_unet(**_kwargs(block_out_channels=(320, 640)), empty=True)
    with pytest.raises(ValueError, match="norm_num_groups=32"):
        build_unet(**_kwargs(block_out_channels=(320, 640, 640, 1000)), empty=True)
