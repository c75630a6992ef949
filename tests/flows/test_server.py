"""A real Prefect server: `prefect server start` on a free loopback port, `vta serve` serving
deployments to it, one ingest run triggered through the REST API, its state and UI artifacts read
back. Every process is started in its own process group and killed in a ``finally``."""

from __future__ import annotations

import json
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from procs import VTA, log_tail, start, stop, vta_env

SERVER_START_S = 240  # migrations + services on a busy 2-core machine
RUN_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout_s: float, logs: list[Path], every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{log_tail(*logs)}")


def test_real_server_serves_runs_and_shows_artifacts(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = vta_env(tmp_path, PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="2",
                  VTA_ROOT=str(tmp_path / "default-root"))
    root = tmp_path / "root"
    logs = [tmp_path / "server.log", tmp_path / "serve.log"]
    with ExitStack() as procs, httpx.Client(base_url=api, timeout=30) as http:
        server = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
                        "--no-ui", "--analytics-off"], env, logs[0])
        procs.callback(stop, server)
        wait_for("the server's /api/health", lambda: http.get("/health").status_code == 200, SERVER_START_S, logs)

        serve = start([*VTA, "serve", "--only", "ingest", "--only", "nightly",
                       "--root", str(root)], env, logs[1])
        procs.callback(stop, serve)
        dep = wait_for("the ingest deployment", lambda: _ok_json(http.get("/deployments/name/vta-ingest/ingest")),
                       SERVER_START_S, logs)
        nightly = wait_for("the nightly deployment",
                           lambda: _ok_json(http.get("/deployments/name/vta-nightly-evaluate/nightly")), 60, logs)
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
        assert nightly["schedules"][0]["schedule"]["timezone"] == "UTC"
        form = dep["parameter_openapi_schema"]["definitions"]["IngestParams"]["properties"]
        assert form["preset"]["enum"] == ["demo", "paper", "tiny"] and dep["parameters"]["params"]["root"] == str(root)

        params = {**dep["parameters"]["params"], "synth_clips": 4, "preset": "tiny", "max_windows": 1, "filter": False}
        for _ in range(5):  # a busy SQLite-backed server may answer 503 for a moment (seen once in CI)
            run = http.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": {"params": params}})
            if run.status_code != 503:
                break
            time.sleep(2)
        run.raise_for_status()
        run_id = run.json()["id"]

        def finished():
            state = http.get(f"/flow_runs/{run_id}").json()["state"]
            return state if state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        state = wait_for("the flow run to finish", finished, RUN_S, logs, every_s=2)
        assert state["type"] == "COMPLETED", (state, log_tail(logs[1]))

        arts = http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
        table = next(a for a in arts if a["key"] == "ingest-stages")
        assert table["type"] == "table"
        rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
        stages = [r["stage"] for r in rows]
        assert stages[0] == "synth" and stages[-1] == "shards" and "decode" in stages
        assert all(r["result"] == "computed" for r in rows)
        for r in rows:  # what the UI shows is what the store holds
            assert (root / r["stage"] / r["ref"].split("@")[1] / "_COMMITTED.json").is_file(), r
    assert server.poll() is not None and serve.poll() is not None


def _ok_json(resp: httpx.Response):
    return resp.json() if resp.status_code == 200 else None
