"""Training data from WebDataset shards (written by ``stages/shards.py``): streaming, DDP-ready.

Each sample's arrays are decoded from ``.npy`` members; a batch pads variable-length token
sequences (vision T, text L, flow T) with masks and draws the training latent from the VAE
posterior: z = (μ + σ·ε) · scaling_factor, ε ~ N(0, I) (LDM's posterior sampling).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
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


def collate(samples: Sequence[dict[str, Any]], *, scaling_factor: float, generator: torch.Generator | None = None) -> Batch:
    """Decoded samples -> a training batch (``latents`` scaled, ``vision``/``text``/``flow`` + masks)."""
    mean = torch.from_numpy(np.stack([s["latent_mean"] for s in samples]).astype(np.float32))  # (B, C, t, f)
    std = torch.from_numpy(np.stack([s["latent_std"] for s in samples]).astype(np.float32))
    eps = torch.randn(mean.shape, generator=generator)
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
