"""Prefect flows ``evaluate`` (one train artifact) and ``nightly-evaluate`` (every train artifact not
yet evaluated on the test set). Evaluations are versioned artifacts (stages/evaluate_stage.py), so
"not yet evaluated" is "no committed evaluate artifact for this train version + test set +
settings"; a second nightly run over the same artifacts computes nothing.

The test set is a ``vta synth`` folder; without one, a fixed synthetic test set (a versioned
``synth`` artifact, every clip in the test split) is generated once in the root. Issue #6 extends
this to the paper's metrics on real test sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.retries import TASK_OPTIONS
from storage import ArtifactStore

NIGHTLY_TEST_SET = {"clips": 8, "seed": 20240, "test_fraction": 1.0}


@task(name="evaluate", **TASK_OPTIONS)
def evaluate_train_task(root: str, train: str, synth_dir: str, settings: dict[str, Any]) -> dict[str, Any]:
    from stages.evaluate_stage import evaluate_stage

    store = ArtifactStore(root)
    art = evaluate_stage(store, train=store.resolve(train), synth_dir=synth_dir, echo=get_run_logger().info,
                         **settings)
    return {"ref": art.ref, "train": art.record["train"], "reused": art.reused, "path": art.path,
            "report": art.file("report.json"), "metrics": art.record["metrics"]}


@task(name="test-set", **TASK_OPTIONS)
def test_set_task(root: str) -> str:
    from stages.synth_stage import synth_paths, synth_stage

    art = synth_stage(ArtifactStore(root), **NIGHTLY_TEST_SET)
    return str(Path(synth_paths(art)["videos_dir"]).parent)


def _settings(steps: int, max_clips: int | None, seed: int, split: str) -> dict[str, Any]:
    return {"steps": steps, "max_clips": max_clips, "seed": seed, "split": split}


@flow(name="evaluate", log_prints=True)
def evaluate_flow(train: str = "train", synth_dir: str | None = None, root: str | None = None, steps: int = 25,
                  max_clips: int | None = None, seed: int = 0, split: str = "test") -> dict[str, Any]:
    """Evaluate one train artifact (``train`` = latest, or ``train@VERSION``)."""
    store = ArtifactStore(root)
    ref = store.resolve(train).ref
    synth = synth_dir or test_set_task(store.root)
    return evaluate_train_task(store.root, ref, synth, _settings(steps, max_clips, seed, split))


@flow(name="nightly-evaluate", log_prints=True)
def nightly_evaluate_flow(synth_dir: str | None = None, root: str | None = None, steps: int = 25,
                          max_clips: int | None = None, seed: int = 0, split: str = "test") -> dict[str, Any]:
    """Evaluate every committed train artifact that has no evaluation with these settings yet."""
    store = ArtifactStore(root)
    trains = [a.ref for a in store.list("train")]
    logger = get_run_logger()
    if not trains:
        logger.info("no committed train artifacts under %s: nothing to evaluate", store.root)
        return {"root": store.root, "evaluations": []}
    synth = synth_dir or test_set_task(store.root)
    results = [evaluate_train_task(store.root, ref, synth, _settings(steps, max_clips, seed, split)) for ref in trains]
    new = [r["ref"] for r in results if not r["reused"]]
    logger.info("%d train artifact(s): %d newly evaluated, %d already evaluated", len(trains), len(new),
                len(trains) - len(new))
    return {"root": store.root, "synth_dir": synth, "evaluations": results, "new": new}
