"""A throwaway PostgreSQL cluster on loopback and a Prefect server on it, configured the way
docker/compose.yaml configures them (database ``prefect``, user ``prefect``, password ``prefect``,
``postgresql+asyncpg://prefect:prefect@HOST:PORT/prefect``). initdb refuses to run as root, so under
root the cluster belongs to the ``postgres`` (or ``nobody``) account and its folder is made for it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from procs import log_tail, start, stop

PASSWORD = "prefect"
SERVER_START_S = 240  # migrations + services on a busy 2-core machine


def missing() -> str | None:
    """Why a PostgreSQL cluster cannot be made here (None: it can)."""
    for exe in ("initdb", "pg_ctl", "postgres"):
        if shutil.which(exe) is None:
            return f"PostgreSQL's {exe} is not on PATH (Debian: apt-get install postgresql)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _owner() -> str | None:
    """The account the cluster runs as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody account exists for initdb")


@dataclass
class Postgres:
    folder: Path
    port: int
    owner: str | None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://prefect:{PASSWORD}@127.0.0.1:{self.port}/prefect"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args) if self.owner is None else ["runuser", "-u", self.owner, "--", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr.strip()[-2000:]}\n{self.log_tail()}")
        return proc

    def log_tail(self) -> str:
        log = self.folder / "postgres.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", opts, "-l", str(self.folder / "postgres.log"),
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "-t", "60", "stop")


@contextmanager
def postgres() -> Iterator[Postgres]:
    """initdb (scram-sha-256, user prefect), a free loopback port, database ``prefect``; stopped and
    removed after."""
    folder = Path(tempfile.mkdtemp(prefix="vta-pg-"))
    owner = _owner()
    if owner is not None:
        shutil.chown(folder, user=owner)
    pg = Postgres(folder=folder, port=free_port(), owner=owner)
    try:
        pwfile = folder / "pw"
        pwfile.write_text(PASSWORD)
        if owner is not None:
            shutil.chown(pwfile, user=owner)
        pg._run("initdb", "-D", str(folder / "data"), "-U", "prefect", f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "-E", "UTF8")
        pg.start()
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "prefect", "-d", "postgres",
                        "-c", "CREATE DATABASE prefect"], env=env, check=True, capture_output=True, timeout=60)
        yield pg
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class PrefectServer:
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout_s: float = SERVER_START_S) -> float:
        """Start and wait for /api/health; returns the seconds it took."""
        t0 = time.monotonic()
        self.proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                           "--port", str(self.port), "--no-ui", "--analytics-off"], self.env, self.log)
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited {self.proc.returncode}\n{log_tail(self.log)}")
            try:
                if httpx.get(f"{self.api}/health", timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"the Prefect server was not healthy after {timeout_s} s\n{log_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@contextmanager
def prefect_on_postgres(pg: Postgres, env: dict[str, str], log: Path) -> Iterator[PrefectServer]:
    """A Prefect server whose database is ``pg`` (PREFECT_API_DATABASE_CONNECTION_URL, as in compose)."""
    server = PrefectServer(port=free_port(), env={**env, "PREFECT_API_DATABASE_CONNECTION_URL": pg.url}, log=log)
    try:
        server.start()
        yield server
    finally:
        server.stop()
