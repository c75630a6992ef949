"""flow: OpenCV optical flow per decoded window -> a motion curve and optical-flow embedding tokens.

Per window (frames uint8 (T, S, S, 3) from the decode artifact, the first ``n_frames`` valid):

- ``motion.npy`` float32 (T,): mean flow magnitude between consecutive frames, in pixels of the decoded
  frame size, with AV-Align's trajectory convention ``[m(f0,f1), m(f0,f1), m(f1,f2), ...]`` (entry i is
  the motion that *arrives* at frame i; entry 0 repeats the first pair). Zero past ``n_frames``.
- ``flow.npy`` float16 (T, D): the same flow fields rendered to RGB with the standard colour wheel
  (hue = direction, value = magnitude / the window's largest magnitude) and encoded by the frozen
  vision encoder, the paper's "optical-flow embeddings". Zero past ``n_frames``. Only with an encoder.

Methods: ``farneback`` uses AV-Align's exact parameters (REFERENCE.md); ``dis`` / ``dis-medium`` are
``cv2.DISOpticalFlow`` with the FAST / MEDIUM preset. ``flow_size`` computes flow on frames resized to
``flow_size`` px (INTER_AREA) and rescales the vectors back to decoded pixels, so curves at different
``flow_size`` are comparable (Farneback's 15-px window is fixed in flow pixels, so at low resolution it
smooths over more of the scene). Flow runs on grey levels, as AV-Align: an object whose luminance
matches the background's moves little flow.

Default ``farneback`` (bench/flow.py, bench/results/flow.json): on the noisy synthetic clips DIS
curves correlate only r ~0.5 (10 fps, 64 px) / 0.1-0.4 (2 fps, 224 px) with Farneback's and hit onsets
less precisely (DIS has no smoothness prior, so pixel noise becomes ~1.5 px of "motion"); on clean real
clips at 64 px it agrees (r ~0.96) but is no faster there (OpenCV picks DIS's finest scale from the
image width, full resolution for small frames), and at 224 px r ~0.6. Farneback at half the decoded
size keeps curve r >= 0.85 and token r >= 0.68 on every set measured at 4-6x the speed: pass
``flow_size=size // 2`` when speed matters; ``None`` (full size) is AV-Align's own geometry.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from stages.shardmap import Result, Sample, map_shards
from storage import Artifact, ArtifactStore, StageSpec, failed_row, ok_row
from vta_core.vision import VisionEncoder, load_vision_encoder, parse_spec

log = logging.getLogger("vta.flow")

STAGE = "flow"
CODE_VERSION = "1"
METHODS = ("farneback", "dis", "dis-medium")
MIN_FLOW_SIZE = 16
MIN_RGB_SCALE_PX = 1.0  # flow RGB: magnitudes are divided by max(window max, this), decoded pixels
# AV-Align (Yariv et al.): cv2.calcOpticalFlowFarneback(prev, next, None, 0.5, 3, 15, 3, 5, 1.2, 0)
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}
_DIS_PRESETS = {"dis": cv2.DISOPTICAL_FLOW_PRESET_FAST, "dis-medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class FlowError(Exception):
    """One window's flow failed; ``error_type`` goes to the manifest row."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


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


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _window(sample: Sample, *, method: str, flow_size: int | None, encoder: VisionEncoder | None) -> Result:
    try:
        frames = sample.array("frames.npy")  # (T, S, S, 3) uint8
        n = int(sample.meta["n_frames"])
        try:
            motion, fields = window_flow(frames, n, method=method, flow_size=flow_size)
        except cv2.error as e:
            raise FlowError("flow_error", " ".join(str(e).split())) from e
        members = {"motion.npy": _npy(motion), "json": sample.members["json"]}
        if encoder is not None:
            tokens = np.zeros((len(frames), encoder.dim), np.float16)  # (T, D)
            if n:
                try:
                    tokens[:n] = encoder.encode_frames(flow_to_rgb(fields))
                except Exception as e:  # noqa: BLE001 - any encoder failure is this window's failed row
                    raise FlowError("encoder_error", f"{type(e).__name__}: {e}") from e
            members["flow.npy"] = _npy(tokens)
        valid = motion[:n]
        row = ok_row(sample.key, n_frames=n, motion_mean=float(valid.mean()) if n else 0.0,
                     motion_max=float(valid.max()) if n else 0.0)
        return row, members
    except FlowError as e:
        log.warning("%s: %s: %s", sample.key, e.error_type, e)
        return failed_row(sample.key, e.error_type, str(e)), {}
    except (KeyError, ValueError, OSError) as e:  # missing/corrupt frames or metadata, bad n_frames
        log.warning("%s: bad_input: %s", sample.key, e)
        return failed_row(sample.key, "bad_input", f"{type(e).__name__}: {e}"), {}


def flow_stage(
    store: ArtifactStore,
    *,
    source: Artifact,
    method: str = "farneback",
    flow_size: int | None = None,
    encoder: str | None = "pixels:8",
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Motion curves (+ flow tokens when ``encoder`` is set) for every window of a ``decode`` artifact.

    ``flow_size`` equal to the decoded size means full resolution (same version as None).
    """
    check_method(method)
    size = int(source.params["size"])
    if flow_size is not None and not MIN_FLOW_SIZE <= flow_size <= size:
        raise ValueError(f"flow_size={flow_size} outside [{MIN_FLOW_SIZE}, decoded size {size}]")
    flow_size = None if flow_size == size else flow_size
    params: dict[str, Any] = {"method": method, "flow_size": flow_size, "encoder": None}
    if encoder is not None:
        parsed = parse_spec(encoder)
        params["encoder"] = str(parsed)  # canonical identity
        if (digest := parsed.checkpoint_sha256()) is not None:  # a changed local checkpoint = a new version
            params["encoder_sha256"] = digest
    spec = StageSpec(STAGE, params, {"decode": source.version}, CODE_VERSION)
    enc = None
    if encoder is not None and store.get(STAGE, spec.version) is None:  # load weights only when computing
        enc = load_vision_encoder(encoder, device=device)

    def fn(samples: Sequence[Sample]) -> list[Result]:
        return [_window(s, method=method, flow_size=flow_size, encoder=enc) for s in samples]

    return map_shards(
        store, spec=spec, source=source, fn=fn, progress=progress,
        index_columns=["n_frames", "motion_mean", "motion_max"],
    )

