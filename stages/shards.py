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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from storage import Artifact, ArtifactStore, ArtifactWriter, StageSpec, failed_row, filtered_row, ok_row
from storage.join import Joined, join_shard
from storage.lineage import recorded_input
from storage.sharded import ArtifactRef, Record, ShardJob, ShardMap, ShardTask, run_sharded
from storage.shardmap import index_table, shard_names
from storage.tar import npy_bytes, write_tar
from vta_core.labels import sample_split

log = logging.getLogger("vta.shards")

STAGE = "shards"
CODE_VERSION = "3"  # 2: a window of a video missing from the labels CSV is filtered, not training data;
# 3: one task per output shard, planned from the inputs' indexes (a shard's marker now carries its index rows)
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
    shard_map: ShardMap | None = None,
) -> Artifact:
    """Join the per-sample outputs of the data stages into split-wise WebDataset shards (one task per
    output shard; ``shard_map``: where they run, default here)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    sample_rate = decode.params["sample_rate"]
    inputs = {"decode": decode.version, "features": features.version, "latents": latents.version}
    for name, art in (("flow", flow), ("augment", augment)):
        if art is not None:
            inputs[name] = art.version
    spec = StageSpec(STAGE, {"shard_size": shard_size}, inputs, CODE_VERSION)
    labelled = decode.record.get("labels_csv") is not None
    rows: list[dict[str, Any]] = []

    def plan() -> list[ShardJob]:
        """Which sample goes to which output shard, from the inputs' indexes alone (no payload is read):
        samples in input order (decode shards, then augment shards; keys sorted within a shard), each
        split's buffer cut into a shard when it holds ``shard_size``, the rest in split order at the end."""
        rows.clear()
        upstream = {r["clip_id"]: r for r in latents.read_table().to_pylist()}
        has_latents = set(index_table(latents).column("key").to_pylist())
        has_features = set(index_table(features).column("key").to_pylist())
        # a concat sample has vision.npy when both parents had features in augment's own features input
        aug_features = augment.record["inputs"].get("features") if augment is not None else None
        parent_features = (has_features if aug_features == features.version else
                           set(index_table(store.resolve(f"features@{aug_features}")).column("key").to_pylist())
                           if aug_features else set())
        buffers: dict[str, list[tuple[str, str, str]]] = {}
        counters: dict[str, int] = {}
        jobs: list[ShardJob] = []

        def flush(split: str) -> None:
            n = counters.get(split, 0)
            counters[split] = n + 1
            jobs.append(ShardJob(store.root, spec, f"{split}-{n:05d}", (split, tuple(buffers[split]))))
            buffers[split] = []

        for kind, key, shard, split, parents in _candidates(decode, augment):
            if key not in has_latents:
                missing = "latents/latent_mean.npy"
            elif not (key in has_features if kind == "decode" else all(p in parent_features for p in parents)):
                missing = f"{'features' if kind == 'decode' else 'augment'}/vision.npy"  # concat: spliced features
            else:
                missing = None
            if missing is not None:  # not trainable: say why, one row per input
                up = upstream.get(key)
                if up is not None and up["status"] != "ok":
                    rows.append({**up, "error_message": f"latents: {up['error_message']}"})
                else:
                    rows.append(failed_row(key, "missing_part", f"{key} has no {missing}"))
                continue
            if (split := sample_split(split, labelled=labelled)) is None:
                rows.append(filtered_row(key, "no split: its video has no row in the labels CSV "
                                              f"{decode.record.get('labels_csv')}"))
                continue
            rows.append(ok_row(key, split=split))
            buffers.setdefault(split, []).append((kind, shard, key))
            if len(buffers[split]) == shard_size:
                flush(split)
        for split in sorted(buffers):
            if buffers[split]:
                flush(split)
        return jobs

    def finalize(w: ArtifactWriter, records: list[Record]) -> Artifact:
        index = [r for rec in records for r in rec["index"]]
        w.write_table("samples.parquet", pa.table({c: [r.get(c) for r in index] for c in INDEX_COLUMNS}))
        splits = {s: sum(r["split"] == s for r in index) for s in sorted({r["split"] for r in index})}
        counters = {s: sum(rec["shard"].startswith(f"{s}-") for rec in records) for s in splits}
        return w.commit(rows=rows, extra={"splits": splits, "shards": counters})

    task = WriteShard(decode=ArtifactRef.of(decode), features=ArtifactRef.of(features), latents=ArtifactRef.of(latents),
                      flow=ArtifactRef.of(flow) if flow is not None else None,
                      augment=ArtifactRef.of(augment) if augment is not None else None, sample_rate=sample_rate)
    return run_sharded(store, spec=spec, plan=plan, task=task, finalize=finalize, shard_map=shard_map,
                       progress=progress)


