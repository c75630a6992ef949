"""The nightly evaluation deployment's flow: every train artifact not yet evaluated is evaluated
once (a versioned ``evaluate`` artifact); the next night computes nothing new."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from procs import vta_env

from stages.evaluate import VARIANTS
from stages.synth import generate_synth
from stages.train import CHECKPOINT
from storage import ArtifactStore, StageSpec
from vta_core.checkpoint import save_checkpoint
from vta_core.geometry import geometry_for
from vta_core.presets import build_model
from vta_core.vae import build_vae, save_vae


def fake_train_artifact(store: ArtifactStore, seed: int):
    """A committed train artifact in the real layout (checkpoint/ with config, weights and vae/),
    holding a seeded untrained tiny model: evaluation only needs the layout."""
    with store.writer(StageSpec("train", {"preset": "tiny", "seed": seed}, {"shards": "none"})) as w:
        folder = w.path(CHECKPOINT)
        save_checkpoint(folder, model=build_model("tiny", seed=seed, vision_dim=48), geometry=geometry_for("tiny"),
                        extra={"conditioning": {"vision": "pixels:4", "text": None, "flow": None}, "vae": "vae",
                               "vocoder": None})
        save_vae(build_vae(preset="tiny", seed=0), f"{folder}/vae")
        w.register_tree()
        return w.commit(counts={"ok": 1})


NIGHTLY = """
import json, sys
from flows.serve import NightlyParams, nightly_deployment
params = NightlyParams(synth_dir=sys.argv[1], root=sys.argv[2], steps=2, max_clips=1)
runs = [nightly_deployment(params) for _ in range(2)]
print(json.dumps([{"new": r["new"], "evaluations": r["evaluations"]} for r in runs]))
"""


@pytest.fixture
def two_trained(tmp_path):
    torch.set_num_threads(1)
    store = ArtifactStore(str(tmp_path / "root"))
    arts = [fake_train_artifact(store, seed) for seed in (0, 1)]
    syn = tmp_path / "syn"
    generate_synth(syn, clips=3, seed=4, duration_s=1.2, size=64)
    return store, arts, syn


def test_nightly_evaluates_each_train_artifact_once(two_trained, tmp_path):
    store, arts, syn = two_trained
    proc = subprocess.run([sys.executable, "-c", NIGHTLY, str(syn), store.root], capture_output=True, text=True,
                          env=vta_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(e["train"] for e in first["evaluations"]) == sorted(a.ref for a in arts)
    assert len(first["new"]) == 2 and second["new"] == []  # the second night reuses both evaluations
    assert [e["ref"] for e in second["evaluations"]] == [e["ref"] for e in first["evaluations"]]
    evals = store.list("evaluate")
    assert len(evals) == 2
    for ev in evals:
        assert store.verify(ev) == []
        report = json.loads(open(ev.file("report.json")).read())
        assert set(report["metrics"]) == set(VARIANTS)
        assert ev.record["metrics"] == report["metrics"] and ev.record["inputs"]["train"] in {a.version for a in arts}
