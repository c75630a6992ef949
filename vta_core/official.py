"""Import the official VTA-LDM release (ariesssxu/vta-ldm) into our checkpoint format.

A released model folder (e.g. ``vta-ldm-clip4clip-v-large``) holds ``summary.jsonl`` (line 1: the
training arguments as JSON) and ``pytorch_model_2.bin`` (accelerate's save of the AudioDiffusion
module). Its keys, as read from the release code:

    unet.*                                  diffusers UNet2DConditionModel  -> unet.*
    vid_fea_extractor.linear_layer.{weight,bias}   φ: Linear(768 -> 2048)   -> conditioner.vision_proj.*
                                                   (also the text path)    -> conditioner.text_proj.*
    vid_fea_extractor.clip_vision.* / clip_text.*  frozen CLIP              -> skipped (features stage)

The noise schedule is the release's: its code builds ``DDPMScheduler.from_pretrained(scheduler_name,
subfolder="scheduler")`` with ``scheduler_name`` from summary.jsonl (train.py's default
"stabilityai/stable-diffusion-2-1"; its train.sh passes a local copy, "ckpt/stable-diffusion-2-1"). We read,
in order: ``scheduler/scheduler_config.json`` or ``scheduler_config.json`` in the release folder, else the
config of the hub id ``scheduler_name`` names (:data:`KNOWN_SCHEDULERS`; a local copy is recognised by
the repository's name). An unknown name, class, prediction type, beta schedule or setting is refused,
naming it. SD-2.1's is v-prediction, ``steps_offset`` 1, scaled_linear 0.00085–0.012, 1000 steps.

Generation quirks of the release, recorded in config.json: CLIP ViT-L/14 ``image_embeds`` of frames at
2 fps, resized 224 bicubic + centre crop, pixels in [0, 1] *without* CLIP mean/std normalisation;
DDPM 300 steps, guidance 3 (its inference_from_video.sh).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vta_core.checkpoint import save_checkpoint
from vta_core.diffusion import PREDICTION_TYPES
from vta_core.model import ModelConfig, VTAModel
from vta_core.presets import get_preset

WEIGHTS = "pytorch_model_2.bin"
SUMMARY = "summary.jsonl"
PROJECTION = "vid_fea_extractor.linear_layer."
FROZEN_ENCODERS = ("vid_fea_extractor.clip_vision.", "vid_fea_extractor.clip_text.")

# --- the release's scheduler -------------------------------------------------------------------
SCHEDULER_FILES = ("scheduler/scheduler_config.json", "scheduler_config.json")  # in the release folder
DEFAULT_SCHEDULER_NAME = "stabilityai/stable-diffusion-2-1"  # the release's train.py default
# hub id -> its scheduler/scheduler_config.json
KNOWN_SCHEDULERS: dict[str, dict[str, Any]] = {
    "stabilityai/stable-diffusion-2-1": {
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
        "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None,
    },
}
# the release reads any of these with DDPMScheduler.from_pretrained: only the shared DDPM schedule counts
SCHEDULER_CLASSES = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# mapped onto ModelConfig, with diffusers' DDPMScheduler defaults for a missing key
SCHEDULER_FIELDS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                    "prediction_type": "epsilon", "steps_offset": 0}
# settings our samplers hard-wire, and the value a config must have (a missing key takes diffusers'
# default: SCHEDULER_MISSING, else the required value)
SCHEDULER_REQUIRED = {"clip_sample": False, "trained_betas": None, "thresholding": False,
                      "rescale_betas_zero_snr": False, "timestep_spacing": "leading", "variance_type": "fixed_small"}
SCHEDULER_MISSING = {"clip_sample": True}  # DDPMScheduler clips x0 unless the config says otherwise
SCHEDULER_INERT = {"_class_name", "_diffusers_version", "set_alpha_to_one", "skip_prk_steps", "sample_max_value",
                   "clip_sample_range", "dynamic_thresholding_ratio"}  # no effect on DDPM with clip_sample off
# UNet config fields we map, and the ones that must keep diffusers' defaults
UNET_FIELDS = ("block_out_channels", "down_block_types", "up_block_types", "layers_per_block",
               "attention_head_dim", "cross_attention_dim", "use_linear_projection", "upcast_attention",
               "norm_num_groups")
UNET_FIXED = {"act_fn": "silu", "center_input_sample": False, "dual_cross_attention": False,
              "only_cross_attention": False, "num_class_embeds": None, "flip_sin_to_cos": True,
              "freq_shift": 0, "norm_eps": 1e-5, "downsample_padding": 1, "mid_block_scale_factor": 1}
OFFICIAL_SAMPLING = {"sampler": "ddpm", "steps": 300, "guidance": 3.0}


def read_summary(folder: str | Path) -> dict[str, Any]:
    """The training arguments: the first non-empty line of ``summary.jsonl``."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"no {SUMMARY} in {folder}")
    for line in path.read_text().splitlines():
        if line.strip():
            return json.loads(line)
    raise ValueError(f"{path} is empty")


