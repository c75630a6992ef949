"""report: report.json keeps its contract (docs/architecture.md#reports); report.html puts the headline first,
links only files that exist, shows timings as a table and fits a 1280 px window."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import pytest
import torch
from browser import chromium, media_states, serve

from vta_core.checkpoint import save_checkpoint
from vta_core.evaluation.plots import trend_png
from vta_core.evaluation.report import (
    CSS,
    DEMO_TARGETS,
    Target,
    copy_report,
    parse_targets,
    read_report,
    report_targets,
    targets,
    write_report,
)
from vta_core.evaluation.scoring import CONTROLS, METRIC_COLUMNS, TRACKS, evaluate_synthetic
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
    generate_synth(syn, clips=3, seed=5, duration_s=1.2, size=64, test_fraction=0.6)  # 2 test clips: a mismatch pair
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
    assert set(r) >= {"metrics", "tracks", "controls", "targets", "timings_s", "checkpoint", "config", "unavailable",
                      "metric_details", "audioldm_eval_names", "headline_png", "clips"}
    assert set(r["metrics"]) == set(TRACKS) and r["tracks"] == list(TRACKS)
    for block in r["metrics"].values():
        for key in ("av_align", "onset_f1", "event_class_accuracy"):
            assert math.isfinite(block[key]) and key in block["intervals"]
        for key in METRIC_COLUMNS:
            assert block[key] is None and r["unavailable"][key]
    assert set(r["metrics"]["generated"]["paired"]) == set(TRACKS) - {"generated"}
    assert r["controls"] == {t: CONTROLS[t] for t in TRACKS if t in CONTROLS}
    assert r["audioldm_eval_names"]["kl"] == "kullback_leibler_divergence_softmax"
    assert r["audioldm_eval_names"]["kl_sigmoid"] == "kullback_leibler_divergence_sigmoid"
    assert (report.parent / r["headline_png"]).stat().st_size > 5000
    assert Path(r["checkpoint"], "config.json").is_file()
    assert r["timings_s"]["total_s"] == 1.5 and r["timings_s"]["generate_s"] > 0
    assert r["config"]["quick"] is True and r["config"]["evaluation"]["steps"] == 2
    assert list(r["targets"]) == [t.name for t in DEMO_TARGETS]
    for name, t in r["targets"].items():  # each target carries its definition, then its result
        assert set(t) == {"metric", "need", "op", "relative", "reference", "description", "value", "pass"}, name
        assert not re.search(r"#\d|issue", t["description"], re.I), t["description"]
    assert r["targets"]["onset_f1_vs_mismatched_video"]["relative"] == "paired_lo"
    assert r["targets"]["onset_f1_vs_mismatched_video"]["value"] == r["metrics"]["generated"]["paired"][
        "mismatched_video"]["onset_f1"]["lo"]


def test_report_saliency_section(report):
    """Saliency of the generated and the mismatched-video audio: per kind a share inside the boxes with its
    interval, the share by area and the lift; the same numbers on the page; one overlay per clip and track."""
    r = json.loads(report.read_text())
    sal = r["saliency"]
    assert sal["tracks"] == ["generated", "mismatched_video"] and sal["unavailable"] is None
    for track in sal["tracks"]:
        block = sal["summary"][track]
        assert block["n_clips"] == 2
        for kind in ("sounding", "ball"):  # every clip has a sounding object and the ball
            k = block[kind]
            assert 0 < k["share"] <= 1 and 0 < k["area_share"] < 1
            assert k["lift"] == pytest.approx(k["share"] / k["area_share"])  # pooled: Σ inside / Σ area
            assert k["share_lo"] <= k["share"] <= k["share_hi"] and k["lift_lo"] <= k["lift"] <= k["lift_hi"]
    for c in r["clips"]:
        assert set(c["saliency"]) == {"generated", "mismatched_video"}
        assert (report.parent / c["files"]["saliency_generated_png"]).stat().st_size > 2000
    page = (report.parent / "report.html").read_text()
    body = page[page.index("<h2>saliency"):page.index("<h2>timings")]
    lift = sal["summary"]["generated"]["sounding"]["lift"]
    assert "sounding object" in body and "distractor ball" in body and f"{lift:.3f}"[:4] in body
    assert "generated − mismatched video" in body


def test_copy_report_rerenders_a_report_folder_elsewhere(report, tmp_path):
    """What the demo, ``vta evaluate`` and the sweep do with an evaluation artifact's report."""
    ev, config = read_report(report.parent)
    assert config == {"quick": True} and ev.settings["steps"] == 2 and "spectrogram_png" not in ev.clips[0]["files"]
    copied = copy_report(report.parent, tmp_path / "out", config={"demo": 1}, timings_s={"train_s": 2.0})
    r, src = json.loads(copied.read_text()), json.loads(report.read_text())
    assert r["metrics"] == src["metrics"] and r["clips"] == src["clips"] and r["trend_png"] is None
    assert r["targets"] == src["targets"] and r["metric_details"] == src["metric_details"]
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


