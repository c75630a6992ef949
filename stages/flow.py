"""flow: OpenCV optical flow per decoded window -> a motion curve and optical-flow embedding tokens.

Per window (frames uint8 (T, S, S, 3) from the decode artifact, the first ``n_frames`` valid):

- ``motion.npy`` float32 (T,): mean flow magnitude between consecutive frames, in pixels of the decoded
  frame size, with AV-Align's trajectory convention ``[m(f0,f1), m(f0,f1), m(f1,f2), ...]`` (entry i is
  the motion that *arrives* at frame i; entry 0 repeats the first pair). Zero past ``n_frames``.
- ``flow.npy`` float16 (T, D): the same flow fields rendered to RGB with the standard colour wheel
  (hue = direction, value = magnitude / the window's largest magnitude) and encoded by the frozen
  vision encoder, the paper's "optical-flow embeddings". Zero past ``n_frames``. Only with an encoder.

Methods: ``farneback`` uses AV-Align's exact parameters (docs/algorithms.md#av-align); ``dis`` / ``dis-medium`` are
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

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from storage import Artifact, ArtifactStore, StageSpec, failed_row, ok_row
from storage.lineage import recorded_input
from storage.sharded import ShardJob, ShardMap
from storage.shardmap import Result, Sample, SampleMap, map_shards
from storage.tar import npy_bytes
from vta_core.errors import ItemError
from vta_core.opticalflow import check_method, flow_to_rgb, window_flow
from vta_core.threads import stage_threads
from vta_core.vision import VisionEncoder, load_vision_encoder, parse_spec

log = logging.getLogger("vta.flow")

STAGE = "flow"
CODE_VERSION = "1"
MIN_FLOW_SIZE = 16
class FlowError(ItemError):
    """One window's flow failed; ``error_type`` goes to the manifest row."""


def _window(sample: Sample, *, method: str, flow_size: int | None, encoder: VisionEncoder | None) -> Result:
    try:
        frames = sample.array("frames.npy")  # (T, S, S, 3) uint8
        n = int(sample.meta["n_frames"])
        try:
            motion, fields = window_flow(frames, n, method=method, flow_size=flow_size)
        except cv2.error as e:
            raise FlowError("flow_error", " ".join(str(e).split())) from e
        members = {"motion.npy": npy_bytes(motion), "json": sample.members["json"]}
        if encoder is not None:
            tokens = np.zeros((len(frames), encoder.dim), np.float16)  # (T, D)
            if n:
                try:
                    tokens[:n] = encoder.encode_frames(flow_to_rgb(fields))
                except Exception as e:  # noqa: BLE001 - any encoder failure is this window's failed row
                    raise FlowError("encoder_error", f"{type(e).__name__}: {e}") from e
            members["flow.npy"] = npy_bytes(tokens)
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
    shard_map: ShardMap | None = None,
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
    task = FlowShard(method=method, flow_size=flow_size, encoder=encoder, encoder_sha256=params.get("encoder_sha256"),
                     device=device,
                     index_columns=("n_frames", "motion_mean", "motion_max"))
    return map_shards(store, spec=spec, source=source, task=task, progress=progress, shard_map=shard_map)


@functools.lru_cache(maxsize=2)
def _flow_encoder(spec: str, sha256: str | None, device: str) -> VisionEncoder:
    """The flow-token encoder, loaded once per process and checkpoint content (only when a shard is computed)."""
    return load_vision_encoder(spec, device=device)


@dataclass(frozen=True, kw_only=True)
class FlowShard(SampleMap):
    """One shard's windows: motion curves (+ flow tokens through ``encoder``)."""

    method: str
    flow_size: int | None
    encoder: str | None
    encoder_sha256: str | None = None  # in the cache key: a replaced local checkpoint is loaded again
    device: str = "cpu"

    def process(self, job: ShardJob, samples: Sequence[Sample]) -> list[Result]:
        enc = _flow_encoder(self.encoder, self.encoder_sha256, self.device) if self.encoder is not None else None
        with stage_threads():  # bytes independent of the engine (vta_core/threads.py)
            return [_window(s, method=self.method, flow_size=self.flow_size, encoder=enc) for s in samples]


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    p = art.params
    return flow_stage(out, source=recorded_input(store, art, "decode"), method=p["method"], flow_size=p["flow_size"],
                      encoder=p["encoder"], shard_map=options.get("shard_map"))
