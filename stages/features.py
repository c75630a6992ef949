"""features: frozen vision encoder -> per-frame embeddings, text encoder -> label embeddings.

Input: a ``decode`` artifact. Output artifact ``features/{version}/``:
  shard-NNNNN.tar     per window ``{key}.vision.npy`` float16 (T, D) — rows past the window's valid
                      ``n_frames`` (decode's zero padding) are ZERO — and ``{key}.text.npy`` float16 (Dt,),
                      the label's embedding (only when the window has a label and a text encoder is set)
  samples.parquet     index: key, shard, n_frames, frames (T), has_text
  manifest.parquet    one row per input window, failures included

The version hashes the canonical encoder specs, the sha256 of any local checkpoint file and the decode
version: changing the encoder makes a new features version and reuses decode. Frames of all windows in a
shard go through the encoder together (batches cross windows); a background thread reads and unpacks
the next shard while the current one is encoded.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage import Artifact, ArtifactStore, StageSpec, failed_row, ok_row
from storage.lineage import recorded_input
from storage.sharded import ArtifactRef, ShardJob, ShardMap
from storage.shardmap import Result, Sample, SampleMap, index_table, map_shards, shard_names
from storage.tar import npy_bytes
from vta_core.errors import ItemError
from vta_core.threads import stage_threads
from vta_core.vision import VisionEncoder, encode_clips, load_text_encoder, load_vision_encoder, parse_spec

log = logging.getLogger("vta.features")

STAGE = "features"
CODE_VERSION = "2"  # 2: each label embedded alone (batch-independent bytes)
INDEX_COLUMNS = ("n_frames", "frames", "has_text")


def features_params(*, vision: str, text: str | None = None) -> dict[str, Any]:
    """The version-relevant parameters: canonical specs + content hashes of local checkpoints."""
    v = parse_spec(vision)
    t = parse_spec(text).text_tower() if text else None
    return {
        "vision": str(v),
        "vision_sha256": v.checkpoint_sha256(),
        "text": str(t) if t else None,
        "text_sha256": t.checkpoint_sha256() if t else None,
    }


def features_stage(
    store: ArtifactStore,
    *,
    source: Artifact,
    vision: str,
    text: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    shard_map: ShardMap | None = None,
) -> Artifact:
    """Embed every window of the ``decode`` artifact ``source`` (resumable, one task per shard).

    ``vision``/``text`` are encoder specs (vta_core.vision); ``text=None`` or ``pixels:*`` writes no
    ``text.npy``. ``batch_size`` frames (and labels) per forward; ``device`` e.g. ``"cuda"`` (its shard
    tasks then ask the Dask runner for GPU workers). ``shard_map``: where the shards run (default here).
    """
    spec = StageSpec(STAGE, features_params(vision=vision, text=text), {"decode": source.version}, CODE_VERSION)
    task = EmbedShard(vision=vision, vision_sha256=spec.params["vision_sha256"], device=device, batch_size=batch_size,
                      index_columns=INDEX_COLUMNS)

    def plan() -> list[ShardJob]:
        index = index_table(source)
        labelled = "label" in index.column_names
        labels = sorted({x for x in index.column("label").to_pylist() if x}) if text and labelled else []
        embedded = _embed_labels(labels, text, device=device, batch_size=batch_size) if labels else {}
        by_shard: dict[str, dict[str, np.ndarray]] = {}
        for shard, label in zip(index.column("shard").to_pylist(),
                                index.column("label").to_pylist() if labelled else [None] * index.num_rows, strict=True):
            if label in embedded:  # each shard carries the embeddings of its own labels only (small payloads)
                by_shard.setdefault(shard, {})[label] = embedded[label]
        ref = ArtifactRef.of(source)
        return [ShardJob(store.root, spec, name, (ref, name, by_shard.get(name, {}))) for name in shard_names(source)]

    return map_shards(store, spec=spec, source=source, task=task, plan=plan, progress=progress, shard_map=shard_map)


@functools.lru_cache(maxsize=2)
def _vision_encoder(vision: str, sha256: str | None, device: str, batch_size: int) -> VisionEncoder:
    """The frozen encoder, loaded once per process and checkpoint content (a Dask worker encodes many shards)."""
    return load_vision_encoder(vision, device=device, batch_size=batch_size)


@dataclass(frozen=True, kw_only=True)
class EmbedShard(SampleMap):
    """One shard's windows through the vision encoder; payload: (decode ref, shard, {label: embedding})."""

    vision: str
    vision_sha256: str | None = None  # in the cache key: a replaced local checkpoint is loaded again
    device: str = "cpu"
    batch_size: int = 64
    read_ahead: bool = True  # the next shard is read and unpacked while this one is encoded

    @property
    def resources(self) -> dict[str, float] | None:
        return {"GPU": 1} if self.device.startswith("cuda") else None

    def process(self, job: ShardJob, samples: Sequence[Sample]) -> list[Result]:
        with stage_threads():  # bytes independent of the engine (vta_core/threads.py)
            encoder = _vision_encoder(self.vision, self.vision_sha256, self.device, self.batch_size)
            return _process_shard(samples, encoder, job.payload[2])


