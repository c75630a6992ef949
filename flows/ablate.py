"""Prefect flow ``ablate``: one of the paper's ablation tables (vta_core/ablations.py) as one command.

synth (one world for every row) -> one ingest per distinct set of ingest overrides (the rest of the DAG is
shared through the store: a row that changes only training reuses every ingest artifact) -> per row and
seed: train (with the row's overrides; pretraining rows: half the steps pretraining, half fine-tuning),
the same budget for every row -> the synthetic audio classifier (once) -> evaluation of each checkpoint on
the same test clips, sampler and noise -> the ``ablation`` artifact (stages/ablation.py; with ``ratings``, a
``vta listen --ablation`` ratings file, its subjective columns too). Every step is a
versioned stage, so rerunning an ablation recomputes nothing. A row whose training or evaluation fails is
a failed row of the table (its error in one line); the baseline must succeed.

Engines (``runner``, flows/engine.py): ``local`` runs the rows one after another in this process; ``dask`` /
``dask://HOST:PORT`` runs every row at once, one Prefect task each (train + evaluate, all seeds) on the
cluster, with this process's torch thread count, so each row's weights and scores are the same bytes as a
local run's. The ingest's per-shard tasks use the same engine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.demo import audio_classifier_task, evaluate_task
from flows.engine import Runner, prepare_workers, with_runner
from flows.ingest import ingest_flow
from flows.train import train_task
from storage import ArtifactStore
from vta_core.ablations import Variant, get_table
from vta_core.threads import stage_threads


def _train_row(root: str, shards: str, v: Variant, *, preset: str, steps: int, batch_size: int | None,
               seed: int) -> dict[str, Any]:
    common = {"preset": preset, "seed": seed, "device": "cpu", **({"batch_size": batch_size} if batch_size else {}),
              **v.train}
    if v.pretrain is None:
        return train_task(root, shards, {**common, "mode": "video", "steps": steps})
    pre = train_task(root, shards, {**common, "mode": v.pretrain, "steps": max(1, steps // 2)})
    return train_task(root, shards, {**common, "mode": "finetune", "steps": max(1, steps - steps // 2),
                                     "init": pre["ref"]})


def _row(root: str, shards: str, v: Variant, *, preset: str, steps: int, batch_size: int | None, seeds: int,
         seed: int, synth_dir: str, eval_steps: int, eval_max_clips: int | None, classifier: str) -> list[str]:
    """One row: for each seed, train (the row's overrides) then evaluate on the shared test clips and noise;
    the evaluation refs, seed by seed."""
    refs = []
    for k in range(seeds):
        trained = _train_row(root, shards, v, preset=preset, steps=steps, batch_size=batch_size, seed=seed + k)
        refs.append(evaluate_task(root, trained["checkpoint"], synth_dir, eval_steps, seed, eval_max_clips,
                                  classifier)["ref"])
    return refs


def _error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _run_row(job: dict[str, Any], *, threads: int | None = None, reraise: bool = False) -> dict[str, Any]:
    """:func:`_row` with where and when it ran (``ran``); a failure becomes its one-line error (a failed row
    of the table) unless ``reraise``. ``threads``: torch's thread count for the row (None: unchanged)."""
    ran = {"process": f"{socket.gethostname()}:{os.getpid()}", "started": time.time()}
    try:
        with stage_threads(threads) if threads else nullcontext():
            out: dict[str, Any] = {"refs": _row(**job)}
    except Exception as e:  # noqa: BLE001 - one failed row is a failed table row, not a lost table
        if reraise:
            raise
        out = {"error": _error_line(e)}
    return {**out, "ran": {**ran, "ended": time.time()}}


@task(name="ablation-row", task_run_name="{name}", cache_policy=NO_CACHE)
def row_task(name: str, threads: int, job: dict[str, Any]) -> dict[str, Any]:
    """One row on a Dask worker, with the flow process's torch thread count (vta_core/threads.py: the
    trained weights and scores then do not depend on where the row ran). A failure is returned as its
    one-line error, never a failed distributed task."""
    return _run_row(job, threads=threads)


@flow(name="ablation-rows", log_prints=True)
def rows_flow(jobs: dict[str, dict[str, Any]], threads: int) -> dict[str, dict[str, Any]]:
    """Every row at once, one task each, on this flow's task runner (Dask: ``with_runner``); results by row."""
    prepare_workers()
    log = get_run_logger()
    futures = {name: row_task.submit(name, threads, job) for name, job in jobs.items()}
    names = {f.task_run_id: name for name, f in futures.items()}
    for done, f in enumerate(as_completed(list(futures.values())), start=1):
        log.info("ablation rows: %d/%d done (%s)", done, len(futures), names[f.task_run_id])
    return {name: f.result() for name, f in futures.items()}


@flow(name="ablate", log_prints=True)
def ablate_flow(table: str = "aux", root: str | None = None, preset: str = "demo", steps: int | None = None,
                seeds: int = 1, clips: int = 64, batch_size: int | None = None, eval_steps: int = 25,
                eval_max_clips: int | None = None, classifier_steps: int = 300, seed: int = 0,
                runner: str = "local", dask_workers: int | None = None, ratings: str | None = None,
                world: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every row of ``table`` (aux | augment | conditioning | encoders) at ``preset`` with
    ``steps`` training steps each (default: the preset's) and ``seeds`` seeds; returns the ablation artifact
    summary, its table and ``row_runs`` (per row: the process that ran it, start and end times; not part of
    the artifact). ``runner``: where the rows and the ingest's per-shard tasks run (module docstring). ``ratings``: a ``vta listen``
    ratings Parquet file whose systems are this table's rows (``vta listen --ablation REF``). ``world``: the
    harder synthetic worlds' options on top of the table's own world (``lookalike``, ``overlap``, ``moving``)."""
    from vta_core.synth_world import world_kwargs

    spec = get_table(table)
    if world_kwargs(world):  # the table says which world it ran on
        spec = dataclasses.replace(spec, world=f"{spec.world}; harder world: {', '.join(world_kwargs(world))}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    listened = None
    if ratings is not None:  # read first: a missing file fails before any training
        from vta_core.evaluation.listening import Ratings

        if not Path(ratings).is_file():
            raise FileNotFoundError(f"ratings file not found: {ratings}")
        listened = Ratings(ratings).read()
    log = get_run_logger()
    store = ArtifactStore(root)
    from vta_core.presets import get_preset

    steps = steps or get_preset(preset).train.steps
    engine = Runner(runner, workers=dask_workers)
    ingest = with_runner(ingest_flow, engine)
    by_overrides: dict[str, str] = {}  # ingest overrides (JSON) -> shards ref
    shards: dict[str, str] = {}  # row -> shards ref
    synth_dir = None
    for v in spec.rows:  # 1. one ingest per distinct set of overrides; the synth world is the same for all
        overrides = {"av_align_threshold": 0.0, "seed": seed, **spec.ingest, **v.ingest}
        key = json.dumps(overrides, sort_keys=True)
        if key not in by_overrides:
            out = ingest(root=store.root, preset=preset, synth_clips=clips, synth_seed=seed, runner=runner,
                         overrides=overrides, synth_noisy_share=spec.noisy_share, synth_world=world)
            by_stage = {s["stage"]: s for s in out["stages"]}
            by_overrides[key] = by_stage["shards"]["ref"]
            synth_dir = str(Path(by_stage["synth"]["videos_dir"]).parent)
        shards[v.name] = by_overrides[key]
    assert synth_dir is not None
    classifier = audio_classifier_task(store.root, synth_dir, classifier_steps, seed)  # 2. the synth scorer
    jobs = {v.name: {"root": store.root, "shards": shards[v.name], "v": v, "preset": preset, "steps": steps,
                     "batch_size": batch_size, "seeds": seeds, "seed": seed, "synth_dir": synth_dir,
                     "eval_steps": eval_steps, "eval_max_clips": eval_max_clips,
                     "classifier": classifier["model_dir"]} for v in spec.rows}
    if engine.distributed:  # 3. rows side by side on the cluster, each trained and evaluated in one task
        results = with_runner(rows_flow, engine)(jobs=jobs, threads=torch.get_num_threads())
    else:  # 3. row after row in this process
        results = {name: _run_row(job, reraise=name == spec.baseline) for name, job in jobs.items()}
    evaluations: dict[str, list[Any]] = {}
    failures: dict[str, str] = {}
    for name, result in results.items():
        if "error" in result:
            if name == spec.baseline:
                raise RuntimeError(f"ablate {table}: the baseline row {name!r} failed: {result['error']}")
            failures[name] = result["error"]
            log.warning("ablate %s: row %r failed: %s", table, name, failures[name])
            continue
        evaluations[name] = [store.resolve(r) for r in result["refs"]]
        log.info("ablate %s: row %r evaluated (%s)", table, name, ", ".join(result["refs"]))
    from stages.ablation import ablation_stage

    budget = {"preset": preset, "steps": steps, "seeds": seeds, "clips": clips, "batch_size": batch_size,
              "eval_steps": eval_steps, "eval_max_clips": eval_max_clips, "seed": seed}
    art = ablation_stage(store, table=spec, evaluations=evaluations, failures=failures, budget=budget,  # 4.
                         ratings=listened)
    return {"root": store.root, "ref": art.ref, "path": art.path, "reused": art.reused,
            "table_md": art.file("table.md"), "report_html": art.file("report.html"), "rows": art.record["rows"],
            "failures": failures, "row_runs": {name: r["ran"] for name, r in results.items()}}
