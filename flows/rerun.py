"""``vta run STAGE``: rerun one stage from the inputs and parameters its commit record names.

Without ``force`` the stage call is repeated as recorded: an intact committed artifact is reused,
a missing one (e.g. removed, or a killed run) is recomputed, resuming from committed shards.
With ``force`` the stage is recomputed into a scratch root and compared file by file with the
committed artifact. Identical bytes confirm the artifact is reproducible and nothing new is
written; files of the committed artifact that are damaged or missing on disk (``vta artifacts
verify``) are then rewritten from the recomputation, whose bytes are the ones the record names. Changed results (the inputs changed on disk, or the code changed without a CODE_VERSION
bump) become a new version that records ``supersedes``: the old artifact and everything downstream
of it stay intact, and a later ``vta run`` of a downstream stage reads the newest successor of
each recorded input (so it recomputes into a new version of its own).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from types import ModuleType
from typing import Any

from prefect import flow

import stages.align
import stages.augment
import stages.decode
import stages.features
import stages.filter
import stages.flow
import stages.latents
import stages.shards
import stages.synth
import stages.vae
from flows.engine import Runner  # noqa: E402,I001 - flows import their own layer last
from storage import Artifact, ArtifactStore, StageSpec
from storage.fs import atomic_write_bytes, join, sha256_bytes
from storage.sharded import ShardMap

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


def _repair(store: ArtifactStore, art: Artifact, fresh: Artifact, damaged: list[str]) -> list[str]:
    """Rewrite ``art``'s damaged or missing files from a recomputation that reproduced its recorded checksums
    (the commit record stays as it is: the bytes are again the ones it names). Returns the files rewritten."""
    recorded = art.record["files"]
    for rel in damaged:
        with fresh.open(rel) as f:  # checked against the fresh record, which equals the committed one
            data = f.read()
        if sha256_bytes(data) != recorded[rel]:
            raise RuntimeError(f"{art.ref}: the recomputed {rel} does not match the committed record")
        atomic_write_bytes(store.fs, join(store._dir(art.stage, art.version), rel), data)
    return damaged


# what ``vta run`` can rerun: each stage module's ``rerun(store, art, *, out, **options)``
RERUN: dict[str, ModuleType] = {m.STAGE: m for m in (
    stages.synth, stages.decode, stages.features, stages.flow, stages.align, stages.filter, stages.augment,
    stages.vae, stages.latents, stages.shards)}


def _rerun_call(store: ArtifactStore, art: Artifact, out: ArtifactStore, clap: str | None,
                shard_map: ShardMap | None = None) -> Artifact:
    if art.stage not in RERUN:
        raise ValueError(f"vta run does not know how to rerun stage {art.stage!r}")
    return RERUN[art.stage].rerun(store, art, out=out, clap=clap, shard_map=shard_map)


def rerun(ref: str, *, root: str | None = None, force: bool = False, clap: str | None = None,
          log: Callable[[str], None] = print, shard_map: ShardMap | None = None) -> dict[str, Any]:
    """Rerun ``STAGE`` or ``STAGE@VERSION``; returns a JSON-able report. ``shard_map``: where a sharded
    stage's shards run (default: in this process)."""
    store = ArtifactStore(root)
    art = store.resolve(ref)
    if not force:
        again = _rerun_call(store, art, store, clap, shard_map)
        log(f"{again.ref}: {'reused the committed artifact' if again.reused else 'recomputed and committed'}")
        return {"ref": again.ref, "reused": again.reused, "counts": again.counts}
    with tempfile.TemporaryDirectory(prefix="vta-rerun-") as tmp:
        fresh = _rerun_call(store, art, ArtifactStore(tmp), clap, shard_map)
        # the version the recorded inputs gave (art.version, unless art is itself a changed-result rerun)
        recorded = StageSpec(art.stage, art.params, art.record["inputs"], art.record["code_version"]).version
        same_inputs = fresh.version == recorded
        old, new = art.record.get("files", {}), fresh.record.get("files", {})
        differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        changed = not same_inputs or bool(differs)
        adopted = _adopt(store, fresh, supersedes=art, same_inputs=same_inputs) if changed else None
        damaged = store.verify(art)
        repaired = _repair(store, art, fresh, damaged) if damaged and not changed else []
    if repaired:
        log(f"{art.ref}: recomputed; {len(repaired)} damaged file(s) rewritten with the recorded bytes "
            f"({', '.join(repaired[:10])}); the artifact is intact again")
    elif adopted is None:
        log(f"{art.ref}: recomputed; identical bytes to the committed artifact ({len(old)} files): nothing new")
    elif not same_inputs:
        log(f"{art.ref}: the recorded inputs changed on disk; recomputed as {adopted.ref} (supersedes {art.ref}; "
            f"downstream artifacts are untouched until rerun)")
    else:
        log(f"{art.ref}: recomputed; {len(differs)} file(s) differ ({', '.join(differs[:10])}): committed as "
            f"{adopted.ref} (supersedes {art.ref}; downstream artifacts are untouched until rerun)")
    if damaged and changed:
        log(f"{art.ref}: {len(damaged)} file(s) stay damaged ({', '.join(damaged[:10])}): the recomputation "
            f"gave other bytes, so {adopted.ref if adopted else 'a new version'} replaces it")
    return {"ref": art.ref, "reproducible": not changed, "differing_files": differs, "counts": fresh.counts,
            "new_version": adopted.ref if adopted else None, "repaired_files": repaired}


@flow(name="rerun", log_prints=True)
def rerun_flow(ref: str, root: str | None = None, force: bool = False, clap: str | None = None,
               runner: str = "local") -> dict[str, Any]:
    """:func:`rerun` as a flow whose sharded stages map their shards with ``runner`` (``vta run --runner``;
    the flow must carry that runner's task runner: ``flows.engine.with_runner``). A forced rerun recomputes
    into a scratch folder on this machine, so a remote cluster's workers must see this machine's /tmp."""
    return rerun(ref, root=root, force=force, clap=clap, shard_map=Runner(runner).shard_map())
