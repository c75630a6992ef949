"""The official-release importer on random state dicts in the released layout (no weights reachable here).

Key names and shapes come from the release's code (ariesssxu/vta-ldm models.py / train.py): accelerate saves
the AudioDiffusion module as pytorch_model_2.bin with ``unet.*`` (diffusers UNet2DConditionModel),
``vid_fea_extractor.linear_layer.*`` (Linear 768 -> 2048) and the frozen CLIP towers
``vid_fea_extractor.clip_vision.*`` / ``clip_text.*``; summary.jsonl line 1 holds the training args.
"""

import json

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from vta_core.checkpoint import load_checkpoint
from vta_core.model import VTAModel
from vta_core.official import import_official, map_state_dict, official_model_config, read_summary
from vta_core.sampling import sample_latents

# the release's configs/diffusion_model_config_large_2048.json
RELEASED_UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0", "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 640, 1280],
    "center_input_sample": False, "cross_attention_dim": 2048,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 8, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_class_embeds": None, "only_cross_attention": False, "out_channels": 8,
    "sample_size": [32, 2],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True, "upcast_attention": True,
}
TINY_UNET = {**RELEASED_UNET, "attention_head_dim": [2, 2], "block_out_channels": [32, 64],
             "cross_attention_dim": 48, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8}


def _summary(**kw):
    args = {"fea_encoder_name": "openai/clip-vit-large-patch14", "scheduler_name": "ckpt/stable-diffusion-2-1",
            "unet_model_name": None, "unet_model_config": "configs/diffusion_model_config_large_2048.json",
            "snr_gamma": 5.0, "freeze_text_encoder": True, "uncondition": False, "task": "video2audio",
            "embedding_dim": 2048, "pe": False, "input_mol": "joint", "ib": False, "lb": False, "jepa": False}
    return {**args, **kw}


def _unet_config(cfg):
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _released_state(unet_cfg, embedding_dim, *, empty):
    """A random state dict with the released key names and shapes."""
    if empty:
        with init_empty_weights():
            unet = UNet2DConditionModel(**_unet_config(unet_cfg))
    else:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**_unet_config(unet_cfg))
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    device = "meta" if empty else "cpu"
    state["vid_fea_extractor.linear_layer.weight"] = torch.randn(embedding_dim, 768, device=device)
    state["vid_fea_extractor.linear_layer.bias"] = torch.randn(embedding_dim, device=device)
    state["vid_fea_extractor.clip_vision.vision_model.embeddings.patch_embedding.weight"] = torch.randn(
        1024, 3, 14, 14, device=device)
    state["vid_fea_extractor.clip_vision.visual_projection.weight"] = torch.randn(768, 1024, device=device)
    state["vid_fea_extractor.clip_text.text_projection.weight"] = torch.randn(768, 768, device=device)
    return state, unet


def test_full_size_released_keys_and_shapes_map_onto_our_model():
    state, _ = _released_state(RELEASED_UNET, 2048, empty=True)
    mapped, skipped = map_state_dict(state, text=True)
    assert skipped == 3
    config = official_model_config(_summary(), _unet_config(RELEASED_UNET))
    assert config.prediction_type == "v_prediction" and config.steps_offset == 1 and config.snr_gamma == 5.0
    ours = VTAModel(config, empty=True).state_dict()
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    assert ours["unet.conv_in.weight"].shape == (320, 8, 3, 3)
    assert ours["conditioner.vision_proj.weight"].shape == (2048, 768)
    # without a UNet config file the built-in paper UNet is the released one
    assert official_model_config(_summary()) == config


def _release_folder(tmp_path, **summary_kw):
    folder = tmp_path / "vta-ldm-clip4clip-v-large"
    folder.mkdir()
    summary = _summary(embedding_dim=48, unet_model_config="configs/tiny_unet.json", **summary_kw)
    epoch = {"epoch": [1], "step": 100, "train_loss": 0.1, "val_loss": 0.1}
    (folder / "summary.jsonl").write_text(json.dumps(summary) + "\n\n" + json.dumps(epoch) + "\n\n")
    (folder / "tiny_unet.json").write_text(json.dumps(TINY_UNET))
    state, unet = _released_state(TINY_UNET, 48, empty=False)
    torch.save(state, folder / "pytorch_model_2.bin")
    return folder, state, unet


def test_import_reproduces_the_official_computation(tmp_path):
    torch.set_num_threads(1)
    folder, state, unet = _release_folder(tmp_path)
    assert read_summary(folder)["task"] == "video2audio"
    out = import_official(folder, tmp_path / "ours")
    ck = load_checkpoint(out)
    assert ck.config["vision"]["pixel_normalize"] is False and ck.config["vision"]["fps"] == 2.0
    assert ck.config["sampling"] == {"sampler": "ddpm", "steps": 300, "guidance": 3.0}
    assert ck.config["official"]["skipped_frozen_encoder_tensors"] == 3
    assert ck.geometry.latent_shape == (8, 256, 16)

    # the release: tokens = linear_layer(clip image_embeds); unet(z, t, tokens, encoder_attention_mask)
    clip = torch.randn(2, 20, 768)
    z = torch.randn(2, 8, 32, 16)
    t = torch.tensor([10, 600])
    with torch.no_grad():
        tokens = clip @ state["vid_fea_extractor.linear_layer.weight"].T + state["vid_fea_extractor.linear_layer.bias"]
        expected = unet(z, t, tokens, encoder_attention_mask=torch.ones(2, 20, dtype=torch.bool)).sample
        cond = ck.model.condition({"vision": clip}, latent_frames=32)
        got = ck.model(z, t, cond)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    # and it samples with the release's settings (v-prediction, DDPM, steps_offset 1)
    g = ck.geometry.with_duration(1.0)
    a = sample_latents(ck.model, {"vision": clip[:1, :2]}, geometry=g, sampler="ddpm", steps=2, seed=0)
    b = sample_latents(ck.model, {"vision": clip[:1, :2]}, geometry=g, sampler="ddpm", steps=2, seed=0)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_unexpected_releases_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unexpected key 'group_in.0.weight'"):
        map_state_dict({"group_in.0.weight": torch.zeros(1)}, text=False)
    with pytest.raises(ValueError, match="task='text2audio'"):
        official_model_config(_summary(task="text2audio"))
    with pytest.raises(ValueError, match="ib=true"):
        official_model_config(_summary(ib=True))
    with pytest.raises(ValueError, match="unsupported UNet setting act_fn='gelu'"):
        official_model_config(_summary(), {**_unet_config(RELEASED_UNET), "act_fn": "gelu"})
    with pytest.raises(ValueError, match="cross_attention_dim 2048 != embedding_dim 1024"):
        official_model_config(_summary(embedding_dim=1024), _unet_config(RELEASED_UNET))
    with pytest.raises(FileNotFoundError, match="no summary.jsonl"):
        import_official(tmp_path, tmp_path / "out")
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "summary.jsonl").write_text(json.dumps(_summary()) + "\n")
    with pytest.raises(FileNotFoundError, match="no pytorch_model_2.bin"):
        import_official(folder, tmp_path / "out")
