"""evaluate: every track (generated + controls) on the same clips with the same noise, one pipeline call per
diffusion track, finite numbers with intervals on a tiny checkpoint."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from tiny_checkpoints import save_tiny_checkpoint

from storage import ArtifactStore
from vta_core.evaluation.scoring import (
    CONTROLS,
    DIFFUSION_TRACKS,
    METRIC_COLUMNS,
    TRACKS,
    evaluate_synthetic,
    mismatched_partners,
    shuffled_frames,
    synth_clips,
)
from vta_core.pipeline import VTAPipeline, video_frames
from vta_core.synth_world import generate_synth

FAST = dict(steps=2, sampler="ddim", guidance=3.0, seed=0)
SHORT = "synth5_00001"  # the one 0.8 s test clip: no other test clip has its frame count


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded untrained tiny checkpoint (pixels:4 features) and a synth folder whose test split holds three
    1.2 s clips and one 0.8 s clip (another frame count)."""
    torch.set_num_threads(1)
    ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))
    syn, short = tmp_path_factory.mktemp("syn"), tmp_path_factory.mktemp("short")
    generate_synth(syn, clips=4, seed=4, duration_s=1.2, size=64, test_fraction=0.75)
    generate_synth(short, clips=2, seed=5, duration_s=0.8, size=64, test_fraction=0.5)
    shutil.copy(short / "videos" / f"{SHORT}.mp4", syn / "videos")
    row = next(r for r in (short / "labels.csv").read_text().splitlines() if r.startswith(SHORT))
    with (syn / "labels.csv").open("a") as f:
        f.write(row + "\n")
    events = pq.read_table(syn / "events.parquet")
    extra = [r for r in pq.read_table(short / "events.parquet").to_pylist() if r["clip_id"] == SHORT]
    pq.write_table(pa.Table.from_pylist(events.to_pylist() + extra, schema=events.schema), syn / "events.parquet")
    assert [c for c, _ in synth_clips(syn, split="test")] == ["synth4_00001", "synth4_00002", "synth4_00003", SHORT]
    return ckpt, syn


@pytest.fixture(scope="module")
def evaluation(tiny, tmp_path_factory):
    ckpt, syn = tiny
    return evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=tmp_path_factory.mktemp("eval"), **FAST)


def test_every_track_with_finite_numbers_intervals_and_files(evaluation, tiny):
    _, syn = tiny
    test_ids = [cid for cid, _ in synth_clips(syn, split="test")]
    assert [c["clip_id"] for c in evaluation.clips] == test_ids
    assert evaluation.failed == {} and set(evaluation.to_dict()) >= {"metrics", "clips", "timings_s", "settings"}
    assert set(evaluation.metrics) == set(TRACKS) and set(CONTROLS) == set(TRACKS) - {"generated"}
    for track in TRACKS:
        block = evaluation.metrics[track]
        assert block["n_clips"] == (3 if track == "mismatched_video" else 4), track
        for key in ("onset_f1", "event_class_accuracy", "av_align"):
            assert isinstance(block[key], float) and math.isfinite(block[key]), (track, key, block[key])
            lo, hi = block["intervals"][key]
            assert lo <= hi and 0.0 <= lo and hi <= 1.0, (track, key, lo, hi)
        assert all(block[k] is None for k in METRIC_COLUMNS)  # no metric networks given
    assert evaluation.metrics["mismatched_video"]["missing"].keys() == {SHORT}
    assert "frames" in evaluation.metrics["mismatched_video"]["missing"][SHORT]
    paired = evaluation.metrics["generated"]["paired"]
    assert set(paired) == set(CONTROLS) and paired["mismatched_video"]["onset_f1"]["n_clips"] == 3
    for d in paired.values():
        assert d["onset_f1"]["lo"] <= d["onset_f1"]["hi"]
    reasons = evaluation.unavailable
    assert set(reasons) == set(METRIC_COLUMNS) and reasons["fd"] == reasons["is"] == "no PANNs Cnn14 weights given"
    # the ground-truth block is the clip's own audio: the synthetic events are found there
    assert evaluation.metrics["ground_truth"]["onset_f1"] >= 0.6
    rows = pq.read_table(evaluation.per_clip_parquet).to_pylist()
    assert sorted((r["clip_id"], r["track"]) for r in rows) == sorted(
        (c, t) for c in test_ids for t in TRACKS if (c, t) != (SHORT, "mismatched_video"))
    out = Path(evaluation.per_clip_parquet).parent
    for c in evaluation.clips:
        assert set(c["scores"]) | set(c["missing"]) == set(TRACKS) and not set(c["scores"]) & set(c["missing"])
        assert {f"{t}_wav" for t in c["scores"]} <= set(c["files"])
        for rel in c["files"].values():
            assert (out / rel).stat().st_size > 0, rel


