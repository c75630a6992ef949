"""ablation: one of the paper's ablation tables (vta_core/ablations.py) gathered from the evaluations of
its rows, as a versioned artifact (``flows/ablate.py`` trains and evaluates the rows, then calls this).

Per row, from the ``generated`` track of its evaluation(s) (one per seed, the same test clips and noise for
every row): onset F1, event-class accuracy and AV-Align pooled over (seed, clip) with bootstrap 95%
intervals; the paired difference row − baseline over the same (seed, clip) pairs with its interval; per
metric the paper expects to move, whether ours does (``yes`` / ``no`` / ``unclear``: the interval covers 0);
FD/KL (synthetic-world analogues) as points; the paper's own value where the project has it.

Artifact ``ablation/{version}/`` (inputs: the rows' evaluation versions, so a rerun reuses it):
  table.parquet  one row per table row (unavailable rows too, with the reason)
  table.md       the table in the paper's row layout, numbers with intervals
  report.html    the same table as a page, with the world, the budget and what each row changes
  manifest.parquet  one row per table row: ok, or failed/unavailable with why
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from storage import Artifact, ArtifactStore, StageSpec, failed_row, ok_row
from vta_core.ablations import METRICS, AblationTable, direction
from vta_core.evaluation.intervals import intervals, paired, point
from vta_core.evaluation.report import format_value, markdown_table

STAGE = "ablation"
CODE_VERSION = "2"  # 2: saliency lift columns
POINT_COLUMNS = ("fd_synth", "kl_synth")  # distribution scores of the generated track (no interval: too few clips)
# saliency lift of the sounding object (vta_core.saliency): generated audio, and the mismatched-video audio
SALIENCY_COLUMNS = {"saliency lift (sounding)": "generated", "saliency lift (sounding), mismatched": "mismatched_video"}
_SCORE_KEYS = ("tp", "fp", "fn", "class_correct", "class_total", "av_align")


def generated_scores(evaluation: Artifact) -> list[dict[str, Any]]:
    """The generated track's per-clip scores of one evaluation, by clip id order."""
    rows = [r for r in evaluation.read_table("per_clip.parquet").to_pylist() if r["track"] == "generated"]
    return [{"clip_id": r["clip_id"], **{k: r[k] for k in _SCORE_KEYS}} for r in sorted(rows, key=lambda r: r["clip_id"])]


def pooled(evaluations: Sequence[Artifact]) -> list[dict[str, Any]]:
    """(seed, clip) scores of a row's evaluations, keyed ``"{seed index}/{clip}"`` for pairing."""
    return [{**s, "pair": f"{i}/{s['clip_id']}"} for i, ev in enumerate(evaluations) for s in generated_scores(ev)]


