"""augment -> vae -> latents -> shards -> loader on a few synthetic clips (tiny geometry)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.augment import augment_stage
from stages.decode import DecodeParams, decode_stage
from stages.features import features_stage
from stages.flow import flow_stage
from stages.latents import latents_stage
from stages.shards import shard_urls, shards_stage
from stages.vae import vae_stage
from storage import ArtifactStore, StageSpec, filtered_row, ok_row
from storage.join import join_shard
from storage.shardmap import SampleMap, iter_samples, map_shards, shard_names
from vta_core.data import iter_webdataset, shard_loader
from vta_core.presets import get_preset
from vta_core.synth_world import generate_synth

G = get_preset("tiny").geometry


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    generate_synth(d, clips=8, seed=1, duration_s=2.0, size=64)  # seed 1: test clips of two labels
    return d


@dataclass(frozen=True, kw_only=True)
class DropSome(SampleMap):
    drop: frozenset[str]

    def process(self, job, samples):  # noqa: ANN001, ANN201 - the SampleMap signature
        return [(filtered_row(s.key, "test drop") if s.key in self.drop else ok_row(s.key), {}) for s in samples]


def build(root: Path, synth_dir: Path, *, filter_drop: set[str] = frozenset()) -> dict:
    store = ArtifactStore(str(root))
    params = DecodeParams.from_geometry(G, shard_size=4)
    arts = {"decode": decode_stage(store, videos_dir=synth_dir / "videos", labels_csv=synth_dir / "labels.csv",
                                   params=params)}
    arts["features"] = features_stage(store, source=arts["decode"], vision="pixels:4")
    arts["flow"] = flow_stage(store, source=arts["decode"], flow_size=16, encoder="pixels:4")
    filt = None
    if filter_drop:  # a stand-in filter artifact: same manifest contract as stages/filter.py
        filt = map_shards(store, spec=StageSpec("toyfilter", {"drop": sorted(filter_drop)}, {}), source=arts["decode"],
                          task=DropSome(drop=frozenset(filter_drop)))
    arts["augment"] = augment_stage(store, decode=arts["decode"], features=arts["features"], flow=arts["flow"],
                                    filter_art=filt, train_ratio=1.0, seed=3)
    arts["vae"] = vae_stage(store, decode=arts["decode"], preset=get_preset("tiny"), steps=8, seed=0)
    arts["latents"] = latents_stage(store, decode=arts["decode"], vae=arts["vae"], geometry=G, augment=arts["augment"],
                                    filter_art=filt)
    arts["shards"] = shards_stage(store, decode=arts["decode"], features=arts["features"], latents=arts["latents"],
                                  flow=arts["flow"], augment=arts["augment"], shard_size=3)
    return arts


@pytest.fixture(scope="module")
def arts(synth_dir, tmp_path_factory):
    return build(tmp_path_factory.mktemp("a"), synth_dir)


def test_concat_splices_picture_and_sound_at_one_instant(arts):
    dec, aug = arts["decode"], arts["augment"]
    parts = {}
    for shard in shard_names(dec):
        for j in join_shard({"decode": dec, "features": arts["features"]}, shard, primary="decode"):
            parts[j.key] = j
    samples = list(iter_samples(aug))
    assert samples and {s.meta["split"] for s in samples} <= {"train", "test_concat"}
    assert any(s.meta["split"] == "test_concat" for s in samples)
    for s in samples:
        a, b = (parts[k] for k in s.meta["parents"])
        assert a.meta["label"] != b.meta["label"]
        cut_f, cut_n = s.meta["cut_frame"], s.meta["cut_sample"]
        assert cut_n == round(cut_f / G.fps * G.sample_rate)  # cut at the TARGET sample rate
        audio = s.array("audio.npy")
        np.testing.assert_array_equal(audio[:cut_n], a.array("decode", "audio.npy")[:cut_n])
        np.testing.assert_array_equal(audio[cut_n:], b.array("decode", "audio.npy")[cut_n:])
        vision = s.array("vision.npy")
        np.testing.assert_array_equal(vision[:cut_f], a.array("features", "vision.npy")[:cut_f])
        np.testing.assert_array_equal(vision[cut_f:], b.array("features", "vision.npy")[cut_f:])
        assert 1 <= cut_f < G.num_frames and s.array("motion.npy").shape == (G.num_frames,)


def test_latents_shapes_and_rows(arts):
    lat = arts["latents"]
    n_windows = len(arts["decode"].read_table("windows.parquet"))
    n_aug = arts["augment"].counts["ok"]
    assert lat.counts == {"ok": n_windows + n_aug, "failed": 0, "filtered": 0}
    for s in iter_samples(lat):
        assert s.array("latent_mean.npy").shape == G.latent_shape
        assert (s.array("latent_std.npy") > 0).all()


def test_vae_stage_learns_and_saves_diffusers_layout(arts):
    vae = arts["vae"]
    assert {"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "loss.png"} <= set(vae.record["files"])
    assert vae.record["recon_l1_last"] < vae.record["recon_l1_first"]


def test_filtered_windows_are_rows_not_samples(arts, synth_dir, tmp_path):
    keys = sorted(s.key for s in iter_samples(arts["decode"]))
    drop = {keys[0], keys[1]}
    arts = build(tmp_path / "f", synth_dir, filter_drop=drop)
    rows = {r["clip_id"]: r for r in arts["latents"].read_table().to_pylist()}
    assert {k for k, r in rows.items() if r["status"] == "filtered"} == drop
    index = arts["shards"].read_table("samples.parquet").to_pylist()
    assert not drop & {r["key"] for r in index}
    for r in arts["augment"].read_table("samples.parquet").to_pylist():
        assert not drop & set(r["parents"].split(","))  # dropped clips are never augmented either
    shard_rows = {r["clip_id"]: r["status"] for r in arts["shards"].read_table().to_pylist()}
    assert {k for k, s in shard_rows.items() if s == "filtered"} == drop


def test_shards_are_byte_identical_and_webdataset_clean(arts, synth_dir, tmp_path):
    again = build(tmp_path / "b", synth_dir)
    assert again["shards"].version == arts["shards"].version
    assert again["shards"].record["files"] == arts["shards"].record["files"]
    for url in shard_urls(arts["shards"], "train"):
        with tarfile.open(url) as tar:
            for m in tar.getmembers():
                assert m.mtime == 0 and m.uname == "" and "." not in m.name.split(".", 1)[0]
    splits = arts["shards"].record["splits"]
    assert splits["train"] > 0 and splits["test_concat"] > 0


def test_loader_reads_shards_back(arts):
    urls = shard_urls(arts["shards"], "train")
    batches = list(shard_loader(urls, batch_size=2, scaling_factor=0.5, seed=0, epoch_batches=3))
    assert len(batches) == 3
    b = batches[0]
    assert b["latents"].shape == (2, *G.latent_shape) and b["vision"].shape[:2] == (2, G.num_frames)
    assert b["vision_mask"].dtype == torch.bool and "flow" in b
    samples = list(iter_webdataset(urls))
    assert len(samples) == arts["shards"].record["splits"]["train"]
    assert len({s["key"] for s in samples}) == len(samples)
