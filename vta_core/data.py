"""Training data from WebDataset shards (written by ``stages/shards.py``): a streaming loader, and
random access by rank for multi-process training (:class:`ShardSamples`, :class:`BatchPlan`, :class:`RankBatches`).

Each sample's arrays are decoded from ``.npy`` members; a batch pads variable-length token
sequences (vision T, text L, flow T) with masks and draws the training latent from the VAE
posterior: z = (μ + σ·ε) · scaling_factor, ε ~ N(0, I) (LDM's posterior sampling).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from storage.tar import load_npy

if TYPE_CHECKING:
    from vta_core.model import Batch  # what the model consumes: name -> tensor

ARRAYS = ("vision", "text", "flow", "motion", "latent_mean", "latent_std")


def decode_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw WebDataset sample (bytes per field) -> numpy arrays + metadata (audio is not decoded)."""
    out: dict[str, Any] = {"key": raw["__key__"]}
    for name in ARRAYS:
        data = raw.get(f"{name}.npy")
        if data is not None:
            out[name] = load_npy(data)
    if "json" in raw:
        out["meta"] = json.loads(raw["json"])
    for required in ("vision", "latent_mean", "latent_std"):
        if required not in out:
            raise ValueError(f"shard sample {out['key']!r} has no {required}.npy")
    return out


def _pad(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_i, D) arrays -> (B, L_max, D) float32 zero-padded + (B, L_max) bool mask."""
    length = max(a.shape[0] for a in arrays)
    x = torch.zeros(len(arrays), length, *arrays[0].shape[1:])
    mask = torch.zeros(len(arrays), length, dtype=torch.bool)
    for i, a in enumerate(arrays):
        x[i, : a.shape[0]] = torch.from_numpy(a.astype(np.float32))
        mask[i, : a.shape[0]] = True
    return x, mask


def collate(samples: Sequence[dict[str, Any]], *, scaling_factor: float, generator: torch.Generator | None = None,
            eps: torch.Tensor | None = None) -> Batch:
    """Decoded samples -> a training batch (``latents`` scaled, ``vision``/``text``/``flow`` + masks);
    ``eps`` (B, C, t, f): the posterior draw, else drawn from ``generator``."""
    mean = torch.from_numpy(np.stack([s["latent_mean"] for s in samples]).astype(np.float32))  # (B, C, t, f)
    std = torch.from_numpy(np.stack([s["latent_std"] for s in samples]).astype(np.float32))
    eps = torch.randn(mean.shape, generator=generator) if eps is None else eps
    batch: Batch = {"latents": (mean + std * eps) * scaling_factor}
    for name in ("vision", "text", "flow"):
        if all(name in s for s in samples):
            batch[name], batch[f"{name}_mask"] = _pad([np.atleast_2d(s[name]) for s in samples])
    if all("n_frames" in s.get("meta", {}) for s in samples):  # frames past the clip's end are padding
        n = torch.tensor([s["meta"]["n_frames"] for s in samples])
        t = batch["vision"].shape[1]
        batch["vision_mask"] &= torch.arange(t)[None, :] < n[:, None].clamp(min=1)
    return batch


def shard_loader(
    urls: str | Sequence[str],
    *,
    batch_size: int,
    scaling_factor: float,
    seed: int = 0,
    rank: int = 0,
    epoch_batches: int | None = None,
    shuffle_buffer: int = 256,
    resampled: bool = True,
) -> Iterable[Batch]:
    """An endless (``resampled``) stream of training batches from shard URLs.

    Under DDP every rank samples shards with replacement from its own seed (``seed + rank``), the
    WebDataset way for multi-node training; ``epoch_batches`` makes "epochs" of fixed length
    (``with_epoch``). Only a shuffle buffer of samples is ever in memory.
    """
    import webdataset as wds

    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError("shard_loader needs at least one shard URL")
    generator = torch.Generator().manual_seed(seed + 1000 * rank)
    ds = wds.WebDataset(urls, resampled=resampled, shardshuffle=False,
                        nodesplitter=None if resampled else wds.split_by_node, seed=seed + rank, empty_check=False)
    ds = ds.shuffle(shuffle_buffer, rng=random.Random(seed + rank)).map(decode_sample)
    ds = ds.batched(batch_size, collation_fn=lambda s: collate(s, scaling_factor=scaling_factor, generator=generator),
                    partial=not resampled)
    return ds.with_epoch(epoch_batches) if epoch_batches else ds


def iter_webdataset(urls: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Every sample of the WebDataset shards once, in order, decoded (:func:`decode_sample`): for
    evaluation and inspection. (``storage.shardmap.iter_samples`` walks a store artifact's shards.)"""
    import webdataset as wds

    yield from wds.WebDataset(list(urls), shardshuffle=False, nodesplitter=None, empty_check=False).map(decode_sample)


# --- random access for multi-process training --------------------------------------------------------
class ShardSamples:
    """The samples of WebDataset tars by position (tar order), read by seek from the members' offsets
    (found once from the tar headers): what a rank needs to read only its own samples."""

    FIELDS = tuple(f"{name}.npy" for name in ARRAYS) + ("json",)  # audio.flac is not read for training

    def __init__(self, urls: Sequence[str]) -> None:
        import tarfile

        self.urls = [str(u) for u in urls]
        self.members: list[dict[str, tuple[int, int, int]]] = []  # per sample: field -> (url index, offset, size)
        self.keys: list[str] = []
        for i, url in enumerate(self.urls):
            with tarfile.open(url) as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, _, field = m.name.partition(".")
                    if field not in self.FIELDS:
                        continue
                    if not self.keys or self.keys[-1] != key:
                        self.keys.append(key)
                        self.members.append({})
                    self.members[-1][field] = (i, m.offset_data, m.size)
        if not self.keys:
            raise ValueError(f"no samples in shards {self.urls[:1]}")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        raw: dict[str, Any] = {"__key__": self.keys[i]}
        for field, (u, offset, size) in self.members[i].items():
            with open(self.urls[u], "rb") as f:
                f.seek(offset)
                raw[field] = f.read(size)
        return decode_sample(raw)