def row_values(scores: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Points and intervals of one row; with ``base``, the paired differences over their common pairs."""
    out: dict[str, Any] = {"n": len(scores)}
    pt, iv = point(scores), intervals(scores)
    for m in METRICS:
        lo, hi = iv[m] or (None, None)
        out.update({m: pt[m], f"{m}_lo": lo, f"{m}_hi": hi})
    if base is not None:
        by_pair = {s["pair"]: s for s in base}
        both = [(s, by_pair[s["pair"]]) for s in scores if s["pair"] in by_pair]
        diffs = paired([a for a, _ in both], [b for _, b in both])
        for m in METRICS:
            out.update({f"diff_{m}": diffs[m]["diff"], f"diff_{m}_lo": diffs[m]["lo"], f"diff_{m}_hi": diffs[m]["hi"]})
    return out


def ablation_stage(store: ArtifactStore, *, table: AblationTable, evaluations: Mapping[str, Sequence[Artifact]],
                   failures: Mapping[str, str] | None = None, budget: Mapping[str, Any]) -> Artifact:
    """Gather ``evaluations`` (row name -> its evaluation per seed) into ``table``'s artifact; reused when
    the same evaluations were gathered before. ``failures``: row -> why it has no evaluation (a failed row)."""
    failures = dict(failures or {})
    if table.baseline not in evaluations:
        raise ValueError(f"ablation {table.name}: the baseline row {table.baseline!r} has no evaluation"
                         + (f" ({failures[table.baseline]})" if table.baseline in failures else ""))
    inputs = {name: ",".join(e.version for e in evs) for name, evs in sorted(evaluations.items())}
    params = {"table": table.name, "world": table.world, "budget": dict(budget), "failures": failures}
    spec = StageSpec(STAGE, params, inputs, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            return w.artifact
        base = pooled(evaluations[table.baseline])
        rows, manifest = [], []
        for v in table.rows:
            entry: dict[str, Any] = {"row": v.name, "changes": json.dumps({"ingest": v.ingest, "train": v.train,
                                                                           "pretrain": v.pretrain}, sort_keys=True),
                                     "note": v.note, "status": "ok", "reason": None}
            if v.name not in evaluations:
                entry.update(status="failed", reason=failures.get(v.name, "not evaluated"))
                manifest.append(failed_row(v.name, "not_evaluated", entry["reason"]))
                rows.append(entry)
                continue
            evs = evaluations[v.name]
            entry.update(row_values(pooled(evs), None if v.name == table.baseline else base))
            gen = [e.record["metrics"]["generated"] for e in evs]
            for c in POINT_COLUMNS:
                vals = [g.get(c) for g in gen if g.get(c) is not None]
                entry[c] = sum(vals) / len(vals) if vals else None
            for c, track in SALIENCY_COLUMNS.items():  # mean over the row's seeds (each pooled over its clips)
                lifts = [(((e.record.get("saliency") or {}).get(track) or {}).get("sounding") or {}).get("lift")
                         for e in evs]
                lifts = [x for x in lifts if x is not None]
                entry[c] = sum(lifts) / len(lifts) if lifts else None
            entry["evaluations"] = ",".join(e.ref for e in evs)
            for m, sign in v.expect.items():
                entry[f"paper_direction_{m}"] = "+" if sign > 0 else "-"
                entry[f"ours_moves_{m}"] = direction({"diff": entry.get(f"diff_{m}"), "lo": entry.get(f"diff_{m}_lo"),
                                                      "hi": entry.get(f"diff_{m}_hi")}, sign)
            for k, val in v.paper.items():
                entry[f"paper_{k}"] = val
            rows.append(entry)
            manifest.append(ok_row(v.name, evaluations=entry["evaluations"]))
        for name, why in table.unavailable.items():
            rows.append({"row": name, "status": "unavailable", "reason": why})
            manifest.append(failed_row(name, "unavailable", why))
        keys = list(dict.fromkeys(k for r in rows for k in r))
        w.write_table("table.parquet", pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]))
        md = table_markdown(table, rows, budget)
        w.write_bytes("table.md", md.encode())
        w.write_bytes("report.html", table_html(table, rows, budget).encode())
        return w.commit(rows=manifest, extra={"table": table.name, "title": table.title, "baseline": table.baseline,
                                              "rows": rows, "world": table.world})


def _cell(r: Mapping[str, Any], m: str) -> str:
    """``0.42 [0.31, 0.55]``, or the row's status."""
    if r.get("status") != "ok":
        return r.get("status", "")
    v, lo, hi = r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")
    return "—" if v is None else f"{format_value(v)} [{format_value(lo)}, {format_value(hi)}]"


def _diff(r: Mapping[str, Any], m: str) -> str:
    d = r.get(f"diff_{m}")
    if d is None:
        return ""
    moves = r.get(f"ours_moves_{m}")
    tail = f" (paper {r[f'paper_direction_{m}']}: {moves})" if moves else ""
    return f"{d:+.3f} [{format_value(r.get(f'diff_{m}_lo'))}, {format_value(r.get(f'diff_{m}_hi'))}]{tail}"


def table_rows(table: AblationTable, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Display rows: each metric with its interval, its paired difference to the baseline and the verdict."""
    out = []
    for r in rows:
        d = {"row": r["row"] + (" (baseline)" if r["row"] == table.baseline else "")}
        for m in METRICS:
            d[m] = _cell(r, m)
            d[f"Δ {m}"] = _diff(r, m)
        d.update({c: format_value(r.get(c)) if r.get(c) is not None else "" for c in (*POINT_COLUMNS, *SALIENCY_COLUMNS)})
        d["paper"] = ", ".join(f"{k[6:]} {v:g}" for k, v in r.items() if k.startswith("paper_") and
                               not k.startswith("paper_direction") and v is not None)
        d["note"] = r.get("reason") or r.get("note") or ""
        out.append(d)
    return out


def _columns() -> list[str]:
    return ["row", *(c for m in METRICS for c in (m, f"Δ {m}")), *POINT_COLUMNS, *SALIENCY_COLUMNS, "paper", "note"]


def table_markdown(table: AblationTable, rows: Sequence[Mapping[str, Any]], budget: Mapping[str, Any]) -> str:
    head = (f"# {table.title}\n\nWorld: {table.world}. Budget: {json.dumps(dict(budget), sort_keys=True)}.\n"
            f"Numbers: point [95% bootstrap interval] over (seed, test clip); Δ = row − {table.baseline} on the "
            "same clips and noise, with its interval, and whether it moves the way the paper says (yes / no / "
            "unclear = the interval covers 0). Paper values are VGGSound numbers, to read beside ours. Saliency lift: "
            "the share of the model's saliency inside the sounding object over its share of the frame (1 = no "
            "preference), for the generated and for the mismatched-video audio.\n\n")
    return head + markdown_table(table_rows(table, rows), _columns()) + "\n"


def table_html(table: AblationTable, rows: Sequence[Mapping[str, Any]], budget: Mapping[str, Any]) -> str:
    cols = _columns()
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in table_rows(table, rows))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(table.title) + "</title>"
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
            f"<h1>{html.escape(table.title)}</h1><p>World: {html.escape(table.world)}. Budget: "
            f"{html.escape(json.dumps(dict(budget), sort_keys=True))}. Baseline: {html.escape(table.baseline)}.</p>"
            "<table id='ablation'><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
            + body + "</table></body></html>")
