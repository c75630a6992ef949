"""SIGKILL (no clean-up of any kind) during ingest and training, then the same command again:
ingest resumes from its committed shards and ends byte-identical to an uninterrupted run;
training resumes from its last step checkpoint and ends with the same step and weights. Between
kills no reader sees a half-written artifact."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from procs import VTA, kill_when, log_tail, start, vta_env

from storage import ArtifactStore
from vta_core.synth_world import generate_synth

INGEST = ["ingest", "--preset", "tiny", "--max-windows", "1", "--no-filter", "--json"]
TRAIN = ["train", "--preset", "tiny", "--steps", "8", "--batch-size", "2", "--ckpt-every", "2", "--json"]


def vta(args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([*VTA, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def committed(root: Path) -> dict[str, dict]:
    """ref -> commit record of every committed artifact; each one's files re-hashed intact."""
    store = ArtifactStore(str(root))
    arts = store.list()
    for art in arts:
        assert store.verify(art) == [], f"{art.ref} is committed but its files do not match the record"
    return {a.ref: a.record for a in arts}


def exists(root: Path, pattern: str):
    return lambda: any(root.glob(pattern))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    generate_synth(d, clips=10, seed=5, duration_s=2.0, size=64, test_fraction=0.2)
    return d


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    """An uninterrupted ingest + training."""
    tmp = tmp_path_factory.mktemp("reference")
    env, root = vta_env(tmp), tmp / "root"
    ingest = vta([*INGEST, str(synth / "videos"), "--labels", str(synth / "labels.csv"), "--root", str(root)], env)
    train = vta([*TRAIN, "--root", str(root)], env)
    return root, ingest, train


def test_ingest_killed_at_three_points_resumes_byte_identical(synth, reference, tmp_path):
    ref_root, ref_ingest, _ = reference
    env, root, log = vta_env(tmp_path), tmp_path / "root", tmp_path / "ingest.log"
    cmd = [*VTA, *INGEST, str(synth / "videos"), "--labels", str(synth / "labels.csv"), "--root", str(root)]
    points = {  # where the kill lands: mid-decode (one of 3 shards done), between stages, mid-VAE training
        "decode shard": "decode/*/_shards/shard-00000.json",
        "between stages": "flow/*/_COMMITTED.json",
        "vae training": "vae/*/",
    }
    for point, pattern in points.items():
        proc = start(cmd, env, log)
        assert kill_when(proc, exists(root, pattern), timeout_s=600), f"{point}: ran to the end first\n{log_tail(log)}"
        assert proc.returncode == -9
        seen = committed(root)  # readers see only whole, intact artifacts
        assert not any(r.startswith("shards@") for r in seen), point
    dec = next(root.glob("decode/*/"))
    assert len(list(dec.glob("_shards/*.json"))) >= 1

    resumed = vta([*INGEST, str(synth / "videos"), "--labels", str(synth / "labels.csv"), "--root", str(root)], env)
    assert [s["ref"] for s in resumed["stages"]] == [s["ref"] for s in ref_ingest["stages"]]
    assert resumed["stages"][0]["reused"]  # decode was committed by an earlier (killed) run
    ours, theirs = committed(root), committed(ref_root)
    for s in ref_ingest["stages"]:
        assert ours[s["ref"]]["files"] == theirs[s["ref"]]["files"], f"{s['ref']} differs from the uninterrupted run"
        assert ours[s["ref"]]["counts"] == theirs[s["ref"]]["counts"]


def test_training_killed_mid_run_resumes_to_the_same_weights(reference, tmp_path):
    ref_root, _, ref_train = reference
    root = tmp_path / "root"
    shutil.copytree(ref_root, root, ignore=shutil.ignore_patterns("train"))  # the same committed shards
    env, log = vta_env(tmp_path), tmp_path / "train.log"
    proc = start([*VTA, *TRAIN, "--root", str(root)], env, log)
    assert kill_when(proc, exists(root, "train/*/run/step_0000004"), timeout_s=600), log_tail(log)
    assert proc.returncode == -9 and not any(root.glob("train/*/_COMMITTED.json"))

    resumed = vta([*TRAIN, "--root", str(root)], env)["train"]
    full = ref_train["train"]
    assert resumed["ref"] == full["ref"] and not resumed["reused"]
    ours, theirs = committed(root)[resumed["ref"]], committed(ref_root)[full["ref"]]
    assert ours["resumed_from_step"] in (4, 6) and theirs["resumed_from_step"] is None
    ours_dir, theirs_dir = root / "train" / full["version"], ref_root / "train" / full["version"]
    steps = [len(json.loads((d / "history.json").read_text())["loss"]) for d in (ours_dir, theirs_dir)]
    assert steps == [8, 8]
    for name in ("checkpoint/model.safetensors", "checkpoint/ema.safetensors"):
        assert (ours_dir / name).read_bytes() == (theirs_dir / name).read_bytes(), name