def _embed_labels(labels: Sequence[str], text: str, *, device: str, batch_size: int) -> dict[str, np.ndarray]:
    """Each distinct label embedded once and alone (the text tower is released before the vision one loads).
    Alone: a batch pads its texts to the longest one, which moves a sentence-transformers embedding by a
    few float16 ulps — a label's bytes must not depend on which other labels the folder has."""
    encoder = load_text_encoder(text, device=device, batch_size=batch_size) if labels else None
    if encoder is None:
        return {}
    emb = np.concatenate([encoder.encode([x]) for x in labels]).astype(np.float16)  # (L, Dt)
    del encoder
    gc.collect()
    return dict(zip(labels, emb, strict=True))


class FeatureError(ItemError):
    """A window that cannot be embedded: ``error_type`` goes to its manifest row."""


@dataclass
class _Window:
    key: str
    meta: dict[str, Any]
    frames: np.ndarray  # (T, H, W, 3) uint8
    n_frames: int  # valid frames; the rest are decode's zero padding


def _load_window(sample: Sample) -> _Window:
    if "frames.npy" not in sample.members:
        raise FeatureError("missing_frames", f"{sample.key}: no frames.npy member")
    try:
        frames = sample.array("frames.npy")
    except ValueError as e:
        raise FeatureError("bad_frames", f"{sample.key}: unreadable frames.npy: {e}") from e
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise FeatureError("bad_frames", f"{sample.key}: frames are {frames.dtype} {frames.shape}, expected uint8 (T, H, W, 3)")
    n = int(sample.meta.get("n_frames", len(frames)))
    return _Window(sample.key, sample.meta, frames, min(max(n, 0), len(frames)))


def _encode_windows(encoder: VisionEncoder, windows: Sequence[_Window]) -> list[np.ndarray | FeatureError]:
    """Valid frames of all windows in one encoder call (batches span windows); on failure, one by one
    so that a bad window fails alone. Returns float16 (T, D) per window, zero past ``n_frames``."""

    def padded(w: _Window, emb: np.ndarray) -> np.ndarray:
        out = np.zeros((len(w.frames), encoder.dim), np.float16)  # (T, D)
        out[: w.n_frames] = emb
        if not np.isfinite(out).all():
            raise FeatureError("non_finite_embedding", f"{w.key}: embedding has NaN/inf (float16 overflow?)")
        return out

    def one(w: _Window) -> np.ndarray | FeatureError:
        try:
            return padded(w, encoder.encode_frames(w.frames[: w.n_frames]))
        except FeatureError as e:
            return e
        except (RuntimeError, ValueError) as e:  # e.g. out of memory, an odd frame size
            return FeatureError("encode_error", f"{w.key}: {type(e).__name__}: {e}")

    try:
        emb = encode_clips(encoder, [w.frames[: w.n_frames] for w in windows])  # (ΣT_valid, D)
    except (RuntimeError, ValueError) as e:
        log.warning("batched encode failed (%s: %s); encoding windows one by one", type(e).__name__, e)
        return [one(w) for w in windows]
    bounds = np.cumsum([0] + [w.n_frames for w in windows])
    out: list[np.ndarray | FeatureError] = []
    for w, a, b in zip(windows, bounds[:-1], bounds[1:], strict=True):
        try:
            out.append(padded(w, emb[a:b]))
        except FeatureError as e:
            out.append(e)
    return out


def _process_shard(
    samples: Sequence[Sample], encoder: VisionEncoder, label_embeddings: dict[str, np.ndarray]
) -> list[Result]:
    loaded: dict[str, _Window | FeatureError] = {}
    for s in samples:
        try:
            loaded[s.key] = _load_window(s)
        except FeatureError as e:
            loaded[s.key] = e
    good = [x for x in loaded.values() if isinstance(x, _Window)]
    encoded = dict(zip([x.key for x in good], _encode_windows(encoder, good) if good else [], strict=True))

    out: list[Result] = []
    for s in samples:
        res = encoded.get(s.key, loaded[s.key])
        base = {"source_clip_id": s.meta.get("clip_id"), "label": s.meta.get("label"), "split": s.meta.get("split")}
        if isinstance(res, FeatureError):
            out.append((failed_row(s.key, res.error_type, str(res), **base), {}))
            log.warning("%s: %s: %s", s.key, res.error_type, res)
            continue
        win = loaded[s.key]
        text = label_embeddings.get(win.meta.get("label") or "")
        members = {"vision.npy": npy_bytes(res)}
        if text is not None:
            members["text.npy"] = npy_bytes(text)
        out.append((ok_row(s.key, **base, n_frames=win.n_frames, frames=len(win.frames), has_text=text is not None),
                    members))
    return out


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    p = art.params
    return features_stage(out, source=recorded_input(store, art, "decode"), vision=p["vision"], text=p.get("text"),
                          shard_map=options.get("shard_map"))
