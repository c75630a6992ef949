"""The Dask runner (flows/engine.py): same bytes as in process, a killed worker loses nothing.

Each test is a real `vta` / python process with its own Prefect home and no PREFECT_API_URL: the
process starts one Prefect server on loopback for the run and a 2-worker LocalCluster, and stops both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from procs import REPO, run_vta, vta_env

from storage import ArtifactStore
from vta_core.synth_world import generate_synth

sys.path.insert(0, str(REPO / "bench"))
from artifact_identity import root_hashes  # noqa: E402

pytestmark = pytest.mark.slow


def test_tiny_ingest_on_dask_is_byte_identical_to_local(tmp_path):
    syn = tmp_path / "syn"
    generate_synth(syn, clips=8, seed=3, duration_s=2.0, size=64)
    videos = tmp_path / "videos"
    shutil.copytree(syn / "videos", videos)
    (videos / "broken.mp4").write_bytes(b"\x00not a video" * 100)  # one bad clip: a failed row, not a failed task
    env = {k: v for k, v in vta_env(tmp_path, OMP_NUM_THREADS="1").items() if k != "PREFECT_API_URL"}
    root = tmp_path / "root"
    args = ["ingest", str(videos), "--labels", str(syn / "labels.csv"), "--split-default", "train", "--preset", "tiny",
            "--no-filter", "--root", str(root), "--json"]
    local = json.loads(run_vta(args, env).stdout)
    local_hashes = root_hashes(root)
    shutil.rmtree(root)  # the same path: decode records absolute source paths, not the root
    proc = run_vta([*args, "--runner", "dask", "--dask-workers", "2"], env)
    dask = json.loads(proc.stdout)
    assert [s["ref"] for s in dask["stages"]] == [s["ref"] for s in local["stages"]]  # versions: the runner is no param
    assert root_hashes(root) == local_hashes  # every file but the commit records (creation times)
    decode = next(s for s in dask["stages"] if s["stage"] == "decode")
    assert decode["counts"] == {"ok": 8, "failed": 1, "filtered": 0}
    assert "decode-shard-00000" in proc.stderr  # the shards ran as Prefect task runs
    assert "started a Prefect server for this run" in proc.stderr and "stopped the Prefect server" in proc.stderr
    assert proc.stderr.count("Starting temporary server") == 1  # one server for the run, none per worker
    store = ArtifactStore(str(root))
    assert all(store.verify(a) == [] for a in store.list()) and store.gc(dry_run=True) == []


def test_a_worker_killed_mid_shard_loses_nothing(tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()
    env = {k: v for k, v in vta_env(tmp_path, OMP_NUM_THREADS="1").items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("dask_kill_flow.py")), str(tmp_path / "root"),
                           str(flags)], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = json.loads(proc.stdout.strip().splitlines()[-1])["ref"]
    killed_pid = (flags / "killed").read_text()
    computed = [line.split() for line in (flags / "computed.log").read_text().splitlines()]
    runs = Counter(shard for shard, _ in computed)
    assert runs["s-00003"] == 2 and all(runs[f"s-{i:05d}"] == 1 for i in range(8) if i != 3)  # only it reran
    assert [pid for shard, pid in computed if shard == "s-00003"][0] == killed_pid
    assert [pid for shard, pid in computed if shard == "s-00003"][1] != killed_pid  # on a new worker process
    store = ArtifactStore(str(tmp_path / "root"))
    art = store.resolve(ref)
    rows = art.read_table().to_pylist()
    assert sorted(r["clip_id"] for r in rows) == [f"s-{i:05d}" for i in range(8)]  # each shard exactly once
    assert store.verify(art) == [] and len(art.record["files"]) == 9  # 8 payloads + manifest