def test_report_html_headline_first_controls_and_timings_table(report):
    r = json.loads(report.read_text())
    page = (report.parent / "report.html").read_text()
    body = page[page.index("<body>"):]
    assert body.index("src='headline.png'") < body.index("<h2>targets</h2>") < body.index("<h2>metrics per track")
    assert "rules out" in body and html.escape(CONTROLS["mismatched_video"].partition(" / ")[2]) in body
    timings = re.search(r"<table class=timings>(.*?)</table>", body).group(1)
    assert timings.count("<tr>") == len(r["timings_s"]) + 1  # a header, then one row per phase
    assert "<td>generate</td>" in timings and "<td>total</td>" in timings and "<pre>" not in page
    players = [Path(ref).stem for ref in re.findall(r"<audio[^>]* src='([^']+)'", body)]
    assert players == [t for c in r["clips"] for t in TRACKS if f"{t}_wav" in c["files"]]  # every track playable
    assert set(players) == set(TRACKS)
    for metric in METRIC_COLUMNS:  # distribution metrics: null with their reason
        assert f"null: {html.escape(r['unavailable'][metric])}" in body


def test_report_css_caps_every_width_at_1280_px():
    """The page's own CSS: a max-width page, a minmax grid of players and media/images that scale to their cell."""
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", CSS))
    width = re.search(r"max-width:(\d+)px", rules["body"])
    assert width and int(width.group(1)) <= 1280
    assert "display:grid" in rules[".players"] and "minmax(" in rules[".players"]
    assert "width:100%" in rules["audio,video"] and "max-width:100%" in rules["img"]
    assert "overflow-x:auto" in rules[".scroll"]


def test_report_renders_in_chromium_with_players_and_images_loaded(report):
    """Served over HTTP from its folder alone: every image decodes, every audio/video player loads its
    first frame, the browser logs no error, and at a 1280 px window nothing is wider than the window."""
    r = json.loads(report.read_text())
    with serve(report.parent) as url, chromium() as browser:
        page, errors = browser.open(f"{url}/report.html")
        page.set_viewport_size({"width": 1280, "height": 800})
        states = media_states(page)
        layout = page.evaluate("""() => ({scroll: document.documentElement.scrollWidth,
            right: Math.max(...[...document.querySelectorAll('img, audio, video, table')]
                            .map(e => e.getBoundingClientRect().right))})""")
    assert {Path(i["src"]).name for i in states["images"]} == {"spectrogram.png", "trend.png", "headline.png",
                                                               "saliency_generated.png", "saliency_mismatched_video.png"}
    assert all(i["ok"] and i["width"] > 100 for i in states["images"]), states["images"]
    tags = sorted(m["tag"] for m in states["media"])
    n_audio = sum(k.endswith("_wav") for c in r["clips"] for k in c["files"])
    assert tags == ["audio"] * n_audio + ["video"] * 2 * len(r["clips"]), tags
    for m in states["media"]:
        assert m["error"] is None and m["ready"] >= 2 and m["duration"] > 0.5, m
        assert m["tag"] == "audio" or m["width"] == 64, m  # the muxed clips are real decoded video
    assert layout["scroll"] <= 1280 and layout["right"] <= 1280, layout
    assert errors == []


