"""Training with 2 gloo processes on CPU (tiny preset): what each rank reads, that the ranks agree, that
the recipe does not change with the number of processes, exact resume after SIGKILL of the launcher, a rank
that dies, resuming with another number of processes, and `torchrun ... vta train` (the multi-node entry)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from procs import REPO, VTA, log_tail, start, stop
from safetensors.torch import load_file
from tiny_shards import build_shards

from stages.train import train_stage
from storage import ArtifactStore
from vta_core.presets import get_preset
from vta_core.synth_world import generate_synth
from vta_core.train import TRACE_ENV

KW = dict(preset=get_preset("tiny"), steps=30, batch_size=4, ckpt_every=5, seed=3)
CLI_TRAIN = ["train", "--preset", "tiny", "--batch-size", "4", "--seed", "3", "--json",
             "--steps", str(KW["steps"]), "--ckpt-every", str(KW["ckpt_every"])]  # = KW
WEIGHTS = ("checkpoint/model.safetensors", "checkpoint/ema.safetensors")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=8, seed=1, duration_s=2.0, size=64)
    root = tmp_path_factory.mktemp("base") / "root"
    build_shards(root, syn / "videos", syn / "labels.csv")
    return root


def copy_root(base: Path, dest: Path) -> ArtifactStore:
    shutil.copytree(base, dest)
    return ArtifactStore(str(dest))


def trace(prefix: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in Path(f"{prefix}.rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(base, tmp_path_factory):
    """The same training with 1 and with 2 processes (in-process driver), each rank tracing its sample keys."""
    out = {}
    for n in (1, 2):
        store = copy_root(base, tmp_path_factory.mktemp(f"n{n}") / "root")
        prefix = Path(store.root) / "trace"
        os.environ[TRACE_ENV] = str(prefix)
        try:
            art = train_stage(store, shards=store.resolve("shards"), nproc=n, **KW)
        finally:
            del os.environ[TRACE_ENV]
        out[n] = {"art": art, "trace": prefix, "history": json.loads(Path(art.file("history.json")).read_text())}
    return out


def keys_by_step(prefix: Path, rank: int) -> list[list[str]]:
    return [r["keys"] for r in trace(prefix, rank) if "keys" in r]


def test_ranks_read_disjoint_halves_of_the_same_global_batches(runs):
    one = keys_by_step(runs[1]["trace"], 0)
    r0, r1 = keys_by_step(runs[2]["trace"], 0), keys_by_step(runs[2]["trace"], 1)
    assert len(one) == len(r0) == len(r1) == KW["steps"]  # every rank drew a batch at every step
    for k in range(KW["steps"]):
        assert len(r0[k]) == len(r1[k]) == 2 and not set(r0[k]) & set(r1[k]), k
        assert r0[k] + r1[k] == one[k], k  # together: exactly the global batch the single process used
    assert len({key for step in one for key in step}) > 4  # more than one batch's worth of samples was seen


def test_the_ranks_hold_identical_weights_at_every_checkpoint(runs):
    d0 = [r["digest"] for r in trace(runs[2]["trace"], 0) if "checkpoint" in r]
    d1 = [r["digest"] for r in trace(runs[2]["trace"], 1) if "checkpoint" in r]
    assert len(d0) == KW["steps"] // KW["ckpt_every"] and d0 == d1
    state = json.loads((Path(runs[2]["art"].file("run")) / "step_0000030" / "state" / "state.json").read_text())
    assert state["world_size"] == 2 and state["weights_digest"] == d0[-1]
    assert runs[2]["art"].record["world_size"] == 2


def test_two_processes_follow_the_one_process_recipe(runs):
    """Same version; LR after k optimizer steps identical; loss within 1e-5 (float reduction order only)."""
    a, b = runs[1], runs[2]
    assert a["art"].version == b["art"].version  # the number of processes is not part of the recipe
    assert a["history"]["lr"] == b["history"]["lr"] and len(a["history"]["lr"]) == KW["steps"]
    assert a["history"]["lr"][0] < a["history"]["lr"][-1]  # warm-up: the LR moved with the optimizer steps
    assert np.allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-5, atol=0)
    wa, wb = (load_file(x["art"].file(WEIGHTS[0])) for x in (a, b))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4


def test_resume_with_another_number_of_processes_continues_and_warns(base, runs, tmp_path, caplog):
    store = copy_root(base, tmp_path / "root")

    class Stop(Exception):
        pass

    def stop_after_7(done, total):
        if done == 7:
            raise Stop

    with pytest.raises(Stop):
        train_stage(store, shards=store.resolve("shards"), nproc=2, progress=stop_after_7, **KW)
    assert store.list("train") == []
    resumed = train_stage(store, shards=store.resolve("shards"), nproc=1, **KW)
    assert resumed.record["resumed_from_step"] == 5 and resumed.record["world_size"] == 1
    assert "resuming a 2-process run with 1 processes" in caplog.text
    history = json.loads(Path(resumed.file("history.json")).read_text())
    assert history["lr"] == runs[1]["history"]["lr"]  # the schedule continued where it was
    assert np.allclose(history["loss"], runs[1]["history"]["loss"], rtol=1e-4, atol=0)


def _processes_with(tag: str) -> list[int]:
    """PIDs of live training processes (torchrun and its ranks) whose environment holds VTA_TEST_TAG=tag."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if (b"torch.distributed.run" in cmdline or b"train_launch" in cmdline) and \
                        f"VTA_TEST_TAG={tag}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _env(env: dict[str, str], tag: str) -> dict[str, str]:
    return {**env, "VTA_TEST_TAG": tag}


