"""``vta run STAGE``: rerun one stage from the inputs and parameters its commit record names.

Without ``force`` the stage call is repeated as recorded: an intact committed artifact is reused,
a missing one (e.g. removed, or a killed run) is recomputed, resuming from committed shards.
With ``force`` the stage is recomputed into a scratch root and compared file by file with the
committed artifact. Identical bytes confirm the artifact is reproducible and nothing new is
written. Changed results (the inputs changed on disk, or the code changed without a CODE_VERSION
bump) become a new version that records ``supersedes``: the old artifact and everything downstream
of it stay intact, and a later ``vta run`` of a downstream stage reads the newest successor of
each recorded input (so it recomputes into a new version of its own).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from typing import Any

from storage import Artifact, ArtifactStore, StageSpec
from vta_core.geometry import ClipGeometry


def _input(store: ArtifactStore, art: Artifact, name: str) -> Artifact | None:
    """The recorded input, or the newest rerun that superseded it."""
    version = art.record.get("inputs", {}).get(name)
    return None if version is None else store.successor(store.resolve(f"{name}@{version}"))


_RECORD_KEYS = {"stage", "version", "params", "inputs", "code_version", "created", "elapsed_s", "counts", "files"}


def _adopt(store: ArtifactStore, fresh: Artifact, *, supersedes: Artifact, same_inputs: bool) -> Artifact:
    """Copy a scratch-root artifact into ``store``: under its own version when the recorded inputs now
    give another one, else under a version that also hashes the new result."""
    files = fresh.record["files"]
    result = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16] if same_inputs else None
    spec = StageSpec(fresh.stage, fresh.params, fresh.record["inputs"], fresh.record["code_version"], result=result)
    with store.writer(spec) as w:
        if w.committed:
            return w.artifact
        for rel in sorted(files):
            with fresh.open(rel) as f:
                w.write_bytes(rel, f.read())
        extra = {k: v for k, v in fresh.record.items() if k not in _RECORD_KEYS}
        return w.commit(counts=fresh.counts, extra={**extra, "supersedes": supersedes.version, "result": result})


def _rerun_call(store: ArtifactStore, art: Artifact, out: ArtifactStore, clap: str | None) -> Artifact:
    p, get = art.params, (lambda name: _input(store, art, name))
    stage = art.stage
    if stage == "synth":
        from stages.synth import synth_stage

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
        # the version the recorded inputs gave (art.version, unless art is itself a changed-result rerun)
        recorded = StageSpec(art.stage, art.params, art.record["inputs"], art.record["code_version"]).version
        same_inputs = fresh.version == recorded
        old, new = art.record.get("files", {}), fresh.record.get("files", {})
        differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        changed = not same_inputs or bool(differs)
        adopted = _adopt(store, fresh, supersedes=art, same_inputs=same_inputs) if changed else None
    if adopted is None:
        log(f"{art.ref}: recomputed; identical bytes to the committed artifact ({len(old)} files): nothing new")
    elif not same_inputs:
        log(f"{art.ref}: the recorded inputs changed on disk; recomputed as {adopted.ref} (supersedes {art.ref}; "
            f"downstream artifacts are untouched until rerun)")
    else:
        log(f"{art.ref}: recomputed; {len(differs)} file(s) differ ({', '.join(differs[:10])}): committed as "
            f"{adopted.ref} (supersedes {art.ref}; downstream artifacts are untouched until rerun)")
    return {"ref": art.ref, "reproducible": not changed, "differing_files": differs, "counts": fresh.counts,
            "new_version": adopted.ref if adopted else None}
