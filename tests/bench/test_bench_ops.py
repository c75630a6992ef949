"""bench/ops.py at a small size: a throwaway PostgreSQL cluster, a Prefect server on it and `vta serve`;
concurrent runs through the API, then the server restarted under a training run and an ingest."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pg import missing

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_load_and_a_server_restart_on_postgres(tmp_path):
    out = tmp_path / "ops.json"
    cmd = [sys.executable, str(REPO / "bench" / "ops.py"), "--roots", "2", "--synth-clips", "2", "--train-steps", "300",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    load, restart = r["load"], r["restart"]
    # 2 roots × 2 ingests + an evaluate + a forced rerun, all at once: every run completed
    # a run whose process died under load (CRASHED, seen once on a 2-core machine that was also running other
    # tests) must complete when triggered again; a FAILED run (an exception: a bug) fails the test
    crashed = {k: v for k, v in load.get("not_completed", {}).items() if k != "serve_log_tail"}
    assert load["runs_started"] == 6 and load["runs_completed"] + len(crashed) == 6, load["states"]
    for name, run in crashed.items():
        assert run["state"] == "CRASHED" and run["rerun_state"] == "COMPLETED", (name, load["not_completed"])
    if crashed:
        warnings.warn(f"under load {sorted(crashed)} crashed and completed when rerun: {crashed}", stacklevel=1)
    assert load["each_version_computed_once"] and load["both_runs_of_a_root_same_versions"]
    for name, check in {**load["integrity"], **restart["integrity"]}.items():
        assert check["artifacts"] > 0 and check["damaged"] == [] and check["leftovers"] == [], name
    for part in ("api_latency_idle", "api_latency_under_load"):
        assert load[part]["samples"] > 0 and load[part]["p99_ms"] >= load[part]["p50_ms"] > 0, part
    # the restart happened while both runs were in flight, and neither lost anything
    for kind, run in restart["runs"].items():
        assert run["state_at_fault"] in {"RUNNING", "PENDING"}, (kind, run)
        assert run["outcome"] in {"continued", "rerun completed"}, (kind, run)
    if restart["runs"]["train"]["outcome"] == "rerun completed":  # marked crashed: resumed, not restarted
        assert restart["train_resumed_from_step"] > 0
    assert restart["nightly_schedule_after_restart"] == ["0 2 * * *"]
    assert restart["restarted_ingest_identical_to_clean"]
    assert r["bytes_lost"] == 0 and r["serve_alive_after_restart"]
    # damage, a full disk, a bucket refusing PUTs: one line each, nothing committed, recovered to clean bytes
    injected = [f for f in r["faults"] if "skipped" not in f]
    assert len(injected) >= 4, r["faults"]  # the three flipped bytes and the bucket; the tmpfs needs root
    for f in injected:
        assert f["one_line"] and f["committed_from_fault"] == 0 and f["identical_to_clean"] in (True, None), f
