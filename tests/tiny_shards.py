"""Committed tiny-preset shards for training tests: decode -> features -> flow -> vae -> latents -> shards."""

from __future__ import annotations

from pathlib import Path

from stages.decode import DecodeParams, decode_stage
from stages.features import features_stage
from stages.flow import flow_stage
from stages.latents import latents_stage
from stages.shards import shards_stage
from stages.vae import vae_stage
from storage import Artifact, ArtifactStore
from vta_core.presets import get_preset

G = get_preset("tiny").geometry


def build_shards(root: Path, videos: Path, labels: Path) -> Artifact:
    """The shards artifact of the clips in ``videos`` on the tiny geometry, in the store at ``root``."""
    store = ArtifactStore(str(root))
    dec = decode_stage(store, videos_dir=videos, labels_csv=labels, params=DecodeParams.from_geometry(G))
    feats = features_stage(store, source=dec, vision="pixels:4")
    flow = flow_stage(store, source=dec, flow_size=16, encoder="pixels:4")
    vae = vae_stage(store, decode=dec, preset=get_preset("tiny"), steps=4, seed=0)
    lat = latents_stage(store, decode=dec, vae=vae, geometry=G)
    return shards_stage(store, decode=dec, features=feats, latents=lat, flow=flow, shard_size=3)