def find_unet_config(folder: str | Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The UNet config named by ``unet_model_config`` if it sits in ``folder`` (or ``unet/config.json``)."""
    folder = Path(folder)
    candidates = [folder / "unet" / "config.json"]
    if summary.get("unet_model_config"):
        candidates.insert(0, folder / Path(summary["unet_model_config"]).name)
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    return None


def find_scheduler_config(folder: str | Path | None, summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(scheduler config, where it came from): a config file in ``folder``, else the known config of
    the scheduler summary.jsonl names (``scheduler_name``; missing = the release's default SD-2.1)."""
    if folder is not None:
        for rel in SCHEDULER_FILES:
            path = Path(folder) / rel
            if path.is_file():
                return json.loads(path.read_text()), rel
    name = summary.get("scheduler_name")
    source = f"scheduler_name {name!r} in {SUMMARY}"
    if not name:
        name, source = DEFAULT_SCHEDULER_NAME, f"the release's default scheduler_name {DEFAULT_SCHEDULER_NAME!r}"
    if name in KNOWN_SCHEDULERS:
        return dict(KNOWN_SCHEDULERS[name]), source
    # a local snapshot of a known hub repository (the release's train.sh: ckpt/stable-diffusion-2-1)
    copies = [hub for hub in KNOWN_SCHEDULERS if Path(str(name)).name == hub.split("/")[-1]]
    if copies:
        return dict(KNOWN_SCHEDULERS[copies[0]]), f"{source} (a copy of {copies[0]})"
    raise ValueError(f"unknown scheduler {name!r} (scheduler_name in {SUMMARY}): known are {sorted(KNOWN_SCHEDULERS)}; "
                     f"put its scheduler_config.json in the release folder")


def scheduler_settings(config: dict[str, Any], *, source: str = "scheduler config") -> dict[str, Any]:
    """The ModelConfig schedule fields of a diffusers scheduler config; refuses what we cannot reproduce."""
    cls = config.get("_class_name")
    if cls is not None and cls not in SCHEDULER_CLASSES:
        raise ValueError(f"unsupported scheduler class {cls!r} ({source}); supported: {list(SCHEDULER_CLASSES)}")
    unknown = sorted(set(config) - set(SCHEDULER_FIELDS) - set(SCHEDULER_REQUIRED) - SCHEDULER_INERT)
    if unknown:
        raise ValueError(f"unsupported scheduler setting(s) {unknown} ({source})")
    for key, required in SCHEDULER_REQUIRED.items():
        value = config.get(key, SCHEDULER_MISSING.get(key, required))
        if value != required:
            raise ValueError(f"unsupported scheduler setting {key}={value!r} ({source}); expected {required!r}")
    out = {key: config.get(key, default) for key, default in SCHEDULER_FIELDS.items()}
    if out["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {out['prediction_type']!r} ({source}); "
                         f"supported: {list(PREDICTION_TYPES)}")
    if out["beta_schedule"] not in BETA_SCHEDULES:
        raise ValueError(f"unsupported beta_schedule {out['beta_schedule']!r} ({source}); supported: {list(BETA_SCHEDULES)}")
    return {**out, "num_train_timesteps": int(out["num_train_timesteps"]), "steps_offset": int(out["steps_offset"]),
            "beta_start": float(out["beta_start"]), "beta_end": float(out["beta_end"])}


def official_model_config(
    summary: dict[str, Any], unet_config: dict[str, Any] | None = None, scheduler: dict[str, Any] | None = None
) -> ModelConfig:
    """Our ModelConfig for a released model. ``unet_config`` None = the released large-2048 UNet (paper);
    ``scheduler`` (:func:`scheduler_settings`) None = the known config of the scheduler the summary names."""
    if summary.get("task") != "video2audio":
        raise ValueError(f"only video2audio releases are supported, got task={summary.get('task')!r}")
    for flag in ("ib", "lb", "jepa", "cavp", "vivit", "denseav"):
        if summary.get(flag):
            raise ValueError(f"release uses another vision encoder ({flag}=true); only CLIP is supported")
    encoder = str(summary.get("fea_encoder_name", ""))
    vision_dim = 512 if "clip-vit-base" in encoder else 768  # as the release's Clip4Video
    embedding_dim = int(summary.get("embedding_dim", 2048))
    if scheduler is None:
        config, source = find_scheduler_config(None, summary)
        scheduler = scheduler_settings(config, source=source)
    snr_gamma = summary.get("snr_gamma")
    unet: dict[str, Any] = {}
    if unet_config is not None:
        for key, default in UNET_FIXED.items():
            if key in unet_config and unet_config[key] != default:
                raise ValueError(f"unsupported UNet setting {key}={unet_config[key]!r} (expected {default!r})")
        if unet_config.get("in_channels", 8) != unet_config.get("out_channels", 8):
            raise ValueError(f"in_channels {unet_config.get('in_channels')} != out_channels {unet_config.get('out_channels')}")
        unet = {k: unet_config[k] for k in UNET_FIELDS if k in unet_config}
        unet["latent_channels"] = unet_config.get("in_channels", 8)
        if unet.pop("cross_attention_dim", embedding_dim) != embedding_dim:
            raise ValueError(f"UNet cross_attention_dim {unet_config['cross_attention_dim']} != embedding_dim {embedding_dim}")
        if isinstance(unet.get("attention_head_dim"), list):
            unet["attention_head_dim"] = tuple(unet["attention_head_dim"])
    return ModelConfig(
        vision_dim=vision_dim,
        # the release's "joint"/"concat"/"text" modes send CLIP text embeddings through the same φ
        text_dim=vision_dim if summary.get("input_mol", "joint") in ("joint", "concat", "text") else 0,
        position_embedding=bool(summary.get("pe", False)),
        aligned_channels=0,
        cond_dropout=0.1,  # for further fine-tuning; the release trained none on the video path
        cross_attention_dim=embedding_dim,
        snr_gamma=None if snr_gamma is None else float(snr_gamma),
        snr_weighting=None if snr_gamma is None else "epsilon",  # the release: min(SNR, γ)/SNR for any target
        **scheduler,
        **unet,
    )


def map_state_dict(state: dict[str, torch.Tensor], *, text: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Released keys -> ours; returns (mapped, number of skipped frozen-encoder tensors)."""
    mapped: dict[str, torch.Tensor] = {}
    skipped = 0
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("unet."):
            mapped[key] = value
        elif key.startswith(PROJECTION):
            name = key[len(PROJECTION):]  # weight | bias
            mapped[f"conditioner.vision_proj.{name}"] = value
            if text:
                mapped[f"conditioner.text_proj.{name}"] = value.clone()
        elif key.startswith(FROZEN_ENCODERS):
            skipped += 1
        else:
            raise ValueError(f"unexpected key {key!r} in the official state dict")
    return mapped, skipped


def import_official(folder: str | Path, out_dir: str | Path) -> Path:
    """``vta import-official DIR``: read summary.jsonl + pytorch_model_2.bin, write our checkpoint."""
    folder = Path(folder)
    summary = read_summary(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS} in {folder}")
    scheduler_config, scheduler_source = find_scheduler_config(folder, summary)
    scheduler = scheduler_settings(scheduler_config, source=scheduler_source)
    config = official_model_config(summary, find_unet_config(folder, summary), scheduler)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    mapped, skipped = map_state_dict(state, text=config.text_dim > 0)
    model = VTAModel(config, empty=True)  # meta UNet: the loaded tensors are assigned, not copied
    missing, unexpected = model.load_state_dict(mapped, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"official weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    extra = {
        "official": {"source": str(folder), "skipped_frozen_encoder_tensors": skipped,
                     "summary": {k: summary.get(k) for k in ("fea_encoder_name", "embedding_dim", "pe", "input_mol",
                                                             "snr_gamma", "unet_model_config", "scheduler_name")},
                     "scheduler": {"source": scheduler_source, "class": scheduler_config.get("_class_name"),
                                   **scheduler}},
        "vision": {"encoder": "openai/clip-vit-large-patch14" if config.vision_dim == 768 else
                   "openai/clip-vit-base-patch32", "embedding": "image_embeds", "fps": 2.0, "frame_size": 224,
                   "resize": "bicubic+center_crop", "pixel_normalize": False},
        "sampling": dict(OFFICIAL_SAMPLING),
    }
    return save_checkpoint(out_dir, model=model, geometry=get_preset("paper").geometry, extra=extra)
