"""Frozen video encoders from transformers (the paper's Table 2: ViViT, V-JEPA 2): one clip's frames ->
per-frame embeddings ``(T, D)``, so they drop into the same time-aligned conditioning as a frame encoder.

Spec ``transformers:ARCH:SOURCE`` (vta_core/vision.py) with ARCH ``vivit`` | ``vjepa2`` and SOURCE a model
folder saved by ``save_pretrained`` (``config.json`` + ``model.safetensors``; loaded with
``local_files_only``) or a hub id such as ``google/vivit-b-16x2-kinetics400`` or
``facebook/vjepa2-vitl-fpc64-256`` (downloaded where the network allows). The folder's ``config.json``
``model_type`` must match ARCH.

A clip of N frames (N, H, W, 3) becomes the model's input like this:
  1. F = the model's frame count (ViViT ``num_frames``, V-JEPA 2 ``frames_per_clip``); frame j of the input
     is clip frame ⌊(j + ½)·N / F⌋ (uniform, repeating frames when N < F);
  2. each frame resized (shortest side, antialiased) and centre-cropped to the model's size S, normalised
     (ViViT: (x − 0.5) / 0.5, as its image processor's offset rescale; V-JEPA 2: ImageNet mean / std);
  3. the encoder's last hidden state: tokens (T' · h · w, D) after a ViViT CLS token, T' = F / tubelet_t;
     the spatial tokens averaged -> (T', D);
  4. clip frame i takes the tubelet its input position falls in: slot ⌊⌊(i + ½)·F / N⌋ / tubelet_t⌋.
V-JEPA 2 runs its encoder only (``skip_predictor``). Frozen, eval, fp32 on CPU and bf16 autocast on CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from vta_core.frames import check_frames, to_unit

ARCHS = ("vivit", "vjepa2")
_MEAN_STD = {"vivit": ([0.5] * 3, [0.5] * 3), "vjepa2": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}


def _geometry(arch: str, config: Any) -> tuple[int, int, int]:
    """(frames F, crop size S, temporal tubelet) of a transformers config."""
    if arch == "vivit":
        return int(config.num_frames), int(config.image_size), int(config.tubelet_size[0])
    return int(config.frames_per_clip), int(config.crop_size), int(config.tubelet_size)


def load_transformers_video(arch: str, source: str, *, local: bool, device: str) -> torch.nn.Module:
    """``AutoModel.from_pretrained(source)`` for ``arch``; ValueError in one line naming the source."""
    if arch not in ARCHS:
        raise ValueError(f"unknown transformers video encoder {arch!r}; known: {list(ARCHS)}")
    if local:
        config_file = Path(source) / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"not a transformers model folder (no config.json): {source}")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != arch:
            raise ValueError(f"{source} holds a {model_type!r} model, not {arch!r}")
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(source, local_files_only=local).to(device)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one line naming the weights
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"cannot load transformers {arch} from {source}: {type(e).__name__}: {reason}") from e


class TransformersVideoEncoder:
    """A frozen ViViT / V-JEPA 2 encoder; ``encode_frames`` takes ONE clip (module docstring)."""

    per_clip = True  # callers encode clip by clip (frames of several clips must not be concatenated)

    def __init__(self, model: torch.nn.Module, *, arch: str, spec: str, device: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.arch, self.spec, self.device = arch, spec, torch.device(device)
        self.frames, self.size, self.tubelet = _geometry(arch, model.config)
        self.mean, self.std = _MEAN_STD[arch]
        self.dim = int(model.config.hidden_size)
        self.bf16 = self.device.type == "cuda"

    def input_index(self, n: int) -> np.ndarray:
        """(F,) clip frame of each model input frame (step 1)."""
        return np.minimum(((np.arange(self.frames) + 0.5) * n / self.frames).astype(np.int64), n - 1)

    def slot_index(self, n: int) -> np.ndarray:
        """(N,) tubelet slot of each clip frame (step 4)."""
        pos = np.minimum(((np.arange(n) + 0.5) * self.frames / n).astype(np.int64), self.frames - 1)
        return pos // self.tubelet

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: one clip, float (N, 3, H, W) in [0, 1] -> (N, D)."""
        n = len(x)
        x = x.to(self.device)[torch.from_numpy(self.input_index(n)).to(self.device)]  # (F, 3, H, W)
        x = TF.resize(x, self.size, interpolation=InterpolationMode.BICUBIC, antialias=True).clamp(0.0, 1.0)
        x = TF.normalize(TF.center_crop(x, [self.size, self.size]), self.mean, self.std)[None]  # (1, F, 3, S, S)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.arch == "vivit":
                tokens = self.model(pixel_values=x).last_hidden_state[:, 1:]  # drop CLS -> (1, T'·h·w, D)
            else:
                tokens = self.model(pixel_values_videos=x, skip_predictor=True).last_hidden_state  # (1, T'·h·w, D)
        per_slot = tokens.float().reshape(self.frames // self.tubelet, -1, self.dim).mean(dim=1)  # (T', D)
        return per_slot[torch.from_numpy(self.slot_index(n)).to(per_slot.device)]  # (N, D)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        check_frames(frames)
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.features(to_unit(frames, self.device)).cpu().numpy()
