"""ablation: one of the paper's ablation tables (vta_core/ablations.py) gathered from the evaluations of
its rows, as a versioned artifact (``flows/ablate.py`` trains and evaluates the rows, then calls this).

Per row, from the ``generated`` track of its evaluation(s) (one per seed, the same test clips and noise for
every row): onset F1, event-class accuracy and AV-Align pooled over (seed, clip) with bootstrap 95%
intervals; the paired difference row − baseline over the same (seed, clip) pairs with its interval; per
metric the paper expects to move, whether ours does (``yes`` / ``no`` / ``unclear``: the interval covers 0);
FD/KL (synthetic-world analogues) as points; the paper's own value where the project has it; with a
``vta listen`` ratings file (systems named after the rows, :func:`listening_systems`), each row's four
subjective scores (Table 5's axes) with intervals and the paired Δ overall quality to the baseline row.

Artifact ``ablation/{version}/`` (inputs: the rows' evaluation versions, so a rerun reuses it):
  table.parquet  one row per table row (unavailable rows too, with the reason)
  table.md       the table in the paper's row layout, numbers with intervals
  report.html    the same table as a page, with the world, the budget and what each row changes
  manifest.parquet  one row per table row: ok, or failed/unavailable with why
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage import Artifact, ArtifactStore, StageSpec, failed_row, ok_row
from vta_core.ablations import METRICS, AblationTable, direction
from vta_core.evaluation.intervals import intervals, paired, point
from vta_core.evaluation.listening import CRITERIA, rating_scores
from vta_core.evaluation.report import format_value, markdown_table

STAGE = "ablation"
CODE_VERSION = "2"  # 2: saliency lift columns (listening columns appear only with ratings: no bump needed)
POINT_COLUMNS = ("fd_synth", "kl_synth")  # distribution scores of the generated track (no interval: too few clips)
# saliency lift of the sounding object (vta_core.saliency): generated audio, and the mismatched-video audio
SALIENCY_COLUMNS = {"saliency lift (sounding)": "generated", "saliency lift (sounding), mismatched": "mismatched_video"}
_SCORE_KEYS = ("tp", "fp", "fn", "class_correct", "class_total", "av_align")
# the listening test's axes (Table 5) as table columns; the paired Δ is shown for overall quality
LISTEN_COLUMNS = {"listen: audio": "audio_quality", "listen: semantic": "semantic_alignment",
                  "listen: temporal": "temporal_alignment", "listen: overall": "overall_quality"}
GROUND_TRUTH_ROW = "ground truth (listening only)"


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


def listening_systems(store: ArtifactStore, ablation: Artifact) -> dict[str, Path]:
    """``{row: evaluation folder}`` of an ablation's evaluated rows (the first seed's evaluation), the systems
    of ``vta listen --ablation`` (the ratings then name the rows, for ``vta ablate --ratings``)."""
    if ablation.stage != STAGE:
        raise ValueError(f"{ablation.ref} is not an ablation artifact")
    out = {}
    for r in ablation.record["rows"]:
        if r.get("status") == "ok" and r.get("evaluations"):
            ev = store.resolve(r["evaluations"].split(",")[0])
            out[r["row"]] = Path(ev.path)
    return out


def _ratings_of(ratings: pa.Table | None, table: AblationTable) -> pa.Table | None:
    """The ratings of this table's rows (and of the ground truth), sorted so their hash names their content."""
    if ratings is None:
        return None
    names = {v.name for v in table.rows} | {"ground_truth"}
    rows = sorted((r for r in ratings.to_pylist() if r["system"] in names),
                  key=lambda r: (r["system"], r["clip_id"], r["rater"], r["created"] or "", r["item_id"]))
    return pa.Table.from_pylist(rows, schema=ratings.schema) if rows else None


def _listen_values(scores: Mapping[str, Any] | None) -> dict[str, Any]:
    """A system's rating scores (listening.rating_scores) as ``listen_*`` table fields."""
    if not scores:
        return {}
    out = {"listen_n": scores["n"], "listen_raters": scores["raters"], "listen_n_paired": scores.get("n_paired")}
    for c in CRITERIA:
        for suffix in ("", "_lo", "_hi"):
            out[f"listen_{c}{suffix}"] = scores.get(f"{c}{suffix}")
            out[f"listen_diff_{c}{suffix}"] = scores.get(f"diff_{c}{suffix}")
    return out


def ablation_stage(store: ArtifactStore, *, table: AblationTable, evaluations: Mapping[str, Sequence[Artifact]],
                   failures: Mapping[str, str] | None = None, budget: Mapping[str, Any],
                   ratings: pa.Table | None = None) -> Artifact:
    """Gather ``evaluations`` (row name -> its evaluation per seed) into ``table``'s artifact; reused when
    the same evaluations (and ratings) were gathered before. ``failures``: row -> why it has no evaluation (a
    failed row). ``ratings``: a ``vta listen`` ratings table whose systems are row names (and ``ground_truth``)."""
    failures = dict(failures or {})
    if table.baseline not in evaluations:
        raise ValueError(f"ablation {table.name}: the baseline row {table.baseline!r} has no evaluation"
                         + (f" ({failures[table.baseline]})" if table.baseline in failures else ""))
    inputs = {name: ",".join(e.version for e in evs) for name, evs in sorted(evaluations.items())}
    ratings = _ratings_of(ratings, table)
    listened: dict[str, Any] = {}
    if ratings is not None:  # an input only when given, so a table without ratings keeps its version
        inputs["ratings"] = hashlib.sha256(json.dumps(ratings.to_pylist(), sort_keys=True).encode()).hexdigest()[:16]
        listened = rating_scores(ratings, baseline=table.baseline)
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
            entry.update(_listen_values(listened.get(v.name)))
            rows.append(entry)
            manifest.append(ok_row(v.name, evaluations=entry["evaluations"]))
        for name, why in table.unavailable.items():
            rows.append({"row": name, "status": "unavailable", "reason": why})
            manifest.append(failed_row(name, "unavailable", why))
        if "ground_truth" in listened:  # the clips' own audio, rated beside the rows (a ceiling for the axes)
            rows.append({"row": GROUND_TRUTH_ROW, "status": "listening", "note": "the test clips' own audio",
                         **_listen_values(listened["ground_truth"])})
        keys = list(dict.fromkeys(k for r in rows for k in r))
        w.write_table("table.parquet", pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]))
        md = table_markdown(table, rows, budget)
        w.write_bytes("table.md", md.encode())
        w.write_bytes("report.html", table_html(table, rows, budget).encode())
        return w.commit(rows=manifest, extra={"table": table.name, "title": table.title, "baseline": table.baseline,
                                              "rows": rows, "world": table.world,
                                              "ratings": None if ratings is None else ratings.num_rows})


