"""The input every frame encoder takes: uint8 RGB frames (N, H, W, 3), checked, and as float (N, 3, H, W) in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch


def check_frames(frames: np.ndarray) -> None:
    """Raise ValueError unless ``frames`` is uint8 (N, H, W, 3): the input every VisionEncoder takes."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape, dtype = getattr(frames, "shape", None), getattr(frames, "dtype", type(frames).__name__)
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {dtype} {shape}")


def to_unit(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0)
