"""``vta run STAGE``: rerun one stage from the inputs and parameters its commit record names.

Without ``force`` the stage call is repeated as recorded: an intact committed artifact is reused,
a missing one (e.g. removed, or a killed run) is recomputed, resuming from committed shards.
With ``force`` the stage is recomputed into a scratch root and compared file by file with the
committed artifact: identical bytes confirm the artifact is reproducible; any difference is
reported (the committed artifact is left untouched).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from storage import Artifact, ArtifactStore
from vta_core.geometry import ClipGeometry


def _input(store: ArtifactStore, art: Artifact, name: str) -> Artifact | None:
    version = art.record.get("inputs", {}).get(name)
    return None if version is None else store.resolve(f"{name}@{version}")


def _rerun_call(store: ArtifactStore, art: Artifact, out: ArtifactStore, clap: str | None) -> Artifact:
    p, get = art.params, (lambda name: _input(store, art, name))
    stage = art.stage
    if stage == "synth":
        from stages.synth_stage import synth_stage

        return synth_stage(out, **p)
    if stage == "decode":
        from stages.decode import DecodeParams, decode_stage

        lineage = {k: v for k, v in art.record["inputs"].items() if k != "videos"}
        return decode_stage(out, videos_dir=art.record["source"], labels_csv=art.record.get("labels_csv"),
                            params=DecodeParams(**p), lineage=lineage or None)
    if stage == "features":
        from stages.features import features_stage

        return features_stage(out, source=get("decode"), vision=p["vision"], text=p.get("text"))
    if stage == "flow":
        from stages.flow import flow_stage

        return flow_stage(out, source=get("decode"), method=p["method"], flow_size=p["flow_size"], encoder=p["encoder"])
    if stage == "align":
        from stages.align import align_stage

        if p.get("clap_checkpoint_sha256") and clap is None:
            raise ValueError(f"{art.ref} used a CLAP checkpoint (sha256 {p['clap_checkpoint_sha256'][:12]}…): pass --clap PATH")
        return align_stage(out, source=get("decode"), clap_checkpoint=clap)
    if stage == "filter":
        from stages.filter import filter_stage

        return filter_stage(out, align=get("align"), clap_threshold=p["clap_threshold"],
                            av_align_threshold=p["av_align_threshold"])
    if stage == "augment":
        from stages.augment import augment_stage

        return augment_stage(out, decode=get("decode"), features=get("features"), flow=get("flow"),
                             filter_art=get("filter"), **p)
    if stage == "vae":
        from stages.vae import vae_stage

        kw = {k: v for k, v in p.items() if k != "geometry"}
        return vae_stage(out, decode=get("decode"), geometry=ClipGeometry.from_dict(p["geometry"]),
                         filter_art=get("filter"), **kw)
    if stage == "latents":
        from stages.latents import latents_stage

        vae_input = art.record["inputs"]["vae"]
        vae = store.resolve(vae_input) if "@" in vae_input else art.record["vae_dir"]
        return latents_stage(out, decode=get("decode"), vae=vae, geometry=ClipGeometry.from_dict(p["geometry"]),
                             augment=get("augment"), filter_art=get("filter"))
    if stage == "shards":
        from stages.shards import shards_stage

        return shards_stage(out, decode=get("decode"), features=get("features"), latents=get("latents"),
                            flow=get("flow"), augment=get("augment"), shard_size=p["shard_size"])
    raise ValueError(f"vta run does not know how to rerun stage {stage!r}")


def rerun(ref: str, *, root: str | None = None, force: bool = False, clap: str | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Rerun ``STAGE`` or ``STAGE@VERSION``; returns a JSON-able report."""
    store = ArtifactStore(root)
    art = store.resolve(ref)
    if not force:
        again = _rerun_call(store, art, store, clap)
        log(f"{again.ref}: {'reused the committed artifact' if again.reused else 'recomputed and committed'}")
        return {"ref": again.ref, "reused": again.reused, "counts": again.counts}
    with tempfile.TemporaryDirectory(prefix="vta-rerun-") as tmp:
        fresh = _rerun_call(store, art, ArtifactStore(tmp), clap)
        if fresh.version != art.version:
            raise ValueError(f"{art.ref}: recorded inputs now give version {fresh.version} (inputs changed on disk?)")
        old, new = art.record.get("files", {}), fresh.record.get("files", {})
        differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differs:
        log(f"{art.ref}: recomputed; {len(differs)} file(s) differ from the committed artifact: {', '.join(differs[:10])}")
    else:
        log(f"{art.ref}: recomputed; identical bytes to the committed artifact ({len(old)} files)")
    return {"ref": art.ref, "reproducible": not differs, "differing_files": differs, "counts": fresh.counts}
