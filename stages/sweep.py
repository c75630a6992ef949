"""sweep: the nightly history of a test set — one row per evaluated checkpoint, the latest against the
previous best, and the trend (a versioned stage; the nightly flow in flows/sweep.py evaluates what is new
and then calls :func:`sweep_stage`).

Artifact ``sweep/{version}/`` (its inputs: the test set and the evaluations it covers, so a sweep with
nothing new reuses the last one):

  history.parquet   the previous sweep's rows + one row per newly evaluated checkpoint (append-only)
  trend.png         the main metrics over checkpoints (vta_core/evaluation/plots.py)
  comparison.json   latest vs previous best on ``metric``
  summary.md        the history table in Table 1's order and the comparison
  report/           the latest evaluation's report re-rendered with the trend plot (self-contained)
  manifest.parquet  one row per train artifact: ok, or the reason its evaluation failed
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pyarrow as pa

from stages.evaluation import SUMMARY_COLUMNS, summary_values
from storage import Artifact, ArtifactStore, StageSpec
from vta_core.evaluation.plots import LOWER_IS_BETTER, trend_png
from vta_core.evaluation.report import copy_report, markdown_table, read_report

STAGE = "sweep"
CODE_VERSION = "1"
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


def verdict(c: dict[str, Any]) -> str:
    """One line: is the latest checkpoint better than the previous best?"""
    if c["latest"] is None:
        return "no evaluated checkpoint"
    if c["previous_best"] is None:
        return f"latest {c['latest']['train']}: {c['metric']} {c['latest']['value']} (nothing earlier to compare)"
    word = {True: "better than", False: "not better than", None: "not comparable with"}[c["improved"]]
    return (f"latest {c['latest']['train']} ({c['metric']} {c['latest']['value']}) is {word} the previous best "
            f"{c['previous_best']['train']} ({c['previous_best']['value']})")


def summary_markdown(history: list[dict[str, Any]], comparison: dict[str, Any], testset: str) -> str:
    cols = ("train", *SUMMARY_COLUMNS)
    return (f"# vta nightly sweep: {testset}\n\n{verdict(comparison)}\n\n"
            f"{markdown_table(history, cols) if history else 'no evaluated checkpoint yet'}\n")


def _latest_sweep(store: ArtifactStore, params: dict[str, Any], testset: str) -> Artifact | None:
    arts = [a for a in store.list(STAGE) if a.params == params and a.record["inputs"].get("testset") == testset]
    return arts[-1] if arts else None


def _history_row(train: Artifact, ev: Artifact, swept: str) -> dict[str, Any]:
    return {"train": train.ref, "train_created": train.record.get("created"), "loss_last": train.record.get("loss_last"),
            "evaluation": ev.ref, "evaluated": ev.record.get("created"), "swept": swept,
            **summary_values(ev.record["metrics"], "generated")}


def _history_schema(history: list[dict[str, Any]]) -> pa.Schema:
    """Fixed column types (metrics float64, even when a column is null in every row)."""
    strings = ("train", "train_created", "evaluation", "evaluated", "swept")
    return pa.schema([(k, pa.string() if k in strings else pa.float64()) for k in HISTORY_KEYS])


def _report_with_trend(ev: Artifact, out: Path, trend: Path | None) -> None:
    """Copy ``ev``'s report folder to ``out`` and re-render it with the trend plot."""
    _, config = read_report(ev.path)
    copy_report(ev.path, out, config={**config, "evaluation_ref": ev.ref}, trend_png=trend)


def sweep_stage(store: ArtifactStore, *, testset: str, params: dict[str, Any], trains: list[Artifact],
                evaluations: dict[str, Artifact], rows: list[dict[str, Any]], new: list[str]) -> Artifact:
    """Extend the latest sweep of (``params``, ``testset``) with the rows of ``evaluations`` (train ref ->
    its evaluation artifact) not in its history yet; ``rows``: the manifest (one row per train artifact);
    ``new``: the train refs evaluated in this run. ``params["metric"]`` is the comparison metric."""
    previous = _latest_sweep(store, params, testset)
    history = previous.read_table("history.parquet").to_pylist() if previous else []
    swept = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    known = {r["evaluation"] for r in history}
    history += [_history_row(t, evaluations[t.ref], swept) for t in trains
                if t.ref in evaluations and evaluations[t.ref].ref not in known]
    comparison = compare_latest(history, params["metric"])
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
        return w.artifact