def _candidates(decode: Artifact, augment: Artifact | None) -> Iterator[tuple[str, str, str, str | None, list[str]]]:
    """(kind, key, input shard, recorded split, parents) of every decoded window, then every concat sample,
    in the order their shards are read (shard by shard, keys sorted within one)."""
    for kind, art, table in (("decode", decode, "windows.parquet"), ("augment", augment, "samples.parquet")):
        if art is None:
            continue
        rows = art.read_table(table).to_pylist()
        by_shard: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_shard.setdefault(r["shard"], []).append(r)
        for shard in shard_names(art):
            for r in sorted(by_shard.get(shard, []), key=lambda r: r["key"]):
                parents = r["parents"].split(",") if kind == "augment" and r.get("parents") else []
                yield kind, r["key"], shard, r.get("split"), parents


@dataclass(frozen=True)
class WriteShard(ShardTask):
    """One output shard: its samples' members joined from the inputs; payload ``(split, ((kind, input shard,
    key), ...))``, the samples in shard order."""

    decode: ArtifactRef
    features: ArtifactRef
    latents: ArtifactRef
    flow: ArtifactRef | None
    augment: ArtifactRef | None
    sample_rate: int

    def compute(self, job: ShardJob, loaded: Any, writer: ArtifactWriter) -> Record:
        split, entries = job.payload
        wanted: dict[tuple[str, str], set[str]] = {}
        for kind, shard, key in entries:
            wanted.setdefault((kind, shard), set()).add(key)
        load = {"decode": self.decode, "features": self.features, "latents": self.latents, "flow": self.flow,
                "augment": self.augment}
        samples: dict[str, tuple[dict[str, bytes], dict[str, Any]]] = {}
        for (kind, shard), keys in wanted.items():
            if kind == "decode":
                arts = {n: load[n].load() for n in ("decode", "features", "flow", "latents") if load[n] is not None}
            else:
                arts = {"augment": self.augment.load(), "latents": self.latents.load()}
            for j in join_shard(arts, shard, primary=kind):
                if j.key not in keys:
                    continue
                if kind == "augment":  # concat samples carry their own spliced features
                    j.parts["features"] = j.parts["augment"]
                    j.parts["flow"] = j.parts["augment"]
                sample = _sample(j, audio_part=kind, sample_rate=self.sample_rate)
                if isinstance(sample, str):
                    raise RuntimeError(f"{job.label}: {j.key} has no {sample}, but the plan found it complete")
                sample[1]["split"] = split
                sample[0]["json"] = json.dumps(sample[1], sort_keys=True).encode()
                samples[j.key] = sample
        buf = [samples[key] for _, _, key in entries]
        index = [{**{c: meta.get(c) for c in INDEX_COLUMNS}, "shard": job.shard,
                  "parents": ",".join(meta["parents"]) if meta.get("parents") else None} for _, meta in buf]
        members = [(f"{meta['key']}.{field}", data) for m, meta in buf for field, data in m.items()]
        return {"rows": [], "files": {f"{job.shard}.tar": writer.write_bytes(f"{job.shard}.tar", write_tar(members))},
                "index": index}


def shard_urls(art: Artifact, split: str = "train") -> list[str]:
    """Local paths / fsspec URLs of one split's shards, for the training loader."""
    shards = art.record.get("shards", {})
    return [art.file(f"{split}-{i:05d}.tar") for i in range(shards.get(split, 0))]


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    decode, features, latents, flow, augment = (recorded_input(store, art, name) for name in
                                                 ("decode", "features", "latents", "flow", "augment"))
    return shards_stage(out, decode=decode, features=features, latents=latents, flow=flow, augment=augment,
                        shard_size=art.params["shard_size"], shard_map=options.get("shard_map"))
