"""evaluate: generated / ground-truth / shuffled-video blocks with finite numbers on a tiny checkpoint."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tiny_checkpoints import save_tiny_checkpoint

from storage import ArtifactStore
from vta_core.evaluation.scoring import (
    METRIC_COLUMNS,
    VARIANTS,
    evaluate_synthetic,
    shuffled_frames,
    synth_clips,
)
from vta_core.synth_world import generate_synth

FAST = dict(steps=2, sampler="ddim", guidance=3.0, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded untrained tiny checkpoint (pixels:4 features) and a 3-clip synth folder (1 test clip)."""
    torch.set_num_threads(1)
    ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=3, seed=4, duration_s=1.2, size=64)
    return ckpt, syn


@pytest.fixture(scope="module")
def evaluation(tiny, tmp_path_factory):
    ckpt, syn = tiny
    return evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=tmp_path_factory.mktemp("eval"), **FAST)


def test_three_blocks_with_finite_numbers_and_files(evaluation, tiny):
    _, syn = tiny
    test_ids = [cid for cid, _ in synth_clips(syn, split="test")]
    assert [c["clip_id"] for c in evaluation.clips] == test_ids and len(test_ids) == 1
    assert evaluation.failed == {} and set(evaluation.to_dict()) >= {"metrics", "clips", "timings_s", "settings"}
    for variant in VARIANTS:
        block = evaluation.metrics[variant]
        for key in ("onset_f1", "event_class_accuracy", "av_align"):
            assert isinstance(block[key], float) and math.isfinite(block[key]), (variant, key, block[key])
        assert all(block[k] is None for k in METRIC_COLUMNS)  # no metric networks given
    reasons = evaluation.unavailable
    assert set(reasons) == set(METRIC_COLUMNS) and reasons["fd"] == reasons["is"] == "no PANNs Cnn14 weights given"
    assert reasons["fad"] == "no VGGish weights given" and "MS-CLAP" in reasons["pam"] and "Diff-Foley" in reasons["cavp"]
    # the ground-truth block is the clip's own audio: the synthetic events are found there
    assert evaluation.metrics["ground_truth"]["onset_f1"] >= 0.6
    rows = pq.read_table(evaluation.per_clip_parquet).to_pylist()
    assert sorted(r["variant"] for r in rows) == sorted(VARIANTS)
    out = Path(evaluation.per_clip_parquet).parent
    for rel in evaluation.clips[0]["files"].values():
        assert (out / rel).stat().st_size > 0, rel


def test_shuffled_frames_permute_time_only():
    frames = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 3), dtype=np.uint8)
    shuffled = shuffled_frames(frames, seed=0)
    assert not np.array_equal(shuffled, frames)
    assert sorted(shuffled[:, 0, 0, 0].tolist()) == list(range(10))
    assert np.array_equal(shuffled, shuffled_frames(frames, seed=0))


def test_bad_inputs_raise_one_clear_error(tiny, tmp_path):
    ckpt, syn = tiny
    with pytest.raises(FileNotFoundError, match="not a vta synth folder"):
        evaluate_synthetic(checkpoint=ckpt, synth_dir=syn / "videos", out_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="'valid'"):
        evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=tmp_path, split="valid", **FAST)


def test_vta_evaluate_prints_the_table_and_writes_the_report(tiny, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    ckpt, syn = tiny
    base = ["evaluate", "--checkpoint", str(ckpt), "--videos", str(syn), "--root", str(tmp_path / "root")]
    res = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "out"), "--steps", "2", "--sampler", "ddim"])
    assert res.exit_code == 0, res.output
    assert "onset_f1" in res.output and "target onset_f1_over_shuffled" in res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (tmp_path / "out" / "report.html").is_file() and report["config"]["command"] == "evaluate"
    # versioned: the evaluation is a committed artifact, reused by the same command
    [art] = ArtifactStore(str(tmp_path / "root")).list("evaluation")
    assert report["config"]["evaluation_ref"] == art.ref and report["metrics"] == art.record["metrics"]
    again = CliRunner().invoke(cli, [*base, "--steps", "2", "--sampler", "ddim", "--json"])
    assert again.exit_code == 0 and f"{art.ref} (reused)" in again.output
    assert (tmp_path / "root" / "report" / "report.json").is_file()  # --out defaults to {root}/report
    bad = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "out"), "--split", "valid"])
    assert bad.exit_code == 1 and "no clips of split 'valid'" in bad.output


def test_metric_networks_fill_their_columns(tiny, tmp_path):
    """An (untrained) synthetic-world classifier: kl_synth becomes a number for generated audio (paired
    with the ground truth) and stays null for the ground truth itself; 1 clip is too few for FD and IS."""
    from vta_core.metrics.synth_classifier import SynthAudioClassifier

    ckpt, syn = tiny
    torch.manual_seed(0)
    SynthAudioClassifier(classes=["a", "b", "c"]).eval().save(tmp_path / "clf")
    ev = evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=tmp_path / "eval",
                            metric_weights={"synth_classifier": str(tmp_path / "clf")}, **FAST)
    gen, gt = ev.metrics["generated"], ev.metrics["ground_truth"]
    assert isinstance(gen["kl_synth"], float) and math.isfinite(gen["kl_synth"]) and gt["kl_synth"] is None
    assert "at least 2 rows" in ev.unavailable["fd_synth"] and "at least 10 clips" in ev.unavailable["is_synth"]
    assert ev.metric_details["ground_truth"]["kl_synth"]["reason"].startswith("no reference audio")
    rows = pq.read_table(ev.per_clip_parquet).to_pylist()
    assert {r["variant"]: r["kl_synth"] is None for r in rows} == {"generated": False, "ground_truth": True,
                                                                   "shuffled_video": False, "reconstruction": False}


def test_a_broken_test_clip_is_a_failed_entry_and_the_rest_is_scored(tiny, tmp_path):
    ckpt, syn = tiny
    broken = tmp_path / "syn"
    shutil.copytree(syn, broken)
    (broken / "videos" / "zz_broken.mp4").write_bytes(b"not a video at all")
    with (broken / "labels.csv").open("a") as f:
        f.write("zz_broken,0,drum,test\n")
    ev = evaluate_synthetic(checkpoint=ckpt, synth_dir=broken, out_dir=tmp_path / "eval", **FAST)
    assert list(ev.failed) == ["zz_broken"] and ev.failed["zz_broken"].startswith("unreadable: ")
    good = [cid for cid, _ in synth_clips(syn, split="test")]
    assert [c["clip_id"] for c in ev.clips] == good
    assert math.isfinite(ev.metrics["generated"]["onset_f1"])
