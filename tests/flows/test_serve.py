"""Deployments (no server): names, typed forms with defaults, the nightly schedule, retries."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.retries import is_transient
from flows.serve import IngestParams, deployments, serve


def test_deployments_forms_and_nightly_schedule():
    deps = {d.name: d for d in deployments(root="/data/vta", nightly_cron="30 3 * * *")}
    assert set(deps) == {"ingest", "train", "evaluate", "pipeline", "ablate", "rerun", "nightly"}
    for d in deps.values():
        assert d.entrypoint.startswith("flows.serve.")  # a module path: works from any working directory
        assert d.parameters["params"]["root"] == "/data/vta"
    (sched,) = deps["nightly"].schedules
    assert (sched.schedule.cron, sched.schedule.timezone) == ("30 3 * * *", "UTC")
    assert not any(d.schedules for name, d in deps.items() if name != "nightly")
    form = deps["ingest"]._parameter_openapi_schema.model_dump()["definitions"]["IngestParams"]["properties"]
    assert form["preset"] == {"default": "demo", "enum": ["demo", "paper", "tiny"], "title": "Preset", "type": "string"}
    assert form["synth_clips"]["minimum"] == 0
    assert deployments()[0].parameters["params"]["root"] is None


def test_bad_parameters_and_names_are_clear_errors():
    with pytest.raises(ValueError, match="synth_clips"):
        IngestParams(synth_clips=-1)
    with pytest.raises(ValueError, match=r"unknown deployment\(s\) \['nope'\]"):
        serve(only=["ingest", "nope"])


def test_only_transient_errors_are_retried(tmp_path):
    assert is_transient(OSError("NFS hiccup")) and is_transient(TimeoutError()) and is_transient(ConnectionResetError())
    full = OSError(errno.ENOSPC, "no space left on device writing /r/x (0.0 MiB free there)")
    for permanent in (FileNotFoundError("x"), PermissionError("x"), ValueError("x"), KeyError("x"), full, None):
        assert not is_transient(permanent)
    proc = subprocess.run([sys.executable, "-c", RETRY_FLOW], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PREFECT_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"flaky": 3, "bad": 1, "result": "ok"}


# two retries for a flaky disk, none for a bad value (a subprocess: its own ephemeral Prefect API)
RETRY_FLOW = """
import json
import flows
from prefect import flow, task
from flows.retries import TASK_OPTIONS

calls = {"flaky": 0, "bad": 0}
opts = {**TASK_OPTIONS, "retry_delay_seconds": 0}

@task(**opts)
def flaky():
    calls["flaky"] += 1
    if calls["flaky"] < 3:
        raise OSError("transient")
    return "ok"

@task(**opts)
def bad():
    calls["bad"] += 1
    raise ValueError("bad value")

@flow
def both():
    out = flaky()
    try:
        bad()
    except ValueError:
        pass
    return out

result = both()
print(json.dumps({**calls, "result": result}))
"""
