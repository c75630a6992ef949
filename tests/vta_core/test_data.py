"""Training data by rank: the seeded global-batch stream, each rank's share, per-sample draws, random access
into tars, and gradient accumulation that equals the full batch."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from storage.tar import npy_bytes, write_tar
from vta_core.data import BatchPlan, ShardSamples, TrainingSet, iter_webdataset, seeded_collate
from vta_core.presets import build_model, get_preset
from vta_core.train import train

GEOM = get_preset("tiny").geometry


def write_shards(folder, n: int, per_tar: int = 3) -> list[str]:
    """``n`` tiny-geometry samples in tars of ``per_tar`` (the shards stage's member layout)."""
    rng = np.random.default_rng(0)
    urls = []
    for t in range(0, n, per_tar):
        members = []
        for i in range(t, min(n, t + per_tar)):
            key = f"s{i:04d}"
            members += [(f"{key}.vision.npy", npy_bytes(rng.standard_normal((GEOM.num_frames, 32)), np.float16)),
                        (f"{key}.latent_mean.npy", npy_bytes(rng.standard_normal(GEOM.latent_shape), np.float32)),
                        (f"{key}.latent_std.npy", npy_bytes(0.1 * np.ones(GEOM.latent_shape), np.float32)),
                        (f"{key}.audio.flac", b"not read for training"),
                        (f"{key}.json", json.dumps({"key": key, "n_frames": GEOM.num_frames}).encode())]
        path = folder / f"train-{t // per_tar:05d}.tar"
        path.write_bytes(write_tar(members))
        urls.append(str(path))
    return urls


@pytest.mark.parametrize(("batch", "world", "accum"), [(8, 2, 1), (10, 4, 1), (10, 2, 2), (7, 3, 2)])
def test_ranks_split_each_global_batch_into_disjoint_near_equal_parts(batch, world, accum):
    plan = BatchPlan(n=23, batch_size=batch, seed=4)
    for step in (0, 1, 2, 5):
        parts = [p for r in range(world) for p in plan.share(step, rank=r, world=world, accum=accum)]
        assert len(parts) == world * accum and max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [x for p in parts for x in p] == plan.global_batch(step)  # the same global batch whatever the split


def test_epochs_are_permutations_cut_into_global_batches_and_any_step_is_direct():
    plan = BatchPlan(n=7, batch_size=3, seed=1)
    assert plan.batches_per_epoch == 2
    epochs = [[x for k in (2 * e, 2 * e + 1) for x in plan.global_batch(k)] for e in range(3)]
    for e, epoch in enumerate(epochs):
        assert {ep for ep, _, _ in epoch} == {e} and len({i for _, _, i in epoch}) == 6  # no sample twice
    assert [i for *_, i in epochs[0]] != [i for *_, i in epochs[1]]  # reshuffled each epoch
    t = time.perf_counter()
    far = BatchPlan(n=200_000, batch_size=128, seed=1).global_batch(10_000_000)  # resume deep into a long run
    assert time.perf_counter() - t < 5 and len(far) == 128 and far[0][0] == 10_000_000 // (200_000 // 128)
    with pytest.raises(ValueError, match="global batch 3 is smaller than 2 processes x 2"):
        plan.share(0, rank=0, world=2, accum=2)
    with pytest.raises(ValueError, match="global batch 8 is larger than the 7 training samples"):
        BatchPlan(n=7, batch_size=8)


def test_random_access_reads_what_webdataset_streams(tmp_path):
    urls = write_shards(tmp_path, 7)
    samples = ShardSamples(urls)
    streamed = list(iter_webdataset(urls))
    assert len(samples) == 7 and samples.keys == [s["key"] for s in streamed]
    for i in (0, 4, 6):
        assert np.array_equal(samples[i]["latent_mean"], streamed[i]["latent_mean"])
        assert np.array_equal(samples[i]["vision"], streamed[i]["vision"]) and samples[i]["meta"] == streamed[i]["meta"]


def test_a_samples_draws_do_not_depend_on_its_batch(tmp_path):
    samples = ShardSamples(write_shards(tmp_path, 3))
    both = seeded_collate([samples[0], samples[1]], [11, 12], scaling_factor=0.5)
    alone = seeded_collate([samples[1]], [12], scaling_factor=0.5)
    for name in ("latents", "noise", "t_u", "drop_u"):
        assert torch.equal(both[name][1], alone[name][0]), name
    assert both["keys"] == ["s0000", "s0001"]


def test_gradient_accumulation_with_uneven_micro_batches_equals_the_full_batch(tmp_path):
    """Global batch 5 as 1 x 5 and as 2 micro-batches (3 + 2): the per-sample loss sums scaled by 1/B give
    the same optimizer steps, so the same losses and weights to float rounding."""
    torch.set_num_threads(1)
    data = TrainingSet(ShardSamples(write_shards(tmp_path, 11)), batch_size=5, scaling_factor=0.5, seed=2)
    kw = dict(geometry=GEOM, steps=4, ckpt_every=4, lr=1e-3, warmup=1, seed=2, cpu=True, progress=False,
              feature_frames=torch.randn(50, 32, generator=torch.Generator().manual_seed(0)))
    one = train(build_model("tiny", seed=0, vision_dim=32), data, out_dir=tmp_path / "a", **kw)
    two = train(build_model("tiny", seed=0, vision_dim=32), data, out_dir=tmp_path / "b", grad_accum=2, **kw)
    assert np.allclose(one.losses, two.losses, rtol=1e-5, atol=0)
    assert not np.allclose(one.losses[1:], one.losses[:-1], rtol=1e-3)  # the tolerance tells steps apart


def test_gradient_checkpointing_changes_memory_not_the_result(tmp_path):
    torch.set_num_threads(1)
    data = TrainingSet(ShardSamples(write_shards(tmp_path, 6)), batch_size=2, scaling_factor=0.5, seed=0)
    kw = dict(geometry=GEOM, steps=2, ckpt_every=2, lr=1e-3, warmup=1, cpu=True, progress=False,
              feature_frames=torch.randn(50, 32, generator=torch.Generator().manual_seed(0)))
    plain = train(build_model("tiny", seed=0, vision_dim=32), data, out_dir=tmp_path / "a", **kw)
    ckpt = train(build_model("tiny", seed=0, vision_dim=32), data, out_dir=tmp_path / "b", grad_checkpointing=True, **kw)
    assert np.allclose(plain.losses, ckpt.losses, rtol=1e-6, atol=0)
