"""evaluation: one evaluation of a checkpoint on a synthetic test set, as a versioned artifact.

``evaluation/{version}/`` is a self-contained report folder (``report.json``, ``report.html``,
``per_clip.parquet``, ``clips/<id>/…`` with wavs, muxed mp4s and spectrograms; see vta_core/evaluation/scoring.py and
vta_core/evaluation/report.py) plus ``summary.parquet`` (one row per track of ``TRACKS``: generated and its controls,
each with its bootstrap 95% interval bounds and, for a control, the paired difference generated − control) and
``manifest.parquet`` (one row per test clip, failures included).

The version hashes the checkpoint's identity (``train@VERSION`` for a train artifact's checkpoint, else a
content hash of the folder), the test set's fingerprint (clip ids, video bytes and ground-truth events of
the split) and the settings (sampler, steps, guidance, seed, clip limit, metric weights). So the same
evaluation is never computed twice, and every earlier evaluation of a test set is found by its
fingerprint (commit record ``testset``), whatever checkpoint or settings it used.

:func:`held_out_synth` finds the synth folder a checkpoint was trained from (its lineage), whose held-out
split ``vta evaluate`` scores when no ``--videos`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage import Artifact, ArtifactStore, StageSpec, local_copy
from storage.fs import is_local
from storage.lineage import resolve_source
from storage.manifest import failed_row, ok_row
from storage.store import COMMIT_FILE
from vta_core.checkpoint import checkpoint_identity
from vta_core.evaluation.intervals import METRICS as INTERVAL_METRICS
from vta_core.evaluation.report import write_report
from vta_core.evaluation.scoring import TRACKS, evaluate_synthetic, synth_clips
from vta_core.metrics.suite import PAPER_COLUMNS, SYNTH_COLUMNS
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS

log = logging.getLogger("vta.evaluation")

STAGE = "evaluation"
CODE_VERSION = "3"  # 2: tracks with controls (one pipeline call each, seed + i), bootstrap intervals; 3: saliency
# The summary's columns: Table 1's order (FAD, IS, FD, KL, PAM, CLAP, CAVP, AV-Align), the synthetic-world
# analogues, the synthetic ground-truth scores, the 95% interval bounds of onset F1 / class accuracy /
# AV-Align, then for a control the paired difference generated − control with its interval (None on the
# generated row itself).
SUMMARY_COLUMNS = (*PAPER_COLUMNS, *SYNTH_COLUMNS, "onset_f1", "event_class_accuracy",
                   *(f"{m}_{b}" for m in INTERVAL_METRICS for b in ("lo", "hi")),
                   *(f"paired_{m}_{k}" for m in INTERVAL_METRICS for k in ("diff", "lo", "hi")))


def summary_values(metrics: dict[str, dict[str, Any]], track: str) -> dict[str, Any]:
    """:data:`SUMMARY_COLUMNS` of one track's block in an evaluation's ``metrics``."""
    m = metrics[track]
    out = {k: m.get(k) for k in SUMMARY_COLUMNS}
    for metric in INTERVAL_METRICS:
        lo, hi = (m.get("intervals") or {}).get(metric) or (None, None)
        out.update({f"{metric}_lo": lo, f"{metric}_hi": hi})
        d = (metrics["generated"].get("paired") or {}).get(track, {}).get(metric, {})
        out.update({f"paired_{metric}_{k}": d.get(k) for k in ("diff", "lo", "hi")})
    return out


def held_out_synth(store: ArtifactStore, checkpoint: Artifact | str | Path) -> Path:
    """The ``vta synth`` folder (videos/, labels.csv, events.parquet) behind ``checkpoint``: its train
    artifact's lineage (train -> shards -> decode -> the synth artifact decode recorded, or the folder of
    decode's videos), else the root's one synth artifact. ValueError when there is none (or several and no
    lineage to choose)."""
    src = resolve_source(store, checkpoint, stage="train")
    train = src if isinstance(src, Artifact) else next(
        (a for a in store.list("train") if Path(src).resolve() in (Path(a.path).resolve(),
                                                                    Path(a.file("checkpoint")).resolve())), None)
    tried = []
    if train is not None:
        version = train.record.get("inputs", {}).get("shards")
        shards = store.get("shards", version) if version else None
        decode = store.get("decode", shards.record["inputs"]["decode"]) if shards is not None else None
        if decode is not None:
            if (ref := decode.record.get("inputs", {}).get("synth")) and (syn := store.get(*ref.split("@", 1))):
                return Path(local_copy(syn).path)  # an object store's synth artifact: its cached copy
            folder = Path(decode.record.get("source", "")).parent
            if all((folder / n).exists() for n in ("videos", "labels.csv", "events.parquet")):
                return folder
            tried.append(f"{decode.ref}'s videos ({decode.record.get('source')}) are not in a vta synth folder")
        else:
            tried.append(f"{train.ref}'s shards / decode are not committed in {store.root}")
    synths = store.list("synth")
    if len(synths) == 1:
        return Path(local_copy(synths[0]).path)
    why = "; ".join(tried) or f"{checkpoint} is not a train artifact of {store.root}"
    if synths:
        raise ValueError(f"cannot tell which held-out split evaluates {checkpoint} ({why}) among "
                         f"{', '.join(a.ref for a in synths)}: pass --videos")
    raise ValueError(f"no held-out split found for {checkpoint}: {why}, and {store.root} has no synth artifact; "
                     f"pass --videos")


def testset_fingerprint(synth_dir: str | Path, *, split: str, max_clips: int | None = None,
                        split_default: str | None = None) -> str:
    """``testset:`` + a hash of the evaluated clips: ids, video bytes and ground-truth event rows."""
    clips = synth_clips(synth_dir, split=split, split_default=split_default)[:max_clips]
    events = pq.read_table(Path(synth_dir) / "events.parquet").to_pylist()
    h = hashlib.sha256()
    for clip_id, video in clips:
        rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in events if r["clip_id"] == clip_id)
        h.update(clip_id.encode() + hashlib.sha256(video.read_bytes()).digest() + "\n".join(rows).encode())
    return "testset:" + h.hexdigest()[:16]


def weights_identity(weights: dict[str, str | None] | None) -> dict[str, str]:
    """Metric weights by identity: inside a committed artifact of a store (the synthetic classifier),
    ``stage@version/path`` — the same whatever the root, so two roots with the same inputs make the same
    evaluation versions; elsewhere by path and size (large networks are not content-hashed)."""
    out = {}
    for k, v in sorted((weights or {}).items()):
        if v:
            p = Path(v)
            out[k] = _in_artifact(p) or (f"{v}:{p.stat().st_size}" if p.is_file() else str(v))
    return out


def _in_artifact(path: Path) -> str | None:
    """``stage@version/inner/path`` when ``path`` lies in a committed artifact folder (ROOT/STAGE/VERSION)."""
    for folder in path.parents:
        if (folder / COMMIT_FILE).is_file():
            return f"{folder.parent.name}@{folder.name}/{path.relative_to(folder).as_posix()}"
    return None


def evaluation_spec(*, checkpoint_id: str, testset: str, split: str, steps: int, sampler: str, guidance: float,
                    seed: int, max_clips: int | None, metric_weights: dict[str, str | None] | None,
                    split_default: str | None = None) -> StageSpec:
    params = {"split": split, "split_default": split_default, "steps": steps, "sampler": sampler,
              "guidance": float(guidance), "seed": seed, "max_clips": max_clips,
              "metric_weights": weights_identity(metric_weights)}
    return StageSpec(STAGE, params, {"checkpoint": checkpoint_id, "testset": testset}, CODE_VERSION)


def evaluation_stage(store: ArtifactStore, *, checkpoint: Artifact | str | Path, synth_dir: str | Path,
                     split: str = "test", split_default: str | None = None, steps: int = DEFAULT_STEPS,
                     sampler: str = DEFAULT_SAMPLER,
                     guidance: float = DEFAULT_GUIDANCE, seed: int = 0, max_clips: int | None = None, device: str = "cpu",
                     metric_weights: dict[str, str | None] | None = None,
                     echo: Callable[[str], None] = log.info) -> Artifact:
    """Evaluate (or reuse the committed evaluation of) ``checkpoint`` (a train artifact, ``train[@VERSION]``
    or a checkpoint folder) on ``synth_dir``'s ``split``. Every evaluation runs here: ``vta evaluate``
    (with or without ``--grid``), the demo and the nightly sweep; :func:`vta_core.evaluation.report.copy_report`
    re-renders the artifact's report elsewhere. ``synth_dir`` is a local folder; on an object store the
    checkpoint is read from its cached copy and the report is written in a staging folder, uploaded before
    the commit."""
    source = resolve_source(store, checkpoint, stage="train")
    folder, ckpt_id = checkpoint_identity(source)
    testset = testset_fingerprint(synth_dir, split=split, max_clips=max_clips, split_default=split_default)
    spec = evaluation_spec(checkpoint_id=ckpt_id, testset=testset, split=split, steps=steps, sampler=sampler,
                           guidance=guidance, seed=seed, max_clips=max_clips, metric_weights=metric_weights,
                           split_default=split_default)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed evaluation", w.artifact.ref)
            return w.artifact
        t = time.perf_counter()
        with w.staging() as out:  # the version folder on a local root, else a local folder uploaded at the end
            ev = evaluate_synthetic(checkpoint=folder, synth_dir=synth_dir, out_dir=out, split=split,
                                    split_default=split_default, steps=steps,
                                    sampler=sampler, guidance=guidance, seed=seed, max_clips=max_clips, device=device,
                                    metric_weights=metric_weights, echo=echo)
            write_report(out_dir=out, evaluation=ev, timings_s={"total_s": time.perf_counter() - t},
                         config={"command": "evaluation", "checkpoint_id": ckpt_id, "testset": testset,
                                 "synth_dir": str(Path(synth_dir).resolve())})
            summary = [{"track": v, **summary_values(ev.metrics, v)} for v in TRACKS]
            w.write_table("summary.parquet", pa.Table.from_pylist(summary))
        ok, failed = {c["clip_id"] for c in ev.clips}, ev.failed  # failed: {clip_id: "Type: msg"}
        rows = [ok_row(cid) if cid in ok else failed_row(cid, failed.get(cid, "NotEvaluated").split(":", 1)[0],
                                                         failed.get(cid, "no result from evaluate_synthetic"))
                for cid, _ in synth_clips(synth_dir, split=split, split_default=split_default)[:max_clips]]
        where = str(folder) if is_local(store.fs) or not isinstance(source, Artifact) else source.file("checkpoint")
        return w.commit(rows=rows, extra={"checkpoint": ckpt_id, "checkpoint_path": where, "testset": testset,
                                          "metrics": ev.metrics, "unavailable": ev.unavailable,
                                          "seconds_per_clip": ev.timings_s.get("generate_generated_s", 0.0) / max(1, len(ev.clips)),
                                          "saliency": ev.saliency.get("summary") or None})


def previous_evaluations(store: ArtifactStore, testset: str) -> list[Artifact]:
    """Every committed evaluation of the test set ``testset`` (any checkpoint, any settings), oldest first."""
    return [a for a in store.list(STAGE) if a.record.get("testset") == testset]


def summary_row(art: Artifact, track: str = "generated") -> dict[str, Any]:
    """One summary-table row for an evaluation artifact: its settings, then :data:`SUMMARY_COLUMNS`."""
    p, metrics = art.params, art.record["metrics"]
    return {"evaluation": art.ref, "checkpoint": art.record["checkpoint"], "track": track, "sampler": p["sampler"],
            "steps": p["steps"], "guidance": p["guidance"], "seed": p["seed"],
            "clips": metrics[track].get("n_clips", art.counts.get("ok", 0)),
            "seconds_per_clip": art.record.get("seconds_per_clip") if track == "generated" else None,
            **summary_values(metrics, track)}
