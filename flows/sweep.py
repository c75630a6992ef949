"""Prefect flow ``nightly-sweep``: evaluate every checkpoint not yet evaluated on a test set, compare the
latest against the previous best, append to the history table, plot the trend.

One sweep = one versioned ``sweep`` artifact (stages/sweep.py: the history, trend, comparison and
report of the test set).

:func:`nightly_deployment` builds the Prefect deployment (cron ``0 2 * * *`` UTC) that ``vta serve`` runs;
``vta sweep`` (cli/sweep.py) runs one sweep now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import NIGHTLY_CRON
from flows.evaluate import evaluation_task
from stages.evaluation import STAGE as EVALUATION
from stages.evaluation import SUMMARY_COLUMNS, evaluation_spec, testset_fingerprint, weights_identity
from stages.sweep import sweep_stage, verdict
from storage import Artifact, ArtifactStore
from storage.manifest import failed_row, ok_row
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS

CRON = NIGHTLY_CRON  # every night at 02:00 UTC


@flow(name="nightly-sweep", log_prints=True)
def nightly_sweep(root: str | None, synth_dir: str, split: str = "test", steps: int = DEFAULT_STEPS,
                  sampler: str = DEFAULT_SAMPLER, guidance: float = DEFAULT_GUIDANCE, seed: int = 0, max_clips: int | None = None, metric: str = "onset_f1",
                  device: str = "cpu", metric_weights: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate every committed train artifact not yet evaluated on ``synth_dir``'s ``split`` with these
    settings, then write the sweep artifact (see the module docstring); returns its summary."""
    if metric not in SUMMARY_COLUMNS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(SUMMARY_COLUMNS)}")
    logger = get_run_logger()
    store = ArtifactStore(root)
    testset = testset_fingerprint(synth_dir, split=split, max_clips=max_clips)
    point = {"steps": steps, "sampler": sampler, "guidance": float(guidance)}
    common = {"split": split, "seed": seed, "max_clips": max_clips, "device": device, "metric_weights": metric_weights}
    trains = store.list("train")
    evaluations: dict[str, Artifact] = {}
    rows: list[dict[str, Any]] = []
    new: list[str] = []
    for train in trains:
        spec = evaluation_spec(checkpoint_id=train.ref, testset=testset, metric_weights=metric_weights, split=split,
                               seed=seed, max_clips=max_clips, **point)
        if (ev := store.get(EVALUATION, spec.version)) is None:
            state = evaluation_task(store.root, train.ref, str(synth_dir), point, common, return_state=True)
            if state.is_failed():
                msg = str(state.message or "evaluation failed")
                logger.warning("%s: evaluation failed: %s", train.ref, msg)
                rows.append(failed_row(train.ref, "EvaluationFailed", msg))
                continue
            ev = store.resolve(state.result()["ref"])
            new.append(train.ref)
        evaluations[train.ref] = ev
        rows.append(ok_row(train.ref, evaluation=ev.ref, new=train.ref in new))
    params = {"split": split, **point, "seed": seed, "max_clips": max_clips, "metric": metric,
              "metric_weights": weights_identity(metric_weights)}
    art = sweep_stage(store, testset=testset, params=params, trains=trains, evaluations=evaluations, rows=rows, new=new)
    history = art.read_table("history.parquet").to_pylist()
    comparison = art.record["comparison"]
    markdown = Path(art.file("summary.md")).read_text()
    create_markdown_artifact(markdown=markdown, key="vta-nightly-sweep", description=f"sweep on {testset}")
    logger.info("%s: %d checkpoint(s), %d newly evaluated; %s", art.ref, len(trains), len(new), verdict(comparison))
    return {"root": store.root, "sweep": art.ref, "testset": testset, "new": new, "history_rows": len(history),
            "failed": [r["clip_id"] for r in rows if r["status"] == "failed"], "comparison": comparison,
            "history": art.file("history.parquet"), "summary_md": art.file("summary.md"),
            **{k: art.file(f) if f in art.record["files"] else None
               for k, f in (("trend_png", "trend.png"), ("report_html", "report/report.html"))}}


def nightly_deployment(*, synth_dir: str, root: str | None = None, name: str = "nightly-sweep",
                       **parameters: Any) -> Any:
    """The Prefect deployment of :func:`nightly_sweep` on cron ``0 2 * * *`` (UTC); ``parameters`` are the
    flow's (steps, sampler, guidance, metric, ...). Serve it with ``prefect.serve(nightly_deployment(...))``."""
    from prefect.schedules import Cron

    return nightly_sweep.to_deployment(name=name, schedules=[Cron(CRON, timezone="UTC")],
                                       parameters={"root": root, "synth_dir": str(synth_dir), **parameters},
                                       description="Evaluate new checkpoints, compare with the best, extend the history")
