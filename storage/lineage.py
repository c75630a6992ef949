"""Lineage look-ups: what an artifact was made from, read from the commit records.

Every commit record names its inputs (``{"decode": VERSION, "vae": "vae@VERSION" | "dir:HASH", ...}``);
these helpers walk those links so stages and generation never re-derive them. ``resolve_source`` is
the one place that tells a ``STAGE@VERSION`` ref from a folder path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.hashing import folder_identity
from storage.store import Artifact, ArtifactStore, check_name


def is_ref(value: str, *, stage: str | None = None) -> bool:
    """Whether ``value`` reads as ``STAGE`` or ``STAGE@VERSION`` (of ``stage``, when given)."""
    name, at, version = value.partition("@")
    if stage is not None and name != stage:
        return False
    try:
        check_name("stage", name)
        if at:
            check_name("version", version)
    except ValueError:
        return False
    return True


def resolve_source(store: ArtifactStore, value: Artifact | str | Path, *, stage: str | None = None) -> Artifact | Path:
    """The one reading of a "ref or path" input (a CLI option, a config value, a recorded input).

    An :class:`Artifact` passes through; an existing path is a ``Path``; ``STAGE`` (the latest) or
    ``STAGE@VERSION`` (of ``stage``, when given) is the committed artifact in ``store`` (ValueError when
    there is none); anything else is a ``Path`` that does not exist, for its reader to report.
    """
    if isinstance(value, Artifact):
        if stage is not None and value.stage != stage:
            raise ValueError(f"{value.ref} is not a {stage} artifact")
        return value
    if isinstance(value, Path) or Path(value).exists() or not is_ref(value, stage=stage):
        return Path(value)
    return store.resolve(value)


def recorded_input(store: ArtifactStore, art: Artifact, name: str) -> Artifact | None:
    """The artifact ``art`` recorded as its input ``name`` (a version of stage ``name``), or the newest
    forced rerun that superseded it; None when ``art`` has no such input."""
    version = art.record.get("inputs", {}).get(name)
    return None if version is None else store.successor(store.resolve(f"{name}@{version}"))


def latents_vae(store: ArtifactStore, latents: Artifact) -> Artifact | str:
    """The VAE a latents artifact was encoded with: its vae artifact, or the folder it recorded."""
    vae = latents.record["inputs"]["vae"]
    if is_ref(vae, stage="vae"):
        return store.resolve(vae)
    if latents.record.get("vae_dir"):
        return latents.record["vae_dir"]
    raise ValueError(f"{latents.ref}: cannot tell which VAE made it ({vae!r}); pass vae=")


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
    return latents_vae(store, latents)


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
