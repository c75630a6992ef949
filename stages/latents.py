"""latents: audio -> log-mel -> VAE posterior mean and std per sample (kept windows + augmented).

Per key: ``latent_mean.npy`` and ``latent_std.npy``, float32 (C, T/4, F/4), UNSCALED (the trainer
multiplies samples by the VAE's scaling factor). Windows the filter dropped get a ``filtered`` row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.decode import DecodeParams
from stages.vae import open_vae
from storage import Artifact, ArtifactStore, StageSpec, failed_row, filtered_row, ok_row
from storage.lineage import latents_vae, recorded_input, source_identity
from storage.sharded import ArtifactRef, ShardJob, ShardMap, kept_keys_of
from storage.shardmap import Result, Sample, SampleMap, map_shards
from storage.tar import npy_bytes
from vta_core.audio import LogMel
from vta_core.geometry import ClipGeometry
from vta_core.threads import stage_threads

log = logging.getLogger("vta.latents")

STAGE = "latents"
CODE_VERSION = "2"  # 2: the VAE encodes with a fixed thread count (vta_core/threads.py): float32 bytes differ from 1 in the last bits


def latents_stage(
    store: ArtifactStore,
    *,
    decode: Artifact,
    vae: str | Path | Artifact,
    geometry: ClipGeometry,
    augment: Artifact | None = None,
    filter_art: Artifact | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    shard_map: ShardMap | None = None,
) -> Artifact:
    """Encode every kept window and augmented sample with the VAE."""
    DecodeParams.recorded(decode).check_geometry(geometry, what=decode.ref)
    inputs = {"decode": decode.version, "vae": source_identity(vae)}
    for name, art in (("augment", augment), ("filter", filter_art)):
        if art is not None:
            inputs[name] = art.version
    spec = StageSpec(STAGE, {"geometry": geometry.to_dict()}, inputs, CODE_VERSION)
    if (done := store.get(STAGE, spec.version)) is not None:
        return Artifact(done.root, done.stage, done.version, done.record, reused=True)
    task = EncodeShard(vae=ArtifactRef.of(vae) if isinstance(vae, Artifact) else str(Path(vae).resolve()),
                       vae_identity=inputs["vae"], geometry=geometry, filter_art=ArtifactRef.of(filter_art) if filter_art is not None else None,
                       batch_size=batch_size, device=device, index_columns=("split", "label"))
    sources = [decode] if augment is None else [decode, augment]
    return map_shards(store, spec=spec, source=sources, task=task, progress=progress, shard_map=shard_map,
                      extra={"vae_dir": None if isinstance(vae, Artifact) else str(Path(vae).resolve())})


@functools.lru_cache(maxsize=2)
def _encoder(vae: ArtifactRef | str, identity: str, geometry: ClipGeometry, device: str) -> tuple[Any, LogMel]:
    """The VAE and its log-mel front end, loaded once per process and VAE content (``identity``)."""
    torch.manual_seed(0)
    model = open_vae(vae.load() if isinstance(vae, ArtifactRef) else vae).to(device).eval()
    return model, LogMel.from_geometry(geometry).to(device)


@dataclass(frozen=True, kw_only=True)
class EncodeShard(SampleMap):
    """One shard's kept windows (or augmented samples) through the VAE encoder."""

    vae: ArtifactRef | str  # a vae artifact or a diffusers-format folder
    vae_identity: str  # its content identity (the cache key with it: a replaced folder is loaded again)
    geometry: ClipGeometry
    filter_art: ArtifactRef | None = None
    batch_size: int = 16
    device: str = "cpu"

    def process(self, job: ShardJob, samples: Sequence[Sample]) -> list[Result]:
        geometry, keep = self.geometry, kept_keys_of(self.filter_art)
        results: list[Result] = []
        todo: list[Sample] = []
        for s in samples:
            if keep is not None and "parents" not in s.meta and s.key not in keep:  # augmented samples have parents
                results.append((filtered_row(s.key, f"dropped by filter@{self.filter_art.version}"), {}))
            elif "audio.npy" not in s.members:
                results.append((failed_row(s.key, "missing_audio", f"{s.key} has no audio.npy"), {}))
            elif len(s.array("audio.npy")) != geometry.num_samples:
                results.append((failed_row(s.key, "bad_length", f"{s.key}: {len(s.array('audio.npy'))} samples, "
                                           f"geometry expects {geometry.num_samples}"), {}))
            else:
                todo.append(s)
        model, mel = _encoder(self.vae, self.vae_identity, geometry, self.device)
        with stage_threads():  # bytes independent of the engine (vta_core/threads.py)
            return results + self._encode(todo, model, mel)

    def _encode(self, todo: list[Sample], model: Any, mel: LogMel) -> list[Result]:
        results: list[Result] = []
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            wave = torch.from_numpy(np.stack([s.array("audio.npy") for s in chunk])).to(self.device)  # (B, N)
            with torch.no_grad():
                mean, std = model.encode(mel(wave))  # (B, C, T/4, F/4) each
            for s, m, sd in zip(chunk, mean.cpu().numpy(), std.cpu().numpy(), strict=True):
                results.append((ok_row(s.key, split=s.meta.get("split"), label=s.meta.get("label")),
                                {"latent_mean.npy": npy_bytes(m, np.float32), "latent_std.npy": npy_bytes(sd, np.float32)}))
        return results


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    return latents_stage(out, decode=recorded_input(store, art, "decode"), vae=latents_vae(store, art),
                         geometry=ClipGeometry.from_dict(art.params["geometry"]),
                         augment=recorded_input(store, art, "augment"), filter_art=recorded_input(store, art, "filter"),
                         shard_map=options.get("shard_map"))
