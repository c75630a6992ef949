"""docker/: the compose file and worker image, checked statically (no Docker engine in CI)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).parents[1] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_services_healthchecks_and_startup_order(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "server", "worker", "scheduler", "dask-worker"}
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") == "unless-stopped", name
    healthy = {"condition": "service_healthy"}
    assert services["server"]["depends_on"] == {"postgres": healthy}
    assert services["worker"]["depends_on"] == {"server": healthy, "scheduler": healthy}
    assert services["dask-worker"]["depends_on"] == {"server": healthy, "scheduler": healthy}
    assert "depends_on" not in services["scheduler"]
    db = services["server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db.startswith("postgresql+asyncpg://") and "@postgres:5432/" in db
    assert "/api/health" in " ".join(services["server"]["healthcheck"]["test"])


def test_worker_serves_the_deployments_against_the_server(compose):
    worker = compose["services"]["worker"]
    assert worker["command"][0] == "serve"  # the image's entrypoint is `vta`
    assert worker["environment"]["PREFECT_API_URL"] == "http://server:4200/api"
    assert worker["build"]["dockerfile"] == "docker/Dockerfile" and "VARIANT" in worker["build"]["args"]
    assert any(v.startswith("artifacts:") for v in worker["volumes"])
    assert "vta-ingest/ingest" in " ".join(worker["healthcheck"]["test"])  # healthy = deployments registered


def test_dask_scheduler_and_workers_run_the_same_image_beside_the_worker(compose):
    services = compose["services"]
    worker, scheduler, dask_worker = services["worker"], services["scheduler"], services["dask-worker"]
    for svc in (scheduler, dask_worker):  # same dask/distributed/project versions as the flow's client
        assert svc["image"] == worker["image"] and svc["build"] == worker["build"]
        assert svc["entrypoint"] == ["dask"]  # the image's own entrypoint is `vta`
    cmd = scheduler["command"]
    assert cmd[0] == "scheduler" and cmd[cmd.index("--port") + 1] == "8786"
    assert cmd[cmd.index("--dashboard-address") + 1] == ":8787"
    assert scheduler["ports"] == ["127.0.0.1:${DASK_DASHBOARD_PORT:-8787}:8787"]  # 8786: inside the network only
    assert "8787/health" in " ".join(scheduler["healthcheck"]["test"])

    cmd = dask_worker["command"]
    assert cmd[:2] == ["worker", "tcp://scheduler:8786"]
    assert cmd[cmd.index("--nworkers") + 1] == "1" and cmd[cmd.index("--nthreads") + 1] == "1"  # one core each
    assert "ports" not in dask_worker
    port = cmd[cmd.index("--dashboard-address") + 1].lstrip(":")
    assert f"{port}/health" in " ".join(dask_worker["healthcheck"]["test"])
    assert dask_worker["environment"]["PREFECT_API_URL"] == worker["environment"]["PREFECT_API_URL"]
    assert dask_worker["volumes"] == worker["volumes"]  # plans name absolute paths: same root and videos mounts
    assert str(dask_worker["deploy"]["replicas"]).startswith("${VTA_DASK_WORKERS")

    assert worker["environment"]["VTA_RUNNER"] == "dask://scheduler:8786"
    readme = (DOCKER / "README.md").read_text()
    assert "dask://scheduler:8786" in readme and "--scale dask-worker=" in readme
    for needle in ("SLURMCluster", "KubeCluster", "PREFECT_API_URL", "s3://", "same project version"):
        assert needle in readme, needle


def test_published_ports_bind_to_loopback_only(compose):
    published = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert published, "the UI port must be published"
    for port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), port
    assert "ports" not in compose["services"]["postgres"]  # the database is reachable from the network only


def test_gpu_override_reserves_nvidia_devices(compose):
    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    assert set(gpu["services"]) == {"worker", "dask-worker"}
    for name in ("worker", "dask-worker"):
        (device,) = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
    cmd = gpu["services"]["dask-worker"]["command"]  # replaces the base command: the rest must stay the same
    assert cmd[cmd.index("--resources") + 1] == "GPU=1"  # what shard tasks on cuda ask for (flows/engine.py)
    base = compose["services"]["dask-worker"]["command"]
    assert [a for a in cmd if a not in ("--resources", "GPU=1")] == base


def test_dockerfile_variants_user_and_entrypoint():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert 'case "$VARIANT" in cpu|cuda)' in text  # anything else fails the build with a clear message
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER vta$", text, re.M)  # not root
    assert 'ENTRYPOINT ["vta"]' in text and 'CMD ["serve"]' in text
    for package in ("vta_core", "stages", "storage", "flows", "cli"):  # cli: the `vta` entry point
        assert f"COPY {package} {package}" in text
    pyproject = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:  # every installed package
        assert f"COPY {pattern.rstrip('*')} {pattern.rstrip('*')}" in text, pattern
    assert pyproject["project"]["scripts"]["vta"].split(".")[0] == "cli"
    ignored = (DOCKER.parent / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_compose_config_validates_when_a_compose_cli_is_installed(tmp_path):
    cli = ["docker", "compose"] if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0 else None
    if cli is None:
        pytest.skip("needs the `docker compose` CLI plugin (not installed here; CI has no Docker)")
    proc = subprocess.run([*cli, "-f", str(DOCKER / "compose.yaml"), "-f", str(DOCKER / "compose.gpu.yaml"), "config",
                           "-q"], capture_output=True, text=True, cwd=DOCKER)
    assert proc.returncode == 0, proc.stderr
