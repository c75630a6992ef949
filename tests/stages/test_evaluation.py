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
    previous_evaluations,
    summary_row,
)
from stages.evaluation import testset_fingerprint as fingerprint  # not test_*: pytest would collect it
from storage import ArtifactStore
from vta_core.checkpoint import checkpoint_identity
from vta_core.evaluation.scoring import synth_clips
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
    summary = pq.read_table(art.file("summary.parquet")).to_pylist()
    assert [r["track"] for r in summary] == ["generated", "ground_truth", "shuffled_video", "reconstruction"]
    assert list(summary[0])[1:] == list(SUMMARY_COLUMNS) and summary[1]["onset_f1"] == report["metrics"][
        "ground_truth"]["onset_f1"]
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
