"""The evaluate and nightly deployments' flows (pydantic forms -> evaluate_flow / nightly_sweep), run
as the runner runs them: in their own process, with Prefect's API."""

from __future__ import annotations

import json
import subprocess
import sys

from procs import vta_env
from tiny_checkpoints import tiny_train_artifact

from storage import ArtifactStore
from vta_core.synth_world import generate_synth

SCRIPT = """
import json, sys
from flows.serve import EvaluateParams, NightlyParams, evaluate_deployment, nightly_evaluation_deployment
synth, root = sys.argv[1], sys.argv[2]
nights = [nightly_evaluation_deployment(NightlyParams(synth_dir=synth, root=root, steps=2, max_clips=1))
          for _ in range(2)]
one = evaluate_deployment(EvaluateParams(train="train", synth_dir=synth, root=root, steps=2, max_clips=1))
print(json.dumps({"nights": [n["new"] for n in nights], "evaluate": [e["ref"] for e in one["evaluations"]]}))
"""


def test_nightly_then_evaluate_through_the_deployment_forms(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    trains = [tiny_train_artifact(store, seed=s) for s in (0, 1)]
    syn = tmp_path / "syn"
    generate_synth(syn, clips=3, seed=4, duration_s=1.2, size=64)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(syn), store.root], capture_output=True, text=True,
                          env=vta_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(out["nights"][0]) == sorted(t.ref for t in trains) and out["nights"][1] == []  # once each
    evaluations = {a.ref for a in store.list("evaluation")}
    assert len(evaluations) == 2 and set(out["evaluate"]) <= evaluations  # the latest train's, reused