def _cell(r: Mapping[str, Any], m: str) -> str:
    """``0.42 [0.31, 0.55]``, or the row's status."""
    if r.get("status") != "ok":
        return r.get("status", "")
    return _interval(r, m)


def _interval(r: Mapping[str, Any], m: str) -> str:
    v, lo, hi = r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")
    return "—" if v is None else f"{format_value(v)} [{format_value(lo)}, {format_value(hi)}]"


def _rating(r: Mapping[str, Any], key: str, *, sign: str = "") -> str:
    """``62.5 [55.0, 70.0]`` of a listening score (``sign="+"``: a difference), or empty."""
    v, lo, hi = r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi")
    if v is None:
        return ""
    return f"{v:{sign}.1f}" + ("" if lo is None else f" [{lo:.1f}, {hi:.1f}]")


def _diff(r: Mapping[str, Any], m: str) -> str:
    d = r.get(f"diff_{m}")
    if d is None:
        return ""
    moves = r.get(f"ours_moves_{m}")
    tail = f" (paper {r[f'paper_direction_{m}']}: {moves})" if moves else ""
    return f"{d:+.3f} [{format_value(r.get(f'diff_{m}_lo'))}, {format_value(r.get(f'diff_{m}_hi'))}]{tail}"


def _listened(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(r.get("listen_n") for r in rows)


def table_rows(table: AblationTable, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Display rows: each metric with its interval, its paired difference to the baseline and the verdict;
    the listening columns when the table has ratings."""
    listen = _listened(rows)
    out = []
    for r in rows:
        d = {"row": r["row"] + (" (baseline)" if r["row"] == table.baseline else "")}
        for m in METRICS:
            d[m] = _cell(r, m)
            d[f"Δ {m}"] = _diff(r, m)
        d.update({c: format_value(r.get(c)) if r.get(c) is not None else "" for c in (*POINT_COLUMNS, *SALIENCY_COLUMNS)})
        if listen:  # ratings 1-100: one decimal
            d.update({col: _rating(r, f"listen_{c}") for col, c in LISTEN_COLUMNS.items()})
            d["Δ listen: overall"] = _rating(r, "listen_diff_overall_quality", sign="+")
        d["paper"] = ", ".join(f"{k[6:]} {v:g}" for k, v in r.items() if k.startswith("paper_") and
                               not k.startswith("paper_direction") and v is not None)
        d["note"] = r.get("reason") or r.get("note") or ""
        out.append(d)
    return out


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    listen = [*LISTEN_COLUMNS, "Δ listen: overall"] if _listened(rows) else []
    return ["row", *(c for m in METRICS for c in (m, f"Δ {m}")), *POINT_COLUMNS, *SALIENCY_COLUMNS, *listen,
            "paper", "note"]


def _listen_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not _listened(rows):
        return ""
    n = max(r.get("listen_n") or 0 for r in rows)
    raters = max(r.get("listen_raters") or 0 for r in rows)
    return (f" Listening: `vta listen` ratings 1–100 (Table 5's axes; up to {n} ratings from {raters} rater(s) per "
            "row), mean [95% bootstrap interval over ratings]; Δ listen: overall = row − baseline over the (rater, "
            "clip) pairs both were rated on.")


def table_markdown(table: AblationTable, rows: Sequence[Mapping[str, Any]], budget: Mapping[str, Any]) -> str:
    head = (f"# {table.title}\n\nWorld: {table.world}. Budget: {json.dumps(dict(budget), sort_keys=True)}.\n"
            f"Numbers: point [95% bootstrap interval] over (seed, test clip); Δ = row − {table.baseline} on the "
            "same clips and noise, with its interval, and whether it moves the way the paper says (yes / no / "
            "unclear = the interval covers 0). Paper values are VGGSound numbers, to read beside ours. Saliency lift: "
            "the share of the model's saliency inside the sounding object over its share of the frame (1 = no "
            "preference), for the generated and for the mismatched-video audio." + _listen_text(rows) + "\n\n")
    return head + markdown_table(table_rows(table, rows), _columns(rows)) + "\n"


def table_html(table: AblationTable, rows: Sequence[Mapping[str, Any]], budget: Mapping[str, Any]) -> str:
    cols = _columns(rows)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in table_rows(table, rows))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(table.title) + "</title>"
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
            f"<h1>{html.escape(table.title)}</h1><p>World: {html.escape(table.world)}. Budget: "
            f"{html.escape(json.dumps(dict(budget), sort_keys=True))}. Baseline: {html.escape(table.baseline)}."
            f"{html.escape(_listen_text(rows))}</p>"
            "<table id='ablation'><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
            + body + "</table></body></html>")