def test_trend_png_skips_metrics_without_values(tmp_path):
    rows = [{"checkpoint": "a", "onset_f1": 0.2, "fd": None}, {"checkpoint": "b", "onset_f1": 0.4, "fd": float("nan")}]
    assert trend_png(rows, tmp_path / "t.png") == ["onset_f1"] and (tmp_path / "t.png").stat().st_size > 1000
    assert trend_png([{"checkpoint": "a"}], tmp_path / "none.png") == [] and not (tmp_path / "none.png").exists()


def test_targets_compare_generated_with_bounds():
    block = dict.fromkeys(("onset_f1", "event_class_accuracy", "av_align"), 0.5)
    paired = {"mismatched_video": {"onset_f1": {"diff": 0.3, "lo": 0.1, "hi": 0.5},
                                   "event_class_accuracy": {"diff": 0.1, "lo": -0.05, "hi": 0.2}},
              "shuffled_video": {"onset_f1": {"diff": 0.0, "lo": 0.0, "hi": 0.0}}}
    t = targets({"generated": {**block, "onset_f1": 0.8, "paired": paired}, "ground_truth": {**block, "av_align": 1.0},
                 "shuffled_video": {**block, "onset_f1": 0.7}})
    assert t["onset_f1"]["pass"] is True and t["event_class_accuracy"]["pass"] is False  # 0.5 < 0.75
    assert t["av_align_vs_ground_truth"]["value"] == pytest.approx(0.5) and t["av_align_vs_ground_truth"]["pass"] is False
    assert t["onset_f1_vs_mismatched_video"]["value"] == 0.1 and t["onset_f1_vs_mismatched_video"]["pass"] is True
    assert t["onset_f1_vs_shuffled_video"]["value"] == 0.0 and t["onset_f1_vs_shuffled_video"]["pass"] is False  # > 0
    assert t["event_class_accuracy_vs_mismatched_video"]["pass"] is False
    old = targets({"generated": {**block, "onset_f1": 0.8}, "ground_truth": block})  # an older report: no paired
    assert old["onset_f1_vs_mismatched_video"]["value"] is None and old["onset_f1_vs_mismatched_video"]["pass"] is None


def test_targets_are_a_table_passed_in_or_configured():
    block = dict.fromkeys(("onset_f1", "event_class_accuracy", "av_align"), 0.5)
    metrics = {"generated": block, "ground_truth": {**block, "av_align": 0.0}, "shuffled_video": block}
    table = (Target("av", "av_align", 0.4, "plain"), Target("ratio", "av_align", 0.1, "vs gt", "ratio", "ground_truth"))
    got = targets(metrics, table)
    assert {k: (v["value"], v["pass"]) for k, v in got.items()} == {"av": (0.5, True), "ratio": (None, None)}
    assert parse_targets(got) == table  # report.json's "targets" parse back into the same table
    config = {"f1": {"metric": "onset_f1", "need": 0.5, "description": "at least half", "op": ">"}}
    assert targets(metrics, parse_targets(config))["f1"]["pass"] is False  # 0.5 is not > 0.5
    with pytest.raises(ValueError, match="'f1'"):
        parse_targets({"f1": {"metric": "onset_f1"}})
    with pytest.raises(ValueError, match="relative must be one of"):
        Target("x", "onset_f1", 0.0, "", relative="paired", reference="shuffled_video")
    with pytest.raises(ValueError, match="together"):
        Target("x", "onset_f1", 0.0, "", relative="ratio")


def test_configured_targets_reach_the_report_and_survive_a_copy(report, tmp_path):
    ev, _ = read_report(report.parent)
    config = {"targets": {"f1_any": {"metric": "onset_f1", "need": 0.0, "description": "any onset found"}}}
    out = copy_report(report.parent, tmp_path / "configured", config=config)
    assert list(json.loads(out.read_text())["targets"]) == ["f1_any"]
    again = copy_report(out.parent, tmp_path / "again")  # no table given: the source's own
    assert list(json.loads(again.read_text())["targets"]) == ["f1_any"]
    assert report_targets(again.parent) == parse_targets(config["targets"])
