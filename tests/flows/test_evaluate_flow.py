"""`vta evaluate --grid` and `vta sweep` as a user runs them (subprocesses, Prefect's ephemeral API), the
nightly deployment's schedule, and the latest-vs-best comparison."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from browser import chromium, media_states, serve
from click.testing import CliRunner
from procs import run_vta
from tiny_checkpoints import tiny_train_artifact

from flows.sweep import nightly_deployment
from stages.evaluation import SUMMARY_COLUMNS
from stages.sweep import compare_latest
from storage import ArtifactStore
from vta_core.evaluation.scoring import CONTROLS
from vta_core.synth_world import generate_synth

FAST = ["--steps", "1", "--sampler", "ddim", "--max-clips", "1"]


vta = run_vta


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=8, seed=2, duration_s=1.2, size=64)
    return syn


def prefect_artifacts(env) -> dict[str, str]:
    """key -> type of the artifacts in the ephemeral API's database."""
    with sqlite3.connect(Path(env["PREFECT_HOME"]) / "prefect.db") as db:
        return dict(db.execute("select key, type from artifact where key is not null").fetchall())


def test_evaluate_grid_summary_and_previous(env, synth, tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    train = tiny_train_artifact(store, seed=0)
    base = ["evaluate", "--checkpoint", train.ref, "--videos", str(synth), "--root", store.root, "--max-clips", "1",
            "--sampler", "ddim", "--out", str(tmp_path / "out")]
    out = json.loads(vta([*base, "--grid", "steps=1,2", "--grid", "guidance=3", "--json"], env).stdout)
    assert [e["reused"] for e in out["evaluations"]] == [False, False]
    kinds = [(r["kind"], r["track"], r["steps"]) for r in out["rows"]]
    controls = [("control", t, s) for t in ("mismatched_video", "shuffled_video", "unconditional") for s in (1, 2)]
    assert kinds == [("this run", "generated", 1), ("this run", "generated", 2), *controls,
                     ("reconstruction", "reconstruction", None), ("ground truth", "ground_truth", None)]
    table = pq.read_table(out["summary_parquet"])
    assert table.column_names[-len(SUMMARY_COLUMNS):] == list(SUMMARY_COLUMNS)
    assert table.column_names[-len(SUMMARY_COLUMNS):][:9] == ["fad", "is", "fd", "kl", "kl_sigmoid", "pam", "clap", "cavp",
                                                            "av_align"]
    md = Path(out["summary_md"]).read_text()
    assert ("| kind | track | checkpoint | sampler | steps | guidance | clips | seconds_per_clip | fad | is | fd | kl "
            "| kl_sigmoid | pam | clap | cavp | av_align |") in md
    # a steps axis: the quality-vs-steps plot, and each generated row's generation seconds per clip
    assert Path(out["steps_png"]).stat().st_size > 5000 and "![steps](steps.png)" in md
    assert all(r["seconds_per_clip"] > 0 for r in out["rows"] if r["kind"] == "this run")
    assert "`fd`: no PANNs Cnn14 weights given" in md
    for control, about in CONTROLS.items():  # the summary says what each control rules out
        assert f"- `{control}`: {about}" in md
    rows = {(r["track"], r["steps"]): r for r in table.to_pylist()}
    gt = rows[("ground_truth", None)]
    assert gt["onset_f1"] is not None and gt["fd"] is None and gt["paired_onset_f1_diff"] is not None
    shuffled = rows[("shuffled_video", 2)]  # a control row: generated − control of its own grid point
    assert shuffled["paired_onset_f1_lo"] <= shuffled["paired_onset_f1_diff"] <= shuffled["paired_onset_f1_hi"]
    assert rows[("mismatched_video", 1)]["clips"] == 0  # one clip: no other clip to take frames from
    assert prefect_artifacts(env) == {"vta-evaluation": "table", "vta-evaluation-summary": "markdown"}
    # a second run: its point is reused, the other one is a previous evaluation of the same test set
    again = json.loads(vta([*base, "--grid", "steps=2", "--json"], env).stdout)
    assert [e["reused"] for e in again["evaluations"]] == [True]
    assert [(r["kind"], r["steps"]) for r in again["rows"]][-1] == ("previous", 1)
    from cli.main import cli  # a usage error stops before any flow runs: in-process is enough

    bad = CliRunner().invoke(cli, [*base, "--grid", "steps=0,x"])
    assert bad.exit_code == 2 and "--grid steps: '0' out of range" in bad.output
    bad = CliRunner().invoke(cli, [*base, "--grid", "seed=1"])
    assert bad.exit_code == 2 and "KEY one of sampler, steps, guidance" in bad.output


def test_sweep_evaluates_new_checkpoints_appends_history_and_plots(env, synth, tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    t1 = tiny_train_artifact(store, seed=1)
    broken = tiny_train_artifact(store, seed=9)
    Path(broken.file("checkpoint/model.safetensors")).write_bytes(b"truncated")
    t2 = tiny_train_artifact(store, seed=2)
    args = ["sweep", "--videos", str(synth), "--root", store.root, *FAST, "--json"]
    # the store orders artifacts by commit time (1 s resolution), then version: the sweep follows that order
    order = [a.ref for a in store.list("train") if a.ref != broken.ref]
    assert sorted(order) == sorted([t1.ref, t2.ref])
    first = json.loads(vta(args, env).stdout)
    assert first["new"] == order and first["history_rows"] == 2 and first["failed"] == [broken.ref]
    manifest = {r["clip_id"]: r for r in store.resolve(first["sweep"]).read_table().to_pylist()}
    assert manifest[broken.ref]["status"] == "failed" and manifest[t1.ref]["status"] == "ok"
    c = first["comparison"]
    assert c["metric"] == "onset_f1" and c["latest"]["train"] == order[1] and c["previous_best"]["train"] == order[0]
    assert c["delta"] == pytest.approx(c["latest"]["value"] - c["previous_best"]["value"])
    assert Path(first["trend_png"]).stat().st_size > 1000
    h1 = pq.read_table(first["history"]).to_pylist()
    assert [r["train"] for r in h1] == order

    t3 = tiny_train_artifact(store, seed=3)
    second = json.loads(vta(args, env).stdout)
    assert second["new"] == [t3.ref] and second["sweep"] != first["sweep"]
    h2 = pq.read_table(second["history"]).to_pylist()
    assert h2[:2] == h1 and h2[2]["train"] == t3.ref  # appended, earlier rows untouched
    assert second["comparison"]["latest"]["train"] == t3.ref
    third = json.loads(vta(args, env).stdout)
    assert third["new"] == [] and third["sweep"] == second["sweep"]
    assert prefect_artifacts(env).get("vta-nightly-sweep") == "markdown"

    report = Path(second["report_html"])  # the latest evaluation's report, with the trend
    with serve(report.parent) as url, chromium() as browser:
        page, errors = browser.open(f"{url}/report.html")
        states = media_states(page)
    assert "trend.png" in {Path(i["src"]).name for i in states["images"]}
    assert all(i["ok"] for i in states["images"]) and all(m["error"] is None for m in states["media"])
    assert errors == []


def test_nightly_deployment_runs_at_two_utc(synth):
    dep = nightly_deployment(synth_dir=str(synth), root="/data/vta", steps=10)
    assert dep.name == "nightly-sweep" and dep.parameters == {"root": "/data/vta", "synth_dir": str(synth), "steps": 10}
    (sched,) = dep.schedules
    assert sched.schedule.cron == "0 2 * * *" and sched.schedule.timezone == "UTC"


def test_compare_latest_respects_the_metric_direction():
    hist = [{"train": "a", "evaluation": "e1", "onset_f1": 0.5, "fd": 3.0},
            {"train": "b", "evaluation": "e2", "onset_f1": 0.7, "fd": 2.0},
            {"train": "c", "evaluation": "e3", "onset_f1": 0.6, "fd": 1.0}]
    up = compare_latest(hist, "onset_f1")
    assert up["previous_best"]["train"] == "b" and up["improved"] is False and up["delta"] == pytest.approx(-0.1)
    down = compare_latest(hist, "fd")
    assert down["previous_best"]["train"] == "b" and down["improved"] is True and down["lower_is_better"]
    assert compare_latest(hist[:1], "fd")["previous_best"] is None and compare_latest([], "fd")["latest"] is None
