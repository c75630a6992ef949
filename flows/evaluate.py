"""Prefect flow ``evaluate``: a grid of sampler / steps / guidance over a test split, one versioned
``evaluation`` artifact per grid point (stages/evaluation.py), and a summary table in the paper's
column order that sets this run beside its controls (mismatched / shuffled video, unconditional), the
VAE + vocoder reconstruction, the ground truth and every earlier evaluation of the same test set (found by
its fingerprint). A control's row carries the paired difference generated − control with its interval;
the markdown says what each control rules out (``vta_core.evaluation.scoring.CONTROLS``).

Outputs in ``out_dir``: ``summary.parquet`` and ``summary.md``; in the Prefect UI: a table artifact
(``vta-evaluation``) and a markdown artifact (``vta-evaluation-summary``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from stages.evaluation import (
    SUMMARY_COLUMNS,
    evaluation_stage,
    previous_evaluations,
    summary_row,
    testset_fingerprint,
)
from storage import ArtifactStore
from storage.fs import is_local
from vta_core.evaluation.report import markdown_table
from vta_core.evaluation.scoring import CONTROLS, DIFFUSION_TRACKS, TRACKS
from vta_core.evaluation.steps_curve import plot_steps
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

GRID_AXES = ("sampler", "steps", "guidance")
ROW_KEYS = ("kind", "evaluation", "checkpoint", "track", "sampler", "steps", "guidance", "seed", "clips",
            "seconds_per_clip", *SUMMARY_COLUMNS)


def _axis_value(key: str, text: str) -> Any:
    if key == "sampler":
        if text not in SAMPLERS:
            raise ValueError(f"--grid sampler: {text!r} is not one of {', '.join(SAMPLERS)}")
        return text
    try:
        value = int(text) if key == "steps" else float(text)
    except ValueError:
        raise ValueError(f"--grid {key}: {text!r} is not a number") from None
    if (key == "steps" and value < 1) or not math.isfinite(value):
        raise ValueError(f"--grid {key}: {text!r} out of range")
    return value


def parse_grid(items: Sequence[str], *, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS,
               guidance: float = DEFAULT_GUIDANCE) -> list[dict[str, Any]]:
    """``["sampler=ddim,dpmsolver++", "steps=10,25"]`` -> every combination; axes not given keep the
    defaults. ValueError names the bad item."""
    axes: dict[str, list[Any]] = {"sampler": [sampler], "steps": [steps], "guidance": [float(guidance)]}
    seen: set[str] = set()
    for item in items:
        key, sep, values = (x.strip() for x in item.partition("="))
        if not sep or key not in GRID_AXES or not values:
            raise ValueError(f"--grid {item!r}: use KEY=V1,V2,... with KEY one of {', '.join(GRID_AXES)}")
        if key in seen:
            raise ValueError(f"--grid {key} given twice")
        seen.add(key)
        axes[key] = list(dict.fromkeys(_axis_value(key, v.strip()) for v in values.split(",")))
    return [dict(zip(GRID_AXES, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in GRID_AXES))]


def summary_markdown(rows: Sequence[dict[str, Any]], *, testset: str, unavailable: dict[str, str],
                     reports: dict[str, str]) -> str:
    cols = ("kind", "track", "checkpoint", "sampler", "steps", "guidance", "clips", "seconds_per_clip", *SUMMARY_COLUMNS)
    out = [f"# vta evaluation: {testset}", "", "Columns in Table 1's order (FAD, IS, FD, KL, PAM, CLAP, CAVP, "
           "AV-Align), the synthetic-world analogues (`*_synth`), onset F1 and event-class accuracy, their "
           "bootstrap 95% intervals over clips (`*_lo`, `*_hi`), then on a control's row the paired difference "
           "generated − control (`paired_*`: diff, lo, hi; same clips, same noise).", "",
           markdown_table(rows, cols), "", "Controls (what each differs in / what it rules out):",
           *(f"- `{k}`: {v}" for k, v in CONTROLS.items()), ""]
    if unavailable:
        out += ["Unavailable (null):", *(f"- `{k}`: {r}" for k, r in unavailable.items()), ""]
    out += ["Reports:", *(f"- {ref}: {path}" for ref, path in reports.items())]
    return "\n".join(out) + "\n"


@task(name="evaluation", cache_policy=NO_CACHE)
def evaluation_task(root: str, checkpoint: str, synth_dir: str, point: dict[str, Any],
                    common: dict[str, Any]) -> dict[str, Any]:
    store = ArtifactStore(root)
    logger = get_run_logger()
    art = evaluation_stage(store, checkpoint=checkpoint, synth_dir=synth_dir, **point,
                           **common, echo=logger.info)
    logger.info("%s (%s): %s", art.ref, point, "reused the committed evaluation" if art.reused else "evaluated")
    return {"ref": art.ref, "reused": art.reused, "report_html": art.file("report.html")}


def publish(rows: list[dict[str, Any]], markdown: str, *, description: str) -> list[str]:
    """The summary as Prefect table + markdown artifacts (shown in the UI); returns their ids."""
    table = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    return [str(create_table_artifact(table=table, key="vta-evaluation", description=description)),
            str(create_markdown_artifact(markdown=markdown, key="vta-evaluation-summary", description=description))]


def comparison_rows(store: ArtifactStore, refs: Sequence[str], testset: str) -> list[dict[str, Any]]:
    """This run's generated rows, then each control of every grid point (the diffusion controls depend on
    the settings), the reconstruction and ground truth (of the first point), then earlier evaluations."""
    arts = [store.resolve(r) for r in refs]
    rows = [{"kind": "this run", **summary_row(a)} for a in arts]
    for track in (t for t in TRACKS if t != "generated"):
        if track in DIFFUSION_TRACKS:
            rows += [{"kind": "control", **summary_row(a, track)} for a in arts]
        else:  # no diffusion in these tracks: sampler / steps / guidance do not apply
            kind = track.replace("_", " ")
            rows.append({"kind": kind, **summary_row(arts[0], track), "sampler": None, "steps": None, "guidance": None})
    rows += [{"kind": "previous", **summary_row(a)} for a in previous_evaluations(store, testset) if a.ref not in refs]
    return [{k: r.get(k) for k in ROW_KEYS} for r in rows]


@flow(name="evaluate", log_prints=True)
def evaluate_flow(checkpoint: str, synth_dir: str, root: str | None = None, grid: list[dict[str, Any]] | None = None,
                  split: str = "test", seed: int = 0, max_clips: int | None = None, device: str = "cpu",
                  metric_weights: dict[str, str] | None = None, out_dir: str | None = None,
                  split_default: str | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (folder or ``train[@VERSION]``) at every ``grid`` point (dicts of sampler,
    steps, guidance; default one point of the sampling defaults) and write the summary."""
    store = ArtifactStore(root)
    testset = testset_fingerprint(synth_dir, split=split, max_clips=max_clips, split_default=split_default)
    common = {"split": split, "split_default": split_default, "seed": seed, "max_clips": max_clips, "device": device,
              "metric_weights": metric_weights}
    done = [evaluation_task(store.root, checkpoint, str(synth_dir), point, common) for point in grid or parse_grid([])]
    refs = [d["ref"] for d in done]
    rows = comparison_rows(store, refs, testset)
    unavailable = dict(store.resolve(refs[0]).record.get("unavailable", {}))
    markdown = summary_markdown(rows, testset=testset, unavailable=unavailable,
                                reports={d["ref"]: d["report_html"] for d in done})
    out = Path(out_dir) if out_dir else (Path(store.root) / "report" if is_local(store.fs) else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    this_run = [r for r in rows if r["kind"] == "this run"]
    steps_png = None
    if len({r["steps"] for r in this_run}) > 1:  # a steps axis: quality (and cost) against steps, per sampler
        steps_png = out / "steps.png"
        plot_steps(this_run, steps_png, title=f"generated track, {testset}")
        markdown += "\nQuality and seconds per clip against sampler steps (95% intervals): ![steps](steps.png)\n"
    pq.write_table(pa.Table.from_pylist(rows), out / "summary.parquet")
    (out / "summary.md").write_text(markdown)
    ids = publish(rows, markdown, description=f"{len(done)} evaluation(s) on {testset}")
    return {"root": store.root, "testset": testset, "evaluations": done, "rows": rows, "unavailable": unavailable,
            "summary_md": str(out / "summary.md"), "summary_parquet": str(out / "summary.parquet"),
            "steps_png": str(steps_png) if steps_png else None,
            "prefect_artifacts": ids}

