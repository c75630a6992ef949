"""Lineage look-ups: what an artifact was made from, read from the commit records.

Every commit record names its inputs (``{"decode": VERSION, "vae": "vae@VERSION" | "dir:HASH", ...}``);
these helpers walk those links so stages and generation never re-derive them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.hashing import folder_identity
from storage.store import Artifact, ArtifactStore


def source_identity(source: Artifact | str | Path) -> str:
    """What a "ref or folder" input contributes to a version: the artifact ref, or the folder's identity."""
    return source.ref if isinstance(source, Artifact) else folder_identity(source)


def kept_keys(filter_art: Artifact | None) -> set[str] | None:
    """Keys kept by a filter artifact (None = no filter: keep everything)."""
    if filter_art is None:
        return None
    return {r["clip_id"] for r in filter_art.read_table().select(["clip_id", "status"]).to_pylist() if r["status"] == "ok"}


def shards_vae(store: ArtifactStore, shards: Artifact) -> Artifact | str:
    """The VAE whose latents the shards hold (shards -> latents -> vae artifact or folder)."""
    latents = store.get("latents", shards.record["inputs"]["latents"])
    if latents is None:
        raise ValueError(f"{shards.ref}: its latents artifact {shards.record['inputs']['latents']} is not committed")
    vae = latents.record["inputs"]["vae"]
    if vae.startswith("vae@"):
        return store.resolve(vae)
    if latents.record.get("vae_dir"):
        return latents.record["vae_dir"]
    raise ValueError(f"{latents.ref}: cannot tell which VAE made it ({vae!r}); pass vae=")


def shards_conditioning(store: ArtifactStore, shards: Artifact) -> dict[str, Any]:
    """The frozen encoders behind the shards' tokens (features and flow artifacts' params): what
    generation must run on new videos to make the same tokens."""
    inputs = shards.record["inputs"]
    feats = store.get("features", inputs["features"])
    if feats is None:
        raise ValueError(f"{shards.ref}: its features artifact {inputs['features']} is not committed")
    out: dict[str, Any] = {"vision": feats.params["vision"], "text": feats.params.get("text"), "flow": None}
    if "flow" in inputs and (flow := store.get("flow", inputs["flow"])) is not None and flow.params.get("encoder"):
        out["flow"] = {"encoder": flow.params["encoder"], "method": flow.params["method"],
                       "flow_size": flow.params["flow_size"]}
    return out
