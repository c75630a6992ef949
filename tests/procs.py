"""Real processes for operations tests: each in its own process group, killed as a group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).parents[1]
VTA = [sys.executable, "-m", "cli.main"]


def vta_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A private Prefect home, analytics off, this checkout first on the path."""
    return {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(REPO), **extra}


def run_vta(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """``vta ARGS`` as a user runs it (a real process); with ``check``, a failure shows its stderr tail."""
    proc = subprocess.run([*VTA, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"vta {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in a new session (its own process group), output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left (children such as a temporary Prefect
    server or flow-run subprocesses included)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, signal.SIGKILL)  # the leader is gone; make sure its group is too
            return
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], *, timeout_s: float, every_s: float = 0.02) -> bool:
    """SIGKILL ``proc``'s whole group as soon as ``ready()``; False if it exited first or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(every_s)
    stop(proc)
    return False


def log_tail(*logs: Path, chars: int = 3000) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs if p.exists())
