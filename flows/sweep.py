"""Prefect flow ``nightly-sweep``: evaluate every checkpoint not yet evaluated on a test set, compare the
latest against the previous best, append to the history table, plot the trend.

One sweep = one versioned ``sweep`` artifact (its inputs: the test set, the settings and the evaluations it
covers; a sweep with nothing new reuses the last one):

  history.parquet   the previous sweep's rows + one row per newly evaluated checkpoint (append-only)
  trend.png         the main metrics over checkpoints (vta_core/evaluation/plots.py)
  comparison.json   latest vs previous best on ``metric``
  summary.md        the history table in Table 1's order and the comparison
  report/           the latest evaluation's report re-rendered with the trend plot (self-contained)
  manifest.parquet  one row per train artifact: ok, or the reason its evaluation failed

:func:`nightly_deployment` builds the Prefect deployment (cron ``0 2 * * *`` UTC) that ``vta serve`` runs;
``vta sweep`` (cli/sweep.py) runs one sweep now.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import NIGHTLY_CRON
from flows.evaluate import evaluation_task, markdown_table
from stages.evaluation import STAGE as EVALUATION
from stages.evaluation import SUMMARY_COLUMNS, evaluation_spec, testset_fingerprint, weights_identity
from storage import Artifact, ArtifactStore, StageSpec
from storage.manifest import failed_row, ok_row
from vta_core.evaluation.plots import LOWER_IS_BETTER, trend_png
from vta_core.evaluation.report import copy_report, read_report
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS

STAGE = "sweep"
CODE_VERSION = "1"
CRON = NIGHTLY_CRON  # every night at 02:00 UTC
HISTORY_KEYS = ("train", "train_created", "loss_last", "evaluation", "evaluated", "swept", *SUMMARY_COLUMNS)


def compare_latest(history: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The newest checkpoint (last row) against the best of the earlier ones on ``metric``."""
    lower = metric in LOWER_IS_BETTER
    rows = [r for r in history if r.get(metric) is not None]
    out: dict[str, Any] = {"metric": metric, "lower_is_better": lower, "latest": None, "previous_best": None,
                           "delta": None, "improved": None}
    if not history:
        return out
    latest = history[-1]
    out["latest"] = {"train": latest["train"], "evaluation": latest["evaluation"], "value": latest.get(metric)}
    earlier = [r for r in rows if r["train"] != latest["train"]]
    if earlier:
        best = (min if lower else max)(earlier, key=lambda r: r[metric])
        out["previous_best"] = {"train": best["train"], "evaluation": best["evaluation"], "value": best[metric]}
        if latest.get(metric) is not None:
            out["delta"] = latest[metric] - best[metric]
            out["improved"] = bool(out["delta"] < 0 if lower else out["delta"] > 0)
    return out


def _latest_sweep(store: ArtifactStore, params: dict[str, Any], testset: str) -> Artifact | None:
    arts = [a for a in store.list(STAGE) if a.params == params and a.record["inputs"].get("testset") == testset]
    return arts[-1] if arts else None


def _history_row(train: Artifact, ev: Artifact, swept: str) -> dict[str, Any]:
    m = ev.record["metrics"]["generated"]
    return {"train": train.ref, "train_created": train.record.get("created"), "loss_last": train.record.get("loss_last"),
            "evaluation": ev.ref, "evaluated": ev.record.get("created"), "swept": swept,
            **{k: m.get(k) for k in SUMMARY_COLUMNS}}