class Recorder:
    """Stands in for ``VTAPipeline.__call__``: records each call; clip audio = noise from its seed."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, pipe, frames, seconds, *, steps, sampler, guidance, seed=0, seeds=None, unconditional=False):
        self.calls.append({"frames": [np.array(f) for f in frames], "seconds": list(seconds), "seeds": list(seeds),
                           "unconditional": unconditional})
        return [0.05 * np.random.default_rng(s).standard_normal(round(t * pipe.sample_rate)).astype(np.float32)
                for s, t in zip(seeds, seconds, strict=True)]


def test_one_call_per_track_same_noise_across_tracks_same_clips(tiny, tmp_path, monkeypatch):
    ckpt, syn = tiny
    rec = Recorder()
    monkeypatch.setattr(VTAPipeline, "__call__", lambda self, *a, **k: rec(self, *a, **k))
    ev = evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=tmp_path, **{**FAST, "seed": 5})
    ids = [c for c, _ in synth_clips(syn, split="test")]
    # one pipeline call per diffusion track, each over every clip the track has (the whole split)
    assert len(rec.calls) == len(DIFFUSION_TRACKS) == 4
    calls = dict(zip(DIFFUSION_TRACKS, rec.calls, strict=True))
    assert [c["unconditional"] for c in rec.calls] == [False, False, False, True]
    # clip i of the sorted split: seed + i in every track; different clips, different seeds
    assert calls["generated"]["seeds"] == [5, 6, 7, 8] and [c["seed"] for c in ev.clips] == [5, 6, 7, 8]
    for track in ("shuffled_video", "unconditional"):
        assert calls[track]["seeds"] == calls["generated"]["seeds"]
        assert calls[track]["seconds"] == calls["generated"]["seconds"]
    assert calls["mismatched_video"]["seeds"] == [5, 6, 7]  # the short clip has no same-length partner
    assert calls["mismatched_video"]["seconds"] == calls["generated"]["seconds"][:3]
    pipe = VTAPipeline.from_checkpoint(ckpt)
    own = [video_frames(v, geometry=pipe.geometry, duration_s=pipe.geometry.duration_s)[0]
           for _, v in synth_clips(syn, split="test")]
    for k, f in enumerate(own):
        np.testing.assert_array_equal(calls["generated"]["frames"][k], f)
        np.testing.assert_array_equal(calls["unconditional"]["frames"][k], f)
        np.testing.assert_array_equal(calls["shuffled_video"]["frames"][k], shuffled_frames(f))
    # mismatched: a derangement, each clip another clip's whole frames, in order
    partners = [c["mismatched_with"] for c in ev.clips]
    assert partners[:3] == ["synth4_00002", "synth4_00003", "synth4_00001"] and partners[3] is None
    for k in range(3):
        assert partners[k] != ids[k]
        np.testing.assert_array_equal(calls["mismatched_video"]["frames"][k], own[ids.index(partners[k])])
        assert not np.array_equal(calls["mismatched_video"]["frames"][k], own[k])
    # each track's audio lands at its own clip: clip k's wav is the noise of seed 5 + k
    for k, c in enumerate(ev.clips):
        want = 0.05 * np.random.default_rng(5 + k).standard_normal(round(c["seconds"] * pipe.sample_rate))
        for track in DIFFUSION_TRACKS:
            if track in c["scores"]:
                got, _ = sf.read(tmp_path / c["files"][f"{track}_wav"], dtype="float32")
                np.testing.assert_allclose(got, want, atol=2 / 32768)
    # the controls are scored on the same clips as generated
    gen = {c["clip_id"] for c in ev.clips if "generated" in c["scores"]}
    for track in CONTROLS:
        have = {c["clip_id"] for c in ev.clips if track in c["scores"]}
        assert have == (gen - {SHORT} if track == "mismatched_video" else gen), track


def test_shuffled_frames_rotate_time_by_half_the_clip():
    frames = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 3), dtype=np.uint8)
    shuffled = shuffled_frames(frames)
    assert shuffled[:, 0, 0, 0].tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]  # in order, shifted by T // 2
    demo = np.arange(29, dtype=np.uint8)[:, None]  # the demo's 29-frame window: shifted by 14 frames (1.4 s)
    assert shuffled_frames(demo)[:, 0].tolist() == [*range(14, 29), *range(14)]
    assert shuffled_frames(frames[:1]).shape == (1, 2, 2, 3)


def test_mismatched_partners_are_a_derangement_within_equal_lengths():
    rng = np.random.default_rng(0)
    counts = {f"c{i:02d}": int(rng.choice([29, 29, 29, 12, 7])) for i in range(40)}
    counts["lonely"] = 3
    partner, missing = mismatched_partners(counts)
    assert set(missing) == {c for c, n in counts.items() if list(counts.values()).count(n) == 1} >= {"lonely"}
    assert set(partner) | set(missing) == set(counts)
    assert all(p != c and counts[p] == counts[c] for c, p in partner.items())  # never its own, same length
    assert sorted(partner.values()) == sorted(partner)  # a permutation: every clip's frames used once
    assert mismatched_partners({"a": 5, "b": 5}) == ({"a": "b", "b": "a"}, {})


def test_a_missing_split_is_an_error_naming_the_clip(tiny, tmp_path):
    _, syn = tiny
    folder = tmp_path / "syn"
    shutil.copytree(syn, folder)
    with (folder / "labels.csv").open("a") as f:
        f.write("synth4_00000b,0,drum\n")
    shutil.copy(folder / "videos" / "synth4_00000.mp4", folder / "videos" / "synth4_00000b.mp4")
    with pytest.raises(ValueError, match=r"labels.csv:\d+: clip synth4_00000b has no split"):
        synth_clips(folder, split="test")
    assert "synth4_00000b" in [c for c, _ in synth_clips(folder, split="test", split_default="test")]
    assert "synth4_00000b" not in [c for c, _ in synth_clips(folder, split="test", split_default="train")]


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
    base = ["evaluate", "--checkpoint", str(ckpt), "--videos", str(syn), "--root", str(tmp_path / "root"),
            "--max-clips", "2"]
    res = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "out"), "--steps", "2", "--sampler", "ddim"])
    assert res.exit_code == 0, res.output
    assert "onset_f1" in res.output and "mismatched_video" in res.output and "generated − unconditional" in res.output
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
    """An (untrained) synthetic-world classifier: kl_synth becomes a number for every track paired with the
    ground truth and stays null for the ground truth itself; 2 clips are too few for FD and IS."""
    from vta_core.metrics.synth_classifier import SynthAudioClassifier

    ckpt, syn = tiny
    torch.manual_seed(0)
    SynthAudioClassifier(classes=["a", "b", "c"]).eval().save(tmp_path / "clf")
    ev = evaluate_synthetic(checkpoint=ckpt, synth_dir=syn, out_dir=tmp_path / "eval", max_clips=2,
                            metric_weights={"synth_classifier": str(tmp_path / "clf")}, **FAST)
    gen, gt = ev.metrics["generated"], ev.metrics["ground_truth"]
    assert isinstance(gen["kl_synth"], float) and math.isfinite(gen["kl_synth"]) and gt["kl_synth"] is None
    assert ev.metric_details["ground_truth"]["kl_synth"]["reason"].startswith("no reference audio")
    rows = pq.read_table(ev.per_clip_parquet).to_pylist()
    assert {r["track"]: r["kl_synth"] is None for r in rows} == {t: t == "ground_truth" for t in TRACKS}


def test_a_broken_test_clip_is_a_failed_entry_and_the_rest_is_scored(tiny, tmp_path):
    ckpt, syn = tiny
    broken = tmp_path / "syn"
    shutil.copytree(syn, broken)
    (broken / "videos" / "zz_broken.mp4").write_bytes(b"not a video at all")
    with (broken / "labels.csv").open("a") as f:
        f.write("zz_broken,0,drum,test\n")
    ev = evaluate_synthetic(checkpoint=ckpt, synth_dir=broken, out_dir=tmp_path / "eval", **FAST)
    good = [cid for cid, _ in synth_clips(syn, split="test")]
    assert list(ev.failed) == ["zz_broken"] and ev.failed["zz_broken"].startswith("unreadable: ")
    assert [c["clip_id"] for c in ev.clips] == good and [c["seed"] for c in ev.clips] == [0, 1, 2, 3]
    assert math.isfinite(ev.metrics["generated"]["onset_f1"])


def test_steps_curve_matches_the_evaluation_at_its_point_and_plots(evaluation, tiny, tmp_path):
    """The light curve (generated track only) is the full evaluation's generated block at the same settings:
    same clips, same noise, same scores and intervals; another steps count is another point."""
    from vta_core.evaluation.steps_curve import plot_steps, steps_curve

    ckpt, syn = tiny
    curve = steps_curve(checkpoint=ckpt, synth_dir=syn, seed=0, echo=lambda _: None,
                        points=[{"sampler": "ddim", "steps": 2, "guidance": 3.0},
                                {"sampler": "ddim", "steps": 1, "guidance": 3.0}])
    assert curve["clips"] == [c["clip_id"] for c in evaluation.clips] and curve["failed"] == {}
    at, other = curve["rows"]
    block = evaluation.metrics["generated"]
    for m in ("onset_f1", "event_class_accuracy", "av_align"):
        assert at[m] == pytest.approx(block[m]), m
        assert [at[f"{m}_lo"], at[f"{m}_hi"]] == pytest.approx(block["intervals"][m]), m
    assert at["seconds_per_clip"] > 0 and other["steps"] == 1 and at["clips"] == 4
    # the 2-step point is the sampler's converged reference: 0 from itself, > 0 for the 1-step sample
    assert at["log_spectral_l1_to_converged"] == 0.0 and other["log_spectral_l1_to_converged"] > 0.0
    assert other["converged_steps"] == 2 and at["unet_calls"] == 4
    drawn = plot_steps(curve["rows"], tmp_path / "steps.png", title="tiny")
    assert "onset_f1" in drawn and (tmp_path / "steps.png").stat().st_size > 5000
