"""evaluation stage: versioned by checkpoint + test-set fingerprint + settings, reused, one row per clip."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from tiny_checkpoints import save_tiny_checkpoint, tiny_train_artifact

from stages.evaluation import (
    SUMMARY_COLUMNS,
    evaluation_stage,
    held_out_synth,
    previous_evaluations,
    summary_row,
)
from stages.evaluation import testset_fingerprint as fingerprint  # not test_*: pytest would collect it
from storage import Artifact, ArtifactStore, StageSpec
from vta_core.checkpoint import checkpoint_identity
from vta_core.evaluation.scoring import CONTROLS, TRACKS, synth_clips
from vta_core.synth_world import generate_synth

FAST = dict(steps=2, sampler="ddim", guidance=3.0, seed=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    torch.set_num_threads(1)
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=8, seed=2, duration_s=1.2, size=64)
    assert len(synth_clips(syn, split="test")) == 2
    return syn


def test_evaluation_is_a_reused_self_contained_artifact(synth, tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    train = tiny_train_artifact(store, seed=0)
    art = evaluation_stage(store, checkpoint=train, synth_dir=synth, **FAST)
    assert not art.reused and art.record["checkpoint"] == train.ref
    assert art.record["testset"] == fingerprint(synth, split="test") and art.counts["ok"] == 2, art.counts
    report = json.loads(Path(art.file("report.json")).read_text())
    for c in report["clips"]:
        for rel in c["files"].values():
            assert Path(art.file(rel)).stat().st_size > 0, rel
    summary = {r["track"]: r for r in pq.read_table(art.file("summary.parquet")).to_pylist()}
    assert list(summary) == list(TRACKS) and list(summary["generated"])[1:] == list(SUMMARY_COLUMNS)
    m = report["metrics"]
    for track, row in summary.items():  # every track's values and interval bounds; a control's paired difference
        assert row["onset_f1"] == m[track]["onset_f1"] and [row["onset_f1_lo"], row["onset_f1_hi"]] == m[track][
            "intervals"]["onset_f1"]
        paired = m["generated"]["paired"].get(track, {}).get("event_class_accuracy", {})
        assert row["paired_event_class_accuracy_diff"] == paired.get("diff"), track
    assert summary["generated"]["paired_onset_f1_diff"] is None and set(m["generated"]["paired"]) == set(CONTROLS)
    assert summary["mismatched_video"]["paired_onset_f1_lo"] is not None  # 2 test clips: each gets the other's
    assert store.verify(art) == []
    # the same checkpoint named as a folder path: same identity, same version, reused
    again = evaluation_stage(store, checkpoint=train.file("checkpoint"), synth_dir=synth, **FAST)
    assert again.reused and again.version == art.version
    assert evaluation_stage(store, checkpoint=train.ref, synth_dir=synth, **FAST).version == art.version  # a ref
    # other settings: a new version, found as an earlier evaluation of the same test set
    other = evaluation_stage(store, checkpoint=train, synth_dir=synth, **{**FAST, "guidance": 1.0})
    assert other.version != art.version
    assert [a.ref for a in previous_evaluations(store, art.record["testset"])] == [art.ref, other.ref]
    row = summary_row(other)
    assert row["guidance"] == 1.0 and row["checkpoint"] == train.ref and list(row)[-len(SUMMARY_COLUMNS):] == list(
        SUMMARY_COLUMNS)


def test_checkpoint_identity_of_a_folder_is_its_content(tmp_path):
    a = checkpoint_identity(save_tiny_checkpoint(tmp_path / "a", seed=0))[1]
    assert a.startswith("dir:") and a == checkpoint_identity(save_tiny_checkpoint(tmp_path / "b", seed=0))[1]
    assert a != checkpoint_identity(save_tiny_checkpoint(tmp_path / "c", seed=1))[1]
    store = ArtifactStore(str(tmp_path / "root"))
    train = tiny_train_artifact(store, seed=0)
    assert checkpoint_identity(train.path)[1] == checkpoint_identity(train)[1] == train.ref


def fake_artifact(store: ArtifactStore, stage: str, inputs: dict, *, copy: Path | None = None, **extra) -> Artifact:
    """A committed artifact of ``stage`` with these recorded inputs (and ``copy``'s files): lineage only."""
    import shutil

    with store.writer(StageSpec(stage, {"test_double": True, **inputs}, inputs, "1")) as w:
        if copy is not None:
            shutil.copytree(copy, w.dir, dirs_exist_ok=True)
            w.register_tree()
        return w.commit(counts={"ok": 1, "failed": 0, "filtered": 0}, extra=extra)


def lineage_root(root: Path, synth: Path, *, via_synth_ref: bool) -> tuple[ArtifactStore, Artifact, Artifact]:
    """train -> shards -> decode -> (the synth artifact decode recorded | a synth folder decode read)."""
    store = ArtifactStore(str(root))
    syn = fake_artifact(store, "synth", {}, copy=synth)
    if via_synth_ref:
        dec = fake_artifact(store, "decode", {"videos": "v", "synth": syn.ref}, source=syn.file("videos"))
    else:
        dec = fake_artifact(store, "decode", {"videos": "v"}, source=str(synth / "videos"))
    shards = fake_artifact(store, "shards", {"decode": dec.version})
    with store.writer(StageSpec("train", {"preset": "tiny"}, {"shards": shards.version}, "1")) as w:
        save_tiny_checkpoint(Path(w.dir) / "checkpoint", seed=0)
        w.register_tree()
        train = w.commit(counts={"ok": 1, "failed": 0, "filtered": 0}, extra={"checkpoint": "checkpoint"})
    return store, train, syn


def test_held_out_synth_follows_the_checkpoints_lineage(synth, tmp_path):
    store, train, syn = lineage_root(tmp_path / "a", synth, via_synth_ref=True)
    other = fake_artifact(store, "synth", {"seed": 9}, copy=synth)  # a second synth: lineage decides
    for checkpoint in (train, train.ref, train.path, train.file("checkpoint")):
        assert held_out_synth(store, checkpoint) == Path(syn.path), checkpoint
    # decode read a synth folder outside the root: that folder
    store_b, train_b, _ = lineage_root(tmp_path / "b", synth, via_synth_ref=False)
    assert held_out_synth(store_b, train_b.ref) == synth
    # no lineage (a checkpoint folder of no train artifact): the root's one synth artifact, else an error
    loose = save_tiny_checkpoint(tmp_path / "loose", seed=0)
    assert held_out_synth(store_b, loose) == Path(store_b.list("synth")[0].path)
    with pytest.raises(ValueError, match=f"among {syn.ref}, {other.ref}|among {other.ref}, {syn.ref}"):
        held_out_synth(store, loose)
    with pytest.raises(ValueError, match="no held-out split found .* has no synth artifact; pass --videos"):
        held_out_synth(ArtifactStore(str(tmp_path / "empty")), loose)


def test_vta_evaluate_without_videos_scores_the_roots_held_out_split(synth, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    store, train, syn = lineage_root(tmp_path / "root", synth, via_synth_ref=True)
    args = ["evaluate", "--checkpoint", train.ref, "--root", store.root, "--steps", "1", "--sampler", "ddim",
            "--max-clips", "1", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    [ev] = store.list("evaluation")
    assert report["config"]["synth_dir"] == str(Path(syn.path).resolve()) and ev.record["checkpoint"] == train.ref
    assert ev.record["testset"] == fingerprint(syn.path, split="test", max_clips=1)
    bad = CliRunner().invoke(cli, ["evaluate", "--checkpoint", train.file("checkpoint"), "--root",
                                   str(tmp_path / "empty")])
    assert bad.exit_code == 1 and "no held-out split found" in bad.output
