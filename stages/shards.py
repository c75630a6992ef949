"""shards: WebDataset tars for training and evaluation (the only thing training reads).

Per sample (WebDataset keys have no dots; fields are ``{key}.{field}``):
  vision.npy        float16 (T, D)      frozen per-frame vision embeddings
  text.npy          float16 (L, Dt)     label text embedding(s) (L = 2 for concat samples), optional
  flow.npy          float16 (T, Df)     optical-flow tokens, optional; motion.npy float32 (T,)
  latent_mean.npy   float32 (C, t, f)   VAE posterior mean (unscaled); latent_std.npy likewise
  audio.flac        16-bit FLAC at the geometry's sample rate (for evaluation and listening)
  json              key, clip_id, label, split, start_s, n_frames, n_samples, parents, cut_s
Tars are ``{split}-NNNNN.tar`` with ``shard_size`` samples, members sorted, mtime 0: identical
inputs give identical bytes. ``samples.parquet`` indexes every sample.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from storage import Artifact, ArtifactStore, ArtifactWriter, StageSpec, failed_row, filtered_row, ok_row
from storage.join import Joined, join_shard
from storage.lineage import recorded_input
from storage.shardmap import shard_names
from storage.tar import npy_bytes, write_tar
from vta_core.labels import sample_split

log = logging.getLogger("vta.shards")

STAGE = "shards"
CODE_VERSION = "2"  # 2: a window of a video missing from the labels CSV is filtered, not training data
INDEX_COLUMNS = ("key", "split", "shard", "label", "clip_id", "parents", "cut_s", "n_frames")


def flac_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _sample(j: Joined, *, audio_part: str, sample_rate: int) -> tuple[dict[str, bytes], dict[str, Any]] | str:
    """Members and index row of one joined sample, or the name of the missing part."""
    for part, suffix in (("latents", "latent_mean.npy"), ("features", "vision.npy"), (audio_part, "audio.npy")):
        if not j.has(part, suffix):
            return f"{part}/{suffix}"
    m = {
        "vision.npy": npy_bytes(j.array("features", "vision.npy"), np.float16),
        "latent_mean.npy": npy_bytes(j.array("latents", "latent_mean.npy"), np.float32),
        "latent_std.npy": npy_bytes(j.array("latents", "latent_std.npy"), np.float32),
        "audio.flac": flac_bytes(j.array(audio_part, "audio.npy"), sample_rate),
    }
    if j.has("features", "text.npy"):
        m["text.npy"] = npy_bytes(np.atleast_2d(j.array("features", "text.npy")), np.float16)
    if j.has("flow", "flow.npy"):
        m["flow.npy"] = npy_bytes(j.array("flow", "flow.npy"), np.float16)
    if j.has("flow", "motion.npy"):
        m["motion.npy"] = npy_bytes(j.array("flow", "motion.npy"), np.float32)
    meta = {k: j.meta.get(k) for k in ("clip_id", "label", "split", "start_s", "n_frames", "n_samples", "parents",
                                       "cut_s", "labels", "parent_start_s")}
    meta["key"] = j.key
    m["json"] = json.dumps(meta, sort_keys=True).encode()
    return m, meta


def shards_stage(
    store: ArtifactStore,
    *,
    decode: Artifact,
    features: Artifact,
    latents: Artifact,
    flow: Artifact | None = None,
    augment: Artifact | None = None,
    shard_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Join the per-sample outputs of the data stages into split-wise WebDataset shards."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    sample_rate = decode.params["sample_rate"]
    inputs = {"decode": decode.version, "features": features.version, "latents": latents.version}
    for name, art in (("flow", flow), ("augment", augment)):
        if art is not None:
            inputs[name] = art.version
    spec = StageSpec(STAGE, {"shard_size": shard_size}, inputs, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact (%s)", w.artifact.ref, w.artifact.counts)
            return w.artifact
        buffers: dict[str, list[tuple[dict[str, bytes], dict[str, Any]]]] = {}
        counters: dict[str, int] = {}
        index: list[dict[str, Any]] = []
        upstream = {r["clip_id"]: r for r in latents.read_table().to_pylist()}
        labelled = decode.record.get("labels_csv") is not None
        rows: list[dict[str, Any]] = []
        for key, sample in _joined_samples(decode, features, latents, flow, augment, sample_rate, progress):
            if isinstance(sample, str):  # not trainable: say why, one row per input
                up = upstream.get(key)
                if up is not None and up["status"] != "ok":
                    rows.append({**up, "error_message": f"latents: {up['error_message']}"})
                else:
                    rows.append(failed_row(key, "missing_part", f"{key} has no {sample}"))
                continue
            split = sample_split(sample[1]["split"], labelled=labelled)
            if split is None:
                rows.append(filtered_row(key, "no split: its video has no row in the labels CSV "
                                              f"{decode.record.get('labels_csv')}"))
                continue
            sample[1]["split"] = split
            sample[0]["json"] = json.dumps(sample[1], sort_keys=True).encode()
            rows.append(ok_row(key, split=split))
            buf = buffers.setdefault(sample[1]["split"], [])
            buf.append(sample)
            if len(buf) == shard_size:
                index += _flush(w, sample[1]["split"], buf, counters)
        for split, buf in sorted(buffers.items()):
            if buf:
                index += _flush(w, split, buf, counters)
        w.write_table("samples.parquet", pa.table({c: [r.get(c) for r in index] for c in INDEX_COLUMNS}))
        splits = {s: sum(r["split"] == s for r in index) for s in sorted({r["split"] for r in index})}
        return w.commit(rows=rows, extra={"splits": splits, "shards": counters})


def _joined_samples(decode, features, latents, flow, augment, sample_rate, progress) -> Iterator[tuple[str, Any]]:
    parts = [(decode, {"decode": decode, "features": features, "flow": flow, "latents": latents}, "decode")]
    if augment is not None:
        parts.append((augment, {"augment": augment, "latents": latents}, "augment"))
    total = sum(len(shard_names(a)) for a, _, _ in parts)
    done = 0
    for art, arts, primary in parts:
        for shard in shard_names(art):
            for j in join_shard(arts, shard, primary=primary):
                if primary == "augment":  # concat samples carry their own spliced features
                    j.parts["features"] = j.parts["augment"]
                    j.parts["flow"] = j.parts["augment"]
                yield j.key, _sample(j, audio_part=primary, sample_rate=sample_rate)
            done += 1
            if progress:
                progress(done, total)


def _flush(w: ArtifactWriter, split: str, buf: list, counters: dict[str, int]) -> list[dict[str, Any]]:
    n = counters.get(split, 0)
    counters[split] = n + 1
    name = f"{split}-{n:05d}"
    rows = [{**{c: meta.get(c) for c in INDEX_COLUMNS}, "shard": name,
             "parents": ",".join(meta["parents"]) if meta.get("parents") else None} for _, meta in buf]
    if w.shard_done(name) is None:  # a resumed run rebuilds the same buffers and skips written shards
        members = [(f"{meta['key']}.{field}", data) for m, meta in buf for field, data in m.items()]
        digest = w.write_bytes(f"{name}.tar", write_tar(members))
        w.commit_shard(name, rows=[], files={f"{name}.tar": digest})
    buf.clear()
    return rows


def shard_urls(art: Artifact, split: str = "train") -> list[str]:
    """Local paths / fsspec URLs of one split's shards, for the training loader."""
    shards = art.record.get("shards", {})
    return [art.file(f"{split}-{i:05d}.tar") for i in range(shards.get(split, 0))]


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    decode, features, latents, flow, augment = (recorded_input(store, art, name) for name in
                                                 ("decode", "features", "latents", "flow", "augment"))
    return shards_stage(out, decode=decode, features=features, latents=latents, flow=flow, augment=augment,
                        shard_size=art.params["shard_size"])
