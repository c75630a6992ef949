"""Optical flow on decoded frames: AV-Align's Farneback parameters, OpenCV DIS, and the colour-wheel
rendering that turns flow fields into images for a frozen vision encoder.

Shared by the ``flow`` stage (motion curves + flow tokens), generation (flow tokens for new videos)
and the AV-Align metric (the same Farneback parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

METHODS = ("farneback", "dis", "dis-medium")
MIN_RGB_SCALE_PX = 1.0  # flow RGB: magnitudes are divided by max(window max, this), decoded pixels
# AV-Align (Yariv et al.): cv2.calcOpticalFlowFarneback(prev, next, None, 0.5, 3, 15, 3, 5, 1.2, 0)
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}
_DIS_PRESETS = {"dis": cv2.DISOPTICAL_FLOW_PRESET_FAST, "dis-medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown optical-flow method {method!r}; choose one of {list(METHODS)}")
    return method


def flow_fn(method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``fn(prev, next)`` on uint8 grayscale (H, W) images -> flow float32 (H, W, 2) in pixels (dx, dy)."""
    check_method(method)
    if method == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)
    dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[method])
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def window_flow(
    frames: np.ndarray, n_frames: int, *, method: str = "farneback", flow_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flow of one window: (motion (T,) float32, fields (n, h, w, 2) float32), both in decoded pixels.

    ``frames``: uint8 (T, H, W, 3) RGB; ``n_frames`` valid. ``fields[i]`` is the flow arriving at frame i
    (``fields[0]`` = flow(f0, f1), as AV-Align's trajectory); ``h, w`` = ``flow_size`` or H, W.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, height, width, _ = frames.shape
    if not 0 <= n_frames <= t:
        raise ValueError(f"n_frames={n_frames} outside [0, {t}]")
    size = (width, height) if flow_size is None else (flow_size, flow_size)  # cv2 order (w, h)
    motion = np.zeros(t, np.float32)  # (T,)
    if n_frames < 2:
        return motion, np.zeros((n_frames, size[1], size[0], 2), np.float32)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[:n_frames]]
    if flow_size is not None:
        grey = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grey]
    calc = flow_fn(method)
    pairs = np.stack([calc(grey[i - 1], grey[i]) for i in range(1, n_frames)])  # (n-1, h, w, 2)
    pairs *= np.array([width / size[0], height / size[1]], np.float32)  # back to decoded pixels
    fields = np.concatenate([pairs[:1], pairs])  # (n, h, w, 2): trajectory [m(f0,f1)] + [m(f_{i-1},f_i)]
    motion[:n_frames] = np.sqrt((fields**2).sum(-1)).mean(axis=(1, 2))
    return motion, fields


def flow_to_rgb(fields: np.ndarray) -> np.ndarray:
    """Colour-wheel rendering: uint8 (N, h, w, 3) RGB from flow (N, h, w, 2).

    Hue = direction, saturation full, value = magnitude / the largest magnitude in ``fields`` (at least
    MIN_RGB_SCALE_PX, so still frames stay dark): one window shares one scale, so frame-to-frame changes
    of speed stay visible.
    """
    n, h, w, _ = fields.shape
    if n == 0:
        return np.zeros((0, h, w, 3), np.uint8)
    mag, ang = cv2.cartToPolar(fields[..., 0].reshape(-1, w), fields[..., 1].reshape(-1, w), angleInDegrees=True)
    mag, ang = mag.reshape(n, h, w), ang.reshape(n, h, w)
    scale = max(float(mag.max()), MIN_RGB_SCALE_PX)
    hsv = np.empty((n * h, w, 3), np.uint8)
    hsv[..., 0] = (ang.reshape(-1, w) / 2).astype(np.uint8) % 180  # OpenCV hue is 0..179 (degrees / 2)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag.reshape(-1, w) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(n, h, w, 3)
