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
from click.testing import CliRunner
from diffusers import DDPMScheduler, UNet2DConditionModel

from cli.main import cli
from vta_core.checkpoint import load_checkpoint
from vta_core.model import VTAModel
from vta_core.official import (
    KNOWN_SCHEDULERS,
    import_official,
    map_state_dict,
    official_model_config,
    read_summary,
    scheduler_settings,
)
from vta_core.sampling import make_sampler, sample_latents

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
# the release's configs/stable-diffusion-2-1.scheduler_48k.json: SD-2.1's v/steps_offset-1 scheduler with other betas
RELEASED_48K_SCHEDULER = {
    "_class_name": "DDPMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.02, "beta_schedule": "scaled_linear",
    "beta_start": 0.0015, "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
# the release's configs/stable_diffusion_sdxl_scheduler_config.json
RELEASED_SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False,
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
    assert config.snr_weighting == "epsilon"  # the release's min(SNR, 5)/SNR on its v target
    ours = VTAModel(config, empty=True).state_dict()
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    assert ours["unet.conv_in.weight"].shape == (320, 8, 3, 3)
    assert ours["conditioner.vision_proj.weight"].shape == (2048, 768)
    # without a UNet config file the built-in paper UNet is the released one
    assert official_model_config(_summary()) == config


def _release_folder(tmp_path, *, scheduler=None, scheduler_file="scheduler/scheduler_config.json", **summary_kw):
    """A release folder as the release writes it: summary.jsonl (training args, then one line per epoch),
    the UNet config it names, pytorch_model_2.bin (torch.save of the state dict) and, when given, a
    scheduler config."""
    folder = tmp_path / "vta-ldm-clip4clip-v-large"
    folder.mkdir()
    if scheduler is not None:
        (folder / scheduler_file).parent.mkdir(parents=True, exist_ok=True)
        (folder / scheduler_file).write_text(json.dumps(scheduler))
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
    # no scheduler file: summary.jsonl names a local copy of SD-2.1 (as the release's train.sh)
    sched = ck.config["official"]["scheduler"]
    assert "'ckpt/stable-diffusion-2-1'" in sched["source"] and "copy of stabilityai/stable-diffusion-2-1" in sched["source"]
    assert (sched["prediction_type"], sched["steps_offset"], sched["beta_start"]) == ("v_prediction", 1, 0.00085)
    assert ck.geometry.latent_shape == (8, 256, 16)

    # the release: tokens = linear_layer(clip image_embeds); unet(z, t, tokens, encoder_attention_mask)
    clip = torch.randn(2, 20, 768)
    z = torch.randn(2, 8, 32, 16)
    t = torch.tensor([10, 600])
    with torch.no_grad():
        tokens = clip @ state["vid_fea_extractor.linear_layer.weight"].T + state["vid_fea_extractor.linear_layer.bias"]
        expected = unet(z, t, tokens, encoder_attention_mask=torch.ones(2, 20, dtype=torch.bool)).sample
        cond = ck.model.condition({"vision": clip}, latent_frames=32, geometry=ck.geometry)
        got = ck.model(z, t, cond)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    # and it samples with the release's settings (v-prediction, DDPM, steps_offset 1)
    g = ck.geometry.with_duration(1.0)
    a = sample_latents(ck.model, {"vision": clip[:1, :2]}, geometry=g, sampler="ddpm", steps=2, seeds=[0])
    b = sample_latents(ck.model, {"vision": clip[:1, :2]}, geometry=g, sampler="ddpm", steps=2, seeds=[0])
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


def test_import_reads_the_release_scheduler_config_and_generates_with_its_settings(tmp_path):
    """A released-layout checkpoint with its own scheduler config (the release's 48k variant: other betas,
    so only the file can be their source), imported by `vta import-official`, sampled as the release
    samples (DDPM, guidance 3; 3 steps here, the checkpoint records 300)."""
    torch.set_num_threads(1)
    folder, _, _ = _release_folder(tmp_path, scheduler=RELEASED_48K_SCHEDULER)
    result = CliRunner().invoke(cli, ["import-official", str(folder), "--out", str(tmp_path / "ours")])
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(result.output.strip().splitlines()[-1])
    c = ck.model.config
    assert (c.prediction_type, c.steps_offset, c.beta_start, c.beta_end) == ("v_prediction", 1, 0.0015, 0.02)
    assert (c.snr_gamma, c.snr_weighting) == (5.0, "epsilon")
    official = ck.config["official"]
    assert official["scheduler"]["source"] == "scheduler/scheduler_config.json"
    assert official["scheduler"]["class"] == "DDPMScheduler"
    assert ck.config["sampling"] == {"sampler": "ddpm", "steps": 300, "guidance": 3.0}

    # the release builds DDPMScheduler.from_pretrained(...) on this file: the same schedule and timesteps
    release = DDPMScheduler.from_config(RELEASED_48K_SCHEDULER)
    torch.testing.assert_close(ck.model.scheduler.alphas_cumprod, release.alphas_cumprod)
    ours = make_sampler(ck.config["sampling"]["sampler"], ck.model)
    ours.set_timesteps(300)
    release.set_timesteps(300)
    assert torch.equal(ours.timesteps, release.timesteps) and ours.timesteps[-1] == 1  # steps_offset 1

    settings = ck.config["sampling"]
    g = ck.geometry.with_duration(1.0)
    vision = torch.randn(1, 2, 768, generator=torch.Generator().manual_seed(0))
    run = dict(geometry=g, sampler=settings["sampler"], steps=3, seeds=[0])
    a = sample_latents(ck.model, {"vision": vision}, guidance=settings["guidance"], **run)
    b = sample_latents(ck.model, {"vision": vision}, guidance=settings["guidance"], **run)
    plain = sample_latents(ck.model, {"vision": vision}, guidance=1.0, **run)
    assert a.shape == (1, 8, g.latent_frames, 16) and torch.isfinite(a).all() and torch.equal(a, b)
    assert not torch.allclose(a, plain)  # guidance 3 (with the zero ∅) is applied


def test_unknown_schedulers_are_refused_naming_them(tmp_path):
    folder, _, _ = _release_folder(tmp_path, scheduler_name="someone/custom-scheduler")
    with pytest.raises(ValueError, match="unknown scheduler 'someone/custom-scheduler'"):
        import_official(folder, tmp_path / "out")
    result = CliRunner().invoke(cli, ["import-official", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "unknown scheduler 'someone/custom-scheduler'" in result.output
    assert not (tmp_path / "out").exists()
    # a scheduler config beside the weights wins over the name, and is itself checked
    (folder / "scheduler_config.json").write_text(json.dumps(RELEASED_SDXL_SCHEDULER))
    with pytest.raises(ValueError, match=r"unsupported scheduler class 'EulerDiscreteScheduler' \(scheduler_config.json\)"):
        import_official(folder, tmp_path / "out")
    sd21 = KNOWN_SCHEDULERS["stabilityai/stable-diffusion-2-1"]
    assert scheduler_settings(sd21) == {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                        "beta_schedule": "scaled_linear", "prediction_type": "v_prediction",
                                        "steps_offset": 1}
    for bad, match in (({"prediction_type": "sample"}, "unsupported prediction_type 'sample'"),
                       ({"beta_schedule": "sigmoid"}, "unsupported beta_schedule 'sigmoid'"),
                       ({"use_karras_sigmas": True}, r"unsupported scheduler setting\(s\) \['use_karras_sigmas'\]"),
                       ({"thresholding": True}, "unsupported scheduler setting thresholding=True"),
                       ({"clip_sample": None}, "clip_sample=None")):
        with pytest.raises(ValueError, match=match):
            scheduler_settings({**sd21, **bad})
    no_clip = {k: v for k, v in sd21.items() if k != "clip_sample"}  # DDPMScheduler would clip x0
    with pytest.raises(ValueError, match="clip_sample=True"):
        scheduler_settings(no_clip)
