"""docker/: the compose file and worker image, checked statically (no Docker engine in CI)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).parents[1] / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_services_healthchecks_and_startup_order(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "server", "worker"}
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") == "unless-stopped", name
    assert services["server"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["worker"]["depends_on"] == {"server": {"condition": "service_healthy"}}
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


def test_published_ports_bind_to_loopback_only(compose):
    published = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert published, "the UI port must be published"
    for port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), port
    assert "ports" not in compose["services"]["postgres"]  # the database is reachable from the network only


def test_gpu_override_reserves_nvidia_devices():
    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    (device,) = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_dockerfile_variants_user_and_entrypoint():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert 'case "$VARIANT" in cpu|cuda)' in text  # anything else fails the build with a clear message
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER vta$", text, re.M)  # not root
    assert 'ENTRYPOINT ["vta"]' in text and 'CMD ["serve"]' in text
    for package in ("vta_core", "stages", "storage", "flows"):
        assert f"COPY {package} {package}" in text
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
