"""augment: concat augmentation (VTA-LDM "Concat augment") and the concat test set.

Two windows with different labels are spliced at one instant ``cut_s``: the new sample takes the
first window's frames/features and audio before the cut and the second's after it, each at its
own time position, so sound stays aligned with picture on both sides. The cut lies on a video
frame boundary (``cut_s = cut_frame / fps``) and the audio is cut at ``round(cut_s * sample_rate)``
of the *target* sample rate (the official release cut at the source rate — a defect we don't copy).
Per-frame features (CLIP, optical-flow tokens, motion curve) are spliced at the same frame.

Training pairs are drawn within a shard (memory and I/O stay linear in the dataset):
``train_ratio`` new samples per kept train window. Only windows whose recorded split is ``train`` (or
``test``, for ``test_concat``) are parents: a window without a split is never one. The ``test_concat``
split that the paper evaluates on pairs test windows across the whole test split (``test_ratio`` per test window),
chosen from the window index and built with at most two decode shards in memory. Keys are ``cat`` + a hash; the JSON names both parents.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from stages.decode import DecodeParams
from storage import Artifact, ArtifactStore, ArtifactWriter, StageSpec, ok_row
from storage.join import Joined, join_shard
from storage.lineage import kept_keys, recorded_input
from storage.sharded import ArtifactRef, Record, ShardJob, ShardMap, ShardTask, kept_keys_of, run_sharded
from storage.shardmap import shard_names
from storage.tar import npy_bytes, write_tar

log = logging.getLogger("vta.augment")

STAGE = "augment"
CODE_VERSION = "3"  # 2: distinct pairs (a repeated pair could duplicate a key); 3: no split = never a parent
CUT_RANGE = (0.25, 0.75)  # cut between a quarter and three quarters of the window
TEST_CHUNK = 256  # test_concat samples per output shard


def _pairs(labels: Sequence[str | None], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` distinct ordered index pairs with different labels (fewer if there are too few labels).
    Distinct: a repeated pair could draw the same cut and so the same sample key twice."""
    pairs: list[tuple[int, int]] = []
    if len(set(labels)) < 2:
        return pairs
    for _ in range(n * 20):
        if len(pairs) == n:
            break
        a, b = (int(i) for i in rng.choice(len(labels), 2, replace=False))
        if labels[a] != labels[b] and (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def splice(a: Joined, b: Joined, *, cut_frame: int, fps: float, sample_rate: int, split: str) -> tuple[str, dict[str, bytes], dict]:
    """The concat sample of ``a`` (before the cut) and ``b`` (from the cut on)."""
    cut_s = cut_frame / fps
    cut_sample = round(cut_s * sample_rate)
    members: dict[str, bytes] = {}
    audio = np.concatenate([a.array("decode", "audio.npy")[:cut_sample], b.array("decode", "audio.npy")[cut_sample:]])
    members["audio.npy"] = npy_bytes(audio.astype(np.float32))
    for part, suffix in (("features", "vision.npy"), ("flow", "flow.npy"), ("flow", "motion.npy")):
        if a.has(part, suffix) and b.has(part, suffix):
            xa, xb = a.array(part, suffix), b.array(part, suffix)  # (T, ...) per frame
            members[suffix] = npy_bytes(np.concatenate([xa[:cut_frame], xb[cut_frame:]]))
    if a.has("features", "text.npy") and b.has("features", "text.npy"):
        ta, tb = a.array("features", "text.npy"), b.array("features", "text.npy")  # (Dt,) or (L, Dt)
        members["text.npy"] = npy_bytes(np.concatenate([np.atleast_2d(ta), np.atleast_2d(tb)]))
    key = "cat" + hashlib.sha1(f"{a.key}|{b.key}|{cut_frame}".encode()).hexdigest()[:12]
    n_frames = min(cut_frame, a.meta["n_frames"]) + max(0, b.meta["n_frames"] - cut_frame)
    meta = {
        "key": key, "parents": [a.key, b.key], "parent_clip_ids": [a.meta.get("clip_id"), b.meta.get("clip_id")],
        "parent_start_s": [a.meta.get("start_s", 0.0), b.meta.get("start_s", 0.0)],
        "cut_s": cut_s, "cut_frame": cut_frame, "cut_sample": cut_sample,
        "label": f"{a.meta.get('label')} + {b.meta.get('label')}", "labels": [a.meta.get("label"), b.meta.get("label")],
        "split": split, "n_frames": n_frames,
        "n_samples": min(cut_sample, a.meta["n_samples"]) + max(0, b.meta["n_samples"] - cut_sample),
    }
    members["json"] = json.dumps(meta, sort_keys=True).encode()
    return key, members, meta


def augment_stage(
    store: ArtifactStore,
    *,
    decode: Artifact,
    features: Artifact | None = None,
    flow: Artifact | None = None,
    filter_art: Artifact | None = None,
    train_ratio: float = 0.5,
    test_ratio: float = 1.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    shard_map: ShardMap | None = None,
) -> Artifact:
    """Concat-augmented training samples and the concat test set, as ``aug-NNNNN.tar`` shards (one task
    each; ``shard_map``: where they run, default here)."""
    windows = DecodeParams.recorded(decode)  # the geometry the windows were cut with
    fps, sample_rate, t = windows.fps, windows.sample_rate, windows.num_frames  # t: frames per window
    inputs = {"decode": decode.version}
    for name, art in (("features", features), ("flow", flow), ("filter", filter_art)):
        if art is not None:
            inputs[name] = art.version
    spec = StageSpec(STAGE, {"train_ratio": train_ratio, "test_ratio": test_ratio, "seed": seed}, inputs, CODE_VERSION)
    refs = {name: ArtifactRef.of(art) for name, art in (("decode", decode), ("features", features), ("flow", flow))
            if art is not None}
    task = ConcatShard(parts=tuple(sorted(refs.items())), filter_art=ArtifactRef.of(filter_art) if filter_art else None,
                       fps=fps, sample_rate=sample_rate, cuts=(max(1, round(CUT_RANGE[0] * t)), max(2, round(CUT_RANGE[1] * t))),
                       train_ratio=train_ratio, seed=seed)

    def plan() -> list[ShardJob]:
        shards = shard_names(decode)
        # train: pairs within each decode shard (I/O and memory stay linear in the dataset)
        jobs = [ShardJob(store.root, spec, f"aug-{i:05d}", ("train", i, shard)) for i, shard in enumerate(shards)]
        # test_concat: pairs across the whole test split, chosen here from the window index, built in chunks of
        # TEST_CHUNK with at most two decode shards in memory at a time
        every = decode.read_table("windows.parquet").to_pylist()
        if unsplit := [r["key"] for r in every if not r.get("split")]:
            log.warning("%s: %d window(s) have no split (e.g. %s): not used as concat parents", decode.ref,
                        len(unsplit), ", ".join(unsplit[:3]))
        keep = kept_keys(filter_art)
        test = [{"key": r["key"], "shard": r["shard"], "label": r.get("label")} for r in every
                if r.get("split") == "test" and (keep is None or r["key"] in keep)]
        rng = np.random.default_rng([seed, len(shards), 1])
        chosen = _pairs([r["label"] for r in test], round(test_ratio * len(test)), rng)
        chosen.sort(key=lambda ab: (test[ab[0]]["shard"], test[ab[1]]["shard"]))
        for c in range(0, max(len(chosen), 1), TEST_CHUNK):
            pairs = tuple((test[a], test[b]) for a, b in chosen[c : c + TEST_CHUNK])
            jobs.append(ShardJob(store.root, spec, f"aug-test-{c // TEST_CHUNK:05d}", ("test", (seed, len(shards), 2, c), pairs)))
        return jobs

    def finalize(w: ArtifactWriter, records: list[Record]) -> Artifact:
        index = [r for rec in records for r in rec["index"]]
        cols = ["key", "shard", "split", "label", "parents", "cut_s"]
        w.write_table("samples.parquet", pa.table({c: [r[c] for r in index] for c in cols}))
        return w.commit(rows=[r for rec in records for r in rec["rows"]],
                        extra={"n_train": sum(r["split"] == "train" for r in index),
                               "n_test_concat": sum(r["split"] == "test_concat" for r in index)})

    return run_sharded(store, spec=spec, plan=plan, task=task, finalize=finalize, shard_map=shard_map,
                       progress=progress)


@dataclass(frozen=True)
class ConcatShard(ShardTask):
    """One output shard of concat samples. Payload ``("train", i, decode shard)``: pairs drawn within
    that shard; or ``("test", rng seed, ((row a, row b), ...))``: the chosen test pairs of one chunk."""

    parts: tuple[tuple[str, ArtifactRef], ...]  # ("decode" | "features" | "flow", ref)
    filter_art: ArtifactRef | None
    fps: float
    sample_rate: int
    cuts: tuple[int, int]  # cut frames drawn from [lo, hi]
    train_ratio: float
    seed: int

    def compute(self, job: ShardJob, loaded: Any, writer: ArtifactWriter) -> Record:
        arts = {name: ref.load() for name, ref in self.parts}
        keep = kept_keys_of(self.filter_art)
        if job.payload[0] == "train":
            _, i, shard = job.payload
            pool = [j for j in join_shard(arts, shard, primary="decode")
                    if j.meta.get("split") == "train" and (keep is None or j.key in keep)]  # no split: never a parent
            rng = np.random.default_rng([self.seed, i])
            chosen = _pairs([j.meta.get("label") for j in pool], round(self.train_ratio * len(pool)), rng)
            return self._make(writer, job.shard, [(pool[a], pool[b]) for a, b in chosen], rng, "train")
        _, rng_seed, pairs = job.payload
        cache: dict[str, dict[str, Joined]] = {}

        def joined(row: dict) -> Joined:
            if row["shard"] not in cache:
                if len(cache) >= 2:
                    cache.pop(next(iter(cache)))
                cache[row["shard"]] = {j.key: j for j in join_shard(arts, row["shard"], primary="decode")}
            return cache[row["shard"]][row["key"]]

        batch = [(joined(a), joined(b)) for a, b in pairs]
        return self._make(writer, job.shard, batch, np.random.default_rng(list(rng_seed)), "test_concat")

    def _make(self, w: ArtifactWriter, out: str, pairs: list[tuple[Joined, Joined]], rng: np.random.Generator,
              split: str) -> Record:
        members: list[tuple[str, bytes]] = []
        rows, index = [], []
        for a, b in pairs:
            key, m, meta = splice(a, b, cut_frame=int(rng.integers(self.cuts[0], self.cuts[1] + 1)), fps=self.fps,
                                  sample_rate=self.sample_rate, split=split)
            members += [(f"{key}.{suffix}", data) for suffix, data in m.items()]
            parents = ",".join(meta["parents"])
            rows.append(ok_row(key, parents=parents, cut_s=meta["cut_s"], split=split, shard=out))
            index.append({"key": key, "shard": out, "split": split, "label": meta["label"], "parents": parents,
                          "cut_s": meta["cut_s"]})
        files = {f"{out}.tar": w.write_bytes(f"{out}.tar", write_tar(members))} if members else {}
        return {"rows": rows, "files": files, "index": index}


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    return augment_stage(out, decode=recorded_input(store, art, "decode"), features=recorded_input(store, art, "features"),
                         flow=recorded_input(store, art, "flow"), filter_art=recorded_input(store, art, "filter"),
                         **art.params, shard_map=options.get("shard_map"))
