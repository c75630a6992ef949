"""Prefect flow ``ablate``: one of the paper's ablation tables (vta_core/ablations.py) as one command.

synth (one world for every row) -> one ingest per distinct set of ingest overrides (the rest of the DAG is
shared through the store: a row that changes only training reuses every ingest artifact) -> per row and
seed: train (with the row's overrides; pretraining rows: half the steps pretraining, half fine-tuning),
the same budget for every row -> the synthetic audio classifier (once) -> evaluation of each checkpoint on
the same test clips, sampler and noise -> the ``ablation`` artifact (stages/ablation.py; with ``ratings``, a
``vta listen --ablation`` ratings file, its subjective columns too). Every step is a
versioned stage, so rerunning an ablation recomputes nothing. A row whose training or evaluation fails is
a failed row of the table (its error in one line); the baseline must succeed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.demo import audio_classifier_task, evaluate_task
from flows.engine import Runner, with_runner
from flows.ingest import ingest_flow
from flows.train import train_task
from storage import ArtifactStore
from vta_core.ablations import Variant, get_table


def _train_row(root: str, shards: str, v: Variant, *, preset: str, steps: int, batch_size: int | None,
               seed: int) -> dict[str, Any]:
    common = {"preset": preset, "seed": seed, "device": "cpu", **({"batch_size": batch_size} if batch_size else {}),
              **v.train}
    if v.pretrain is None:
        return train_task(root, shards, {**common, "mode": "video", "steps": steps})
    pre = train_task(root, shards, {**common, "mode": v.pretrain, "steps": max(1, steps // 2)})
    return train_task(root, shards, {**common, "mode": "finetune", "steps": max(1, steps - steps // 2),
                                     "init": pre["ref"]})


@flow(name="ablate", log_prints=True)
def ablate_flow(table: str = "aux", root: str | None = None, preset: str = "demo", steps: int | None = None,
                seeds: int = 1, clips: int = 64, batch_size: int | None = None, eval_steps: int = 25,
                eval_max_clips: int | None = None, classifier_steps: int = 300, seed: int = 0,
                runner: str = "local", dask_workers: int | None = None, ratings: str | None = None,
                world: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every row of ``table`` (aux | augment | conditioning | encoders) at ``preset`` with
    ``steps`` training steps each (default: the preset's) and ``seeds`` seeds; returns the ablation artifact
    summary and its table. ``runner``: where the ingest's per-shard tasks run. ``ratings``: a ``vta listen``
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
    ingest = with_runner(ingest_flow, Runner(runner, workers=dask_workers))
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
    evaluations: dict[str, list[Any]] = {}
    failures: dict[str, str] = {}
    for v in spec.rows:  # 3. each row and seed: train, then evaluate on the same clips and noise
        try:
            evs = []
            for k in range(seeds):
                trained = _train_row(store.root, shards[v.name], v, preset=preset, steps=steps,
                                     batch_size=batch_size, seed=seed + k)
                ev = evaluate_task(store.root, trained["checkpoint"], synth_dir, eval_steps, seed, eval_max_clips,
                                   classifier["model_dir"])
                evs.append(store.resolve(ev["ref"]))
            evaluations[v.name] = evs
            log.info("ablate %s: row %r evaluated (%s)", table, v.name, ", ".join(e.ref for e in evs))
        except Exception as e:  # noqa: BLE001 - one failed row is a failed table row, not a lost table
            if v.name == spec.baseline:
                raise
            failures[v.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("ablate %s: row %r failed: %s", table, v.name, failures[v.name])
    from stages.ablation import ablation_stage

    budget = {"preset": preset, "steps": steps, "seeds": seeds, "clips": clips, "batch_size": batch_size,
              "eval_steps": eval_steps, "eval_max_clips": eval_max_clips, "seed": seed}
    art = ablation_stage(store, table=spec, evaluations=evaluations, failures=failures, budget=budget,  # 4.
                         ratings=listened)
    return {"root": store.root, "ref": art.ref, "path": art.path, "reused": art.reused,
            "table_md": art.file("table.md"), "report_html": art.file("report.html"), "rows": art.record["rows"],
            "failures": failures}
