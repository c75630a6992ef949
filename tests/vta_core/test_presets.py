import json

import pytest
import torch

from vta_core.geometry import geometry_for
from vta_core.model import VTAModel
from vta_core.presets import PRESETS, build_model, info, model_config


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_forward_shapes_for_small_presets(preset):
    torch.set_num_threads(1)
    g = geometry_for(preset)
    model = build_model(preset)
    C, T, F = g.latent_shape
    batch = {"vision": torch.randn(2, g.num_frames, model.config.vision_dim)}
    with torch.no_grad():
        cond = model.condition(batch, latent_frames=T)
        out = model(torch.randn(2, C, T, F), torch.tensor([10, 900]), cond)
    assert out.shape == (2, C, T, F)
    assert torch.isfinite(out).all()


def test_forward_shape_for_paper_preset_on_meta_device():
    g = geometry_for("paper")
    model = VTAModel(model_config("paper"), empty=True).to("meta")
    C, T, F = g.latent_shape
    assert (C, T, F) == (8, 256, 16)
    cond = model.condition({"vision": torch.zeros(1, g.num_frames, 768, device="meta")}, latent_frames=T)
    out = model(torch.zeros(1, C, T, F, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"), cond)
    assert out.shape == (1, 8, 256, 16)


def test_other_durations_change_the_latent_length():
    torch.set_num_threads(1)
    g = geometry_for("tiny").with_duration(3.0)
    model = build_model("tiny")
    C, T, F = g.latent_shape
    assert T != geometry_for("tiny").latent_frames
    with torch.no_grad():
        cond = model.condition({"vision": torch.randn(1, g.num_frames, 32)}, latent_frames=T)
        out = model(torch.randn(1, C, T, F), torch.tensor([5]), cond)
    assert out.shape == (1, C, T, F)


def test_info_reports_geometry_and_parameter_counts():
    report = info("paper")
    json.dumps(report)  # JSON-able
    assert abs(report["parameters"]["unet"] - 578.05e6) < 0.1e6
    assert report["geometry"]["derived"]["latent_shape"] == [8, 256, 16]
    assert report["parameters"]["conditioning"] == 768 * 2048 + 2048
    small = info("demo")["parameters"]["unet"]
    assert small < 6e6


def test_presets_match_their_geometry_and_overrides():
    for name, config in PRESETS.items():
        assert config.latent_channels == geometry_for(name).latent_channels
    assert PRESETS["paper"].aligned_channels == 0 and PRESETS["demo"].aligned_channels > 0
    assert model_config("demo", vision_dim=512).vision_dim == 512
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        model_config("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        model_config("tiny", channels=3)
    with pytest.raises(ValueError, match="latent_channels=8 but geometry has 4"):
        build_model("tiny", latent_channels=8)