def _vta(args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([*VTA, *args], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _wait_gone(tag: str, timeout_s: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _processes_with(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


LONG = [*CLI_TRAIN, "--nproc", "2"]


def test_sigkill_of_the_launcher_then_resume_is_bit_exact(base, runs, tmp_path, env):
    """`vta train --nproc 2` SIGKILLed (the launcher only: no clean-up, its ranks must not live on), then run
    again: it resumes from the last step checkpoint and ends with the uninterrupted 2-process run's bytes."""
    root = tmp_path / "killed"
    copy_root(base, root)
    full = runs[2]["art"]
    tag, log = uuid.uuid4().hex, tmp_path / "train.log"
    proc = start([*VTA, *LONG, "--root", str(root)], _env(env, tag), log)
    try:
        deadline = time.monotonic() + 600
        while not any(root.glob("train/*/run/step_0000010")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, log_tail(log)
        os.kill(proc.pid, signal.SIGKILL)  # the launcher alone
        proc.wait(timeout=30)
        assert _wait_gone(tag) == [], "ranks outlived their launcher"
    finally:
        stop(proc)
    assert not any(root.glob("train/*/_COMMITTED.json"))
    resumed = _vta([*LONG, "--root", str(root)], _env(env, "resumed"))["train"]
    assert resumed["ref"] == full.ref and not resumed["reused"]
    record = json.loads((root / "train" / resumed["version"] / "_COMMITTED.json").read_text())
    assert record["resumed_from_step"] >= 10 and record["world_size"] == 2
    for name in WEIGHTS:
        assert (root / "train" / full.version / name).read_bytes() == Path(full.file(name)).read_bytes(), name


def test_a_rank_killed_mid_run_fails_the_run_and_commits_nothing(base, tmp_path, env):
    root = copy_root(base, tmp_path / "root")
    tag, log = uuid.uuid4().hex, tmp_path / "train.log"
    proc = start([*VTA, *LONG, "--steps", "400", "--root", root.root], _env(env, tag), log)
    try:
        deadline = time.monotonic() + 600
        while not list(Path(root.root).glob("train/*/run/step_0000010")) and time.monotonic() < deadline \
                and proc.poll() is None:
            time.sleep(0.05)
        rank1 = [pid for pid in _processes_with(tag)
                 if b"RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")]
        assert len(rank1) == 1, log_tail(log)
        os.kill(rank1[0], signal.SIGKILL)
        assert proc.wait(timeout=120) == 1, log_tail(log)
    finally:
        stop(proc)
    errors = [line for line in log.read_text().splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: training with 2 processes failed (exit 1)"), errors
    print(errors[0])
    assert not list(Path(root.root).glob("train/*/_COMMITTED.json")) and _wait_gone(tag) == []


def _torchrun(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def test_torchrun_of_vta_train_is_the_same_run(base, runs, tmp_path, env):
    """The multi-node entry point on one node: every process runs `vta train`, rank 0 the flow; it ends with
    the bytes of `--nproc 2`. A `--nproc` that is not the launcher's world size is an error naming both."""
    root = copy_root(base, tmp_path / "root")
    args = [*CLI_TRAIN, "--root", root.root]
    proc = _torchrun(args, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{"):])["train"]
    assert out["version"] == runs[2]["art"].version and not out["reused"]
    for name in WEIGHTS:
        assert Path(root.root, "train", out["version"], name).read_bytes() == Path(runs[2]["art"].file(name)).read_bytes()
    again = _torchrun(args, env)  # committed: rank 0 reuses it and releases the other rank
    assert again.returncode == 0 and json.loads(again.stdout[again.stdout.index("{"):])["train"]["reused"]
    bad = _torchrun([*args, "--processes", "3"], env)  # (torchrun's parser would take --nproc as its own)
    assert bad.returncode != 0
    assert "requested 3 training processes but the launcher started WORLD_SIZE=2" in bad.stdout + bad.stderr


FORM = """
import json, sys
from flows.serve import TrainParams, train_deployment
out = train_deployment(TrainParams(root=sys.argv[1], preset="tiny", steps=6, batch_size=4, seed=3, nproc=2))
print(json.dumps(out["train"]))
"""


def test_the_train_deployment_form_runs_two_processes(base, tmp_path, env):
    """The `vta serve` train form with nproc=2, run as the Prefect runner runs it: rank 0's progress
    reaches the flow-run log, and the artifact records the two processes."""
    root = copy_root(base, tmp_path / "root")
    proc = subprocess.run([sys.executable, "-c", FORM, root.root], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["reused"]
    logs = proc.stdout + proc.stderr
    assert "train: 2 processes (torchrun --standalone), global batch 4" in logs and "train: 6/6" in logs
    assert root.get("train", out["version"]).record["world_size"] == 2
