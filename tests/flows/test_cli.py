"""The `vta` CLI end to end, as a user runs it: real subprocesses, Prefect's ephemeral API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mediafiles import real_clips

VTA = [sys.executable, "-m", "flows.cli"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(Path(__file__).parents[2])}


def vta(args, env, check=True):
    proc = subprocess.run([*VTA, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"vta {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def test_help_lists_commands(env):
    out = vta(["--help"], env).stdout
    for cmd in ("demo", "ingest", "synth", "artifacts"):
        assert cmd in out


def test_usage_errors_exit_2_and_missing_input_is_one_line(env, tmp_path):
    assert vta(["ingest"], env, check=False).returncode == 2
    proc = vta(["artifacts", "show", "decode", "--root", str(tmp_path)], env, check=False)
    assert proc.returncode == 1 and "no committed artifact" in proc.stderr.strip().splitlines()[-1]


def test_ingest_real_and_synthetic_then_rerun_reuses(env, tmp_path):
    videos = tmp_path / "videos"
    reals = real_clips(videos)
    vta(["synth", str(tmp_path / "syn"), "--clips", "8", "--seed", "3"], env)
    for p in (tmp_path / "syn" / "videos").iterdir():
        shutil.copy(p, videos / p.name)
    labels = tmp_path / "labels.csv"
    labels.write_text((tmp_path / "syn" / "labels.csv").read_text()
                      + "debian_imageio_cockatoo_silent,0,bird chirping,train\n")
    root = tmp_path / "root"

    first = vta(["ingest", str(videos), "--labels", str(labels), "--root", str(root), "--json"], env)
    result = json.loads(first.stdout)
    (dec,) = result["stages"]
    assert dec["stage"] == "decode" and not dec["reused"]
    manifest = pq.read_table(Path(dec["path"]) / "manifest.parquet").to_pylist()
    assert len(manifest) == len(reals) + 8 == dec["counts"]["ok"]
    rows = {r["clip_id"]: r for r in manifest}
    cock = rows["debian_imageio_cockatoo_silent"]
    assert cock["status"] == "ok" and cock["silent"] is True and cock["label"] == "bird chirping"
    assert sum(r["label"] is not None for r in manifest) == 9
    for r in manifest:
        assert abs(r["frames_decoded"] - r["frames_expected"]) <= 1, r["clip_id"]

    mtimes = {p: p.stat().st_mtime_ns for p in Path(dec["path"]).rglob("*")}
    second = vta(["ingest", str(videos), "--labels", str(labels), "--root", str(root)], env)
    assert "reused the committed artifacts: decode@" + dec["version"] in second.stderr
    assert {p: p.stat().st_mtime_ns for p in Path(dec["path"]).rglob("*")} == mtimes

    listed = json.loads(vta(["artifacts", "list", "--json", "--root", str(root)], env).stdout)
    assert [(a["stage"], a["version"], a["committed"]) for a in listed] == [("decode", dec["version"], True)]
    assert listed[0]["counts"] == {"ok": len(reals) + 8, "failed": 0, "filtered": 0}
    shown = json.loads(vta(["artifacts", "show", f"decode@{dec['version']}", "--verify", "--json", "--root",
                            str(root)], env).stdout)
    assert shown["corrupt_files"] == [] and shown["params"]["fps"] == 10.0


def test_strict_exits_3_when_an_input_failed(env, tmp_path):
    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(Path(__file__).parents[1] / "data" / "debian_imageio_realshort.mp4", videos)
    (videos / "broken.mp4").write_bytes(b"not a video")
    root = str(tmp_path / "root")
    assert vta(["ingest", str(videos), "--root", root, "--json"], env).returncode == 0
    assert vta(["ingest", str(videos), "--root", root, "--strict"], env, check=False).returncode == 3


def test_demo_quick(env, tmp_path):
    out = json.loads(vta(["demo", "--quick", "--root", str(tmp_path), "--json"], env).stdout)
    stages = {s["stage"]: s for s in out["stages"]}
    assert stages["synth"]["counts"]["ok"] == 8 and stages["decode"]["counts"]["ok"] == 8
