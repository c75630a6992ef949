"""report: report.json keeps its contract (docs/architecture.md#reports); report.html links only files that exist."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from browser import chromium, media_states, serve

from vta_core.checkpoint import save_checkpoint
from vta_core.evaluation.plots import trend_png
from vta_core.evaluation.report import Target, copy_report, read_report, targets, write_report
from vta_core.evaluation.scoring import METRIC_COLUMNS, VARIANTS, evaluate_synthetic
from vta_core.presets import build_model, get_preset
from vta_core.synth_world import generate_synth
from vta_core.vae import save_vae


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    ckpt = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(ckpt, model=build_model("tiny", seed=1, vision_dim=48), geometry=get_preset("tiny").geometry,
                    extra={"conditioning": {"vision": "pixels:4", "text": None, "flow": None}, "vae": "vae",
                           "vocoder": None})
    save_vae(get_preset("tiny").build_vae(seed=0), ckpt / "vae")
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=2, seed=5, duration_s=1.2, size=64)
    out = tmp_path_factory.mktemp("report")
    ev = evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=out, steps=2, sampler="ddim", seed=0)
    # a two-point history: this evaluation's generated block, and its shuffled-video block as an "older" one
    history = [{"checkpoint": "older", **ev.metrics["shuffled_video"]}, {"checkpoint": "this", **ev.metrics["generated"]}]
    trend = tmp_path_factory.mktemp("trend") / "trend.png"
    assert "onset_f1" in trend_png(history, trend)
    return write_report(out_dir=out, evaluation=ev, timings_s={"total_s": 1.5}, config={"quick": True},
                        trend_png=trend)


def test_report_json_contract(report):
    r = json.loads(report.read_text())
    assert set(r) >= {"metrics", "timings_s", "checkpoint", "config", "unavailable"}
    assert set(r["metrics"]) == set(VARIANTS)
    for block in r["metrics"].values():
        for key in ("av_align", "onset_f1", "event_class_accuracy"):
            assert math.isfinite(block[key])
        for key in METRIC_COLUMNS:
            assert block[key] is None and r["unavailable"][key]
    assert Path(r["checkpoint"], "config.json").is_file()
    assert r["timings_s"]["total_s"] == 1.5 and r["timings_s"]["generate_s"] > 0
    assert r["config"]["quick"] is True and r["config"]["evaluation"]["steps"] == 2
    assert set(r["targets"]) == {"onset_f1", "event_class_accuracy", "av_align_vs_ground_truth",
                                 "onset_f1_over_shuffled"}


def test_copy_report_rerenders_a_report_folder_elsewhere(report, tmp_path):
    """What the demo, ``vta evaluate`` and the sweep do with an evaluation artifact's report."""
    ev, config = read_report(report.parent)
    assert config == {"quick": True} and ev.settings["steps"] == 2 and "spectrogram_png" not in ev.clips[0]["files"]
    copied = copy_report(report.parent, tmp_path / "out", config={"demo": 1}, timings_s={"train_s": 2.0})
    r, src = json.loads(copied.read_text()), json.loads(report.read_text())
    assert r["metrics"] == src["metrics"] and r["clips"] == src["clips"] and r["trend_png"] is None
    assert r["config"] == {"demo": 1, "evaluation": src["config"]["evaluation"]}
    assert r["timings_s"] == {**src["timings_s"], "train_s": 2.0}
    for c in r["clips"]:
        for rel in c["files"].values():
            assert (copied.parent / rel).stat().st_size > 0, rel


def test_report_html_references_existing_files(report):
    page = (report.parent / "report.html").read_text()
    refs = re.findall(r"src='([^']+)'", page)
    kinds = {Path(ref).suffix for ref in refs}
    assert kinds == {".png", ".wav", ".mp4"}, refs
    for ref in refs:
        assert not Path(ref).is_absolute() and (report.parent / ref).stat().st_size > 0, ref
    assert "onset_f1" in page and "event_class_accuracy" in page and "av_align" in page
    assert json.loads(report.read_text())["trend_png"] == "trend.png"


def test_report_renders_in_chromium_with_players_and_images_loaded(report):
    """Served over HTTP from its folder alone: every image decodes, every audio/video player loads its
    first frame, and the browser logs no console error, page error or failed request."""
    with serve(report.parent) as url, chromium() as browser:
        page, errors = browser.open(f"{url}/report.html")
        states = media_states(page)
    assert {Path(i["src"]).name for i in states["images"]} == {"spectrogram.png", "trend.png"}
    assert all(i["ok"] and i["width"] > 100 for i in states["images"]), states["images"]
    tags = sorted(m["tag"] for m in states["media"])
    assert tags == ["audio"] * 4 + ["video"] * 2, tags
    for m in states["media"]:
        assert m["error"] is None and m["ready"] >= 2 and m["duration"] > 0.5, m
        assert m["tag"] == "audio" or m["width"] == 64, m  # the muxed clips are real decoded video
    assert errors == []


def test_trend_png_skips_metrics_without_values(tmp_path):
    rows = [{"checkpoint": "a", "onset_f1": 0.2, "fd": None}, {"checkpoint": "b", "onset_f1": 0.4, "fd": float("nan")}]
    assert trend_png(rows, tmp_path / "t.png") == ["onset_f1"] and (tmp_path / "t.png").stat().st_size > 1000
    assert trend_png([{"checkpoint": "a"}], tmp_path / "none.png") == [] and not (tmp_path / "none.png").exists()


def test_targets_compare_generated_with_bounds():
    block = dict.fromkeys(("onset_f1", "event_class_accuracy", "av_align"), 0.5)
    t = targets({"generated": {**block, "onset_f1": 0.8}, "ground_truth": {**block, "av_align": 1.0},
                 "shuffled_video": {**block, "onset_f1": 0.7}})
    assert t["onset_f1"]["pass"] is True and t["event_class_accuracy"]["pass"] is False
    assert t["av_align_vs_ground_truth"]["value"] == pytest.approx(0.5) and t["av_align_vs_ground_truth"]["pass"] is False
    assert t["onset_f1_over_shuffled"]["value"] == pytest.approx(0.1) and t["onset_f1_over_shuffled"]["pass"] is False


def test_targets_are_a_table_passed_in():
    block = dict.fromkeys(("onset_f1", "event_class_accuracy", "av_align"), 0.5)
    metrics = {"generated": block, "ground_truth": {**block, "av_align": 0.0}, "shuffled_video": block}
    table = (Target("av", "av_align", 0.4, "plain"), Target("ratio", "av_align", 0.1, "vs gt", "ratio", "ground_truth"))
    assert targets(metrics, table) == {"av": {"value": 0.5, "need": 0.4, "pass": True},
                                       "ratio": {"value": None, "need": 0.1, "pass": None}}
