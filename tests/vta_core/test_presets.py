import json

import pytest
import torch

from vta_core.geometry import frame_count
from vta_core.model import VTAModel
from vta_core.presets import PRESETS, Preset, build_model, get_preset, info
from vta_core.sampling import OVERLAP_S, window_starts


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_forward_shapes_for_small_presets(preset):
    torch.set_num_threads(1)
    g = get_preset(preset).geometry
    model = build_model(preset)
    C, T, F = g.latent_shape
    batch = {"vision": torch.randn(2, g.num_frames, model.config.vision_dim)}
    with torch.no_grad():
        cond = model.condition(batch, latent_frames=T, geometry=g)
        out = model(torch.randn(2, C, T, F), torch.tensor([10, 900]), cond)
    assert out.shape == (2, C, T, F)
    assert torch.isfinite(out).all()


def test_forward_shape_for_paper_preset_on_meta_device():
    g = get_preset("paper").geometry
    model = VTAModel(get_preset("paper").model, empty=True).to("meta")
    C, T, F = g.latent_shape
    assert (C, T, F) == (8, 256, 16)
    cond = model.condition({"vision": torch.zeros(1, g.num_frames, 768, device="meta")}, latent_frames=T, geometry=g)
    out = model(torch.zeros(1, C, T, F, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"), cond)
    assert out.shape == (1, 8, 256, 16)


def test_other_durations_change_the_latent_length():
    torch.set_num_threads(1)
    g = get_preset("tiny").geometry.with_duration(3.0)
    model = build_model("tiny")
    C, T, F = g.latent_shape
    assert T != get_preset("tiny").geometry.latent_frames
    with torch.no_grad():
        cond = model.condition({"vision": torch.randn(1, g.num_frames, 32)}, latent_frames=T, geometry=g)
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


def test_paper_preset_is_the_official_recipe():
    """v target, steps_offset 1, min(SNR, 5)/SNR (the ε form, as the release), linear LR after 300 warm-up
    steps, guidance 3 with the zero ∅; demo and tiny keep their own (unweighted, constant after warm-up)."""
    recipe = info("paper")["recipe"]
    assert recipe["prediction_type"] == "v_prediction" and recipe["steps_offset"] == 1
    assert recipe["snr_gamma"] == 5.0 and recipe["snr_weighting"] == "epsilon"
    assert recipe["loss_weight"] == "min(SNR, 5)/SNR"
    assert (recipe["lr_schedule"], recipe["warmup"], recipe["lr"]) == ("linear", 300, 6e-5)
    assert recipe["guidance"] == 3.0 and recipe["cond_dropout"] == 0.1 and "zeros" in recipe["null_condition"]
    assert recipe["schedule"] == "DDPM 1000 steps, scaled_linear 0.00085-0.012"
    paper = get_preset("paper").model  # the ModelConfig the recipe reports
    assert paper.prediction_type == recipe["prediction_type"] and paper.snr_weighting == "epsilon"
    demo = info("demo")["recipe"]
    assert (demo["prediction_type"], demo["snr_gamma"], demo["loss_weight"]) == ("v_prediction", None, "1")
    assert demo["lr_schedule"] == info("tiny")["recipe"]["lr_schedule"] == "constant_with_warmup"
    assert info("tiny")["recipe"]["prediction_type"] == "epsilon"


def test_presets_agree_with_their_geometry_and_vae():
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.model.latent_channels == preset.geometry.latent_channels == preset.vae["latent_channels"]
        assert 2 ** (len(preset.vae["block_out_channels"]) - 1) == preset.geometry.vae_downsample
        assert preset.ingest.flow_size == preset.geometry.frame_size // 2
    assert PRESETS["paper"].model.aligned_channels == 0 and PRESETS["demo"].model.aligned_channels > 0
    with pytest.raises(ValueError, match="latent channels disagree"):
        Preset(**{**get_preset("tiny").__dict__, "vae": {**get_preset("tiny").vae, "latent_channels": 8}})


def test_unknown_preset_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; choose one of \['demo', 'paper', 'tiny'\]"):
        get_preset("nope")


def test_overrides():
    assert get_preset("demo").model_config(vision_dim=512).vision_dim == 512
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        get_preset("tiny").model_config(channels=3)
    with pytest.raises(ValueError, match="latent_channels=8 but geometry has 4"):
        build_model("tiny", latent_channels=8)
    assert get_preset("tiny").build_vae(latent_channels=2).latent_channels == 2  # kwargs override the preset


def test_the_one_frame_rule():
    assert frame_count(10.24, 2.0) == 20 and frame_count(2.0, 4.0) == 8 and frame_count(0.1, 2.0) == 1  # floor, >= 1
    assert frame_count(2.9999999999, 1.0) == 3  # float noise below a whole frame does not lose it
    for name, frames in [("tiny", 5), ("demo", 29), ("paper", 20)]:  # a clip of the geometry's duration: one window
        g = get_preset(name).geometry
        assert g.num_frames == frame_count(g.duration_s, g.fps) == frames
        assert window_starts(g.num_frames, window=g.num_frames, overlap=round(OVERLAP_S * g.fps)) == [0]
    assert not hasattr(get_preset("demo").geometry, "frames_covering")  # the ceil rule is gone