@dataclass(frozen=True)
class BatchPlan:
    """Which samples make global batch k. Epoch e is a permutation of the n samples seeded from (seed, e),
    cut into n // B global batches (the last n mod B samples sit the epoch out; the next permutation
    reshuffles them in); global batch k is batch k mod (n // B) of epoch k // (n // B). A pure function of
    (seed, k): resuming at step k costs one permutation, the same global batches are drawn whatever the
    number of ranks, and a sample appears at most once in a global batch."""

    n: int
    batch_size: int  # global
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.n < self.batch_size:
            raise ValueError(f"global batch {self.batch_size} is larger than the {self.n} training samples")

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5A3D))
        return torch.randperm(self.n, generator=g).numpy()

    def global_batch(self, step: int) -> list[tuple[int, int, int]]:
        """(epoch, position in the epoch, sample index) of the B samples of global batch ``step``."""
        epoch, b = divmod(step, self.batches_per_epoch)
        perm = self.permutation(epoch)
        return [(epoch, p, int(perm[p])) for p in range(b * self.batch_size, (b + 1) * self.batch_size)]

    def share(self, step: int, *, rank: int, world: int, accum: int = 1) -> list[list[tuple[int, int, int]]]:
        """This rank's ``accum`` micro-batches of global batch ``step``: the batch is cut into world × accum
        contiguous parts whose sizes differ by at most one (rank r takes parts r·accum … r·accum+accum−1)."""
        parts = world * accum
        if self.batch_size < parts:
            raise ValueError(f"global batch {self.batch_size} is smaller than {world} processes x {accum} "
                             f"accumulation steps")
        batch = self.global_batch(step)
        bounds = [self.batch_size * j // parts for j in range(parts + 1)]
        return [batch[bounds[j]:bounds[j + 1]] for j in range(rank * accum, (rank + 1) * accum)]


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64 over each), so nearby tuples give unrelated generators."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h >> 1


def seeded_collate(samples: Sequence[dict[str, Any]], seeds: Sequence[int], *, scaling_factor: float) -> Batch:
    """:func:`collate` with every random draw made per sample from its own seed: the posterior ε, and
    for the loss the timestep (``t_u`` ~ U[0,1)), the noise ε (``noise``) and the dropout draw (``drop_u``).
    A sample's draws depend only on its seed, never on which rank, worker or batch it lands in."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    shape = samples[0]["latent_mean"].shape
    post = torch.stack([torch.randn(shape, generator=g) for g in gens])
    batch = collate(samples, scaling_factor=scaling_factor, eps=post)
    batch["t_u"] = torch.stack([torch.rand((), generator=g) for g in gens])
    batch["noise"] = torch.stack([torch.randn(shape, generator=g) for g in gens])
    batch["drop_u"] = torch.stack([torch.rand((), generator=g) for g in gens])
    batch["keys"] = [s["key"] for s in samples]
    return batch


@dataclass(frozen=True)
class TrainingSet:
    """Training samples, the global batch size and the seed: everything that decides the data stream.
    Each rank takes its part with :meth:`rank_batches`."""

    samples: ShardSamples
    batch_size: int  # global
    scaling_factor: float
    seed: int = 0

    def rank_batches(self, *, rank: int = 0, world: int = 1, accum: int = 1) -> RankBatches:
        return RankBatches(self, rank=rank, world=world, accum=accum)


class RankBatches:
    """Item k = this rank's micro-batches of global batch k (a map-style dataset over steps, for a
    DataLoader with any number of workers: an item depends only on (seed, k, rank, world, accum), and
    each sample's random draws only on (seed, epoch, position in the epoch))."""

    def __init__(self, data: TrainingSet, *, rank: int = 0, world: int = 1, accum: int = 1) -> None:
        self.samples, self.scaling_factor, self.seed = data.samples, data.scaling_factor, data.seed
        self.plan = BatchPlan(len(data.samples), data.batch_size, data.seed)
        self.rank, self.world, self.accum = rank, world, accum
        self.plan.share(0, rank=rank, world=world, accum=accum)  # a batch too small for the split fails here

    def __getitem__(self, step: int) -> list[Batch]:
        return [seeded_collate([self.samples[i] for _, _, i in part],
                               [_mix(self.seed, epoch, pos) for epoch, pos, _ in part], scaling_factor=self.scaling_factor)
                for part in self.plan.share(step, rank=self.rank, world=self.world, accum=self.accum)]


def training_frames(urls: Sequence[str]) -> torch.Tensor:
    """Every real frame feature of the samples (padding past ``n_frames`` excluded): (N, D) float32, for
    the feature standardisation statistics."""
    rows = []
    for s in iter_webdataset(urls):
        v = s["vision"]
        rows.append(torch.from_numpy(v[: s.get("meta", {}).get("n_frames", len(v))].astype("float32")))
    return torch.cat(rows)