def _report_with_trend(ev: Artifact, out: Path, trend: Path | None) -> None:
    """Copy ``ev``'s report folder to ``out`` and re-render it with the trend plot."""
    _, config = read_report(ev.path)
    copy_report(ev.path, out, config={**config, "evaluation_ref": ev.ref}, trend_png=trend)


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
    previous = _latest_sweep(store, params, testset)
    history = previous.read_table("history.parquet").to_pylist() if previous else []
    swept = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    known = {r["evaluation"] for r in history}
    history += [_history_row(t, evaluations[t.ref], swept) for t in trains
                if t.ref in evaluations and evaluations[t.ref].ref not in known]
    comparison = compare_latest(history, metric)
    spec = StageSpec(STAGE, params, {"testset": testset, "evaluations": ",".join(r["evaluation"] for r in history)},
                     CODE_VERSION)
    with store.writer(spec) as w:
        if not w.committed:
            work = Path(w.dir)
            work.mkdir(parents=True, exist_ok=True)
            w.write_table("history.parquet", pa.Table.from_pylist(history, schema=_history_schema(history)))
            plotted = trend_png(history, work / "trend.png", label_key="train") if history else []
            w.write_json("comparison.json", comparison)
            w.write_bytes("summary.md", summary_markdown(history, comparison, testset).encode())
            if history:
                _report_with_trend(store.resolve(history[-1]["evaluation"]), work / "report",
                                   work / "trend.png" if plotted else None)
            w.register_tree()
            w.commit(rows=rows, extra={"testset": testset, "comparison": comparison, "new": new})
        art = w.artifact
    markdown = Path(art.file("summary.md")).read_text()
    create_markdown_artifact(markdown=markdown, key="vta-nightly-sweep", description=f"sweep on {testset}")
    logger.info("%s: %d checkpoint(s), %d newly evaluated; %s", art.ref, len(trains), len(new), _verdict(comparison))
    return {"root": store.root, "sweep": art.ref, "testset": testset, "new": new, "history_rows": len(history),
            "failed": [r["clip_id"] for r in rows if r["status"] == "failed"], "comparison": comparison,
            "history": art.file("history.parquet"), "summary_md": art.file("summary.md"),
            **{k: art.file(f) if f in art.record["files"] else None
               for k, f in (("trend_png", "trend.png"), ("report_html", "report/report.html"))}}


def _history_schema(history: list[dict[str, Any]]) -> pa.Schema:
    """Fixed column types (metrics float64, even when a column is null in every row)."""
    strings = ("train", "train_created", "evaluation", "evaluated", "swept")
    return pa.schema([(k, pa.string() if k in strings else pa.float64()) for k in HISTORY_KEYS])


def _verdict(c: dict[str, Any]) -> str:
    if c["latest"] is None:
        return "no evaluated checkpoint"
    if c["previous_best"] is None:
        return f"latest {c['latest']['train']}: {c['metric']} {c['latest']['value']} (nothing earlier to compare)"
    word = {True: "better than", False: "not better than", None: "not comparable with"}[c["improved"]]
    return (f"latest {c['latest']['train']} ({c['metric']} {c['latest']['value']}) is {word} the previous best "
            f"{c['previous_best']['train']} ({c['previous_best']['value']})")


def summary_markdown(history: list[dict[str, Any]], comparison: dict[str, Any], testset: str) -> str:
    cols = ("train", *SUMMARY_COLUMNS)
    return (f"# vta nightly sweep: {testset}\n\n{_verdict(comparison)}\n\n"
            f"{markdown_table(history, cols) if history else 'no evaluated checkpoint yet'}\n")


def nightly_deployment(*, synth_dir: str, root: str | None = None, name: str = "nightly-sweep",
                       **parameters: Any) -> Any:
    """The Prefect deployment of :func:`nightly_sweep` on cron ``0 2 * * *`` (UTC); ``parameters`` are the
    flow's (steps, sampler, guidance, metric, ...). Serve it with ``prefect.serve(nightly_deployment(...))``."""
    from prefect.schedules import Cron

    return nightly_sweep.to_deployment(name=name, schedules=[Cron(CRON, timezone="UTC")],
                                       parameters={"root": root, "synth_dir": str(synth_dir), **parameters},
                                       description="Evaluate new checkpoints, compare with the best, extend the history")
