"""Two `vta ingest` processes at once into the same root, over overlapping input folders, and
both also generating and ingesting the same synthetic clips (the same versions, written at the same
time): no corruption, no duplicate versions, both finish, the shared work is done exactly once."""

from __future__ import annotations

import json
import shutil
import subprocess

from procs import VTA, log_tail, start, vta_env

from storage import ArtifactStore
from vta_core.synth_world import generate_synth


def test_two_overlapping_ingests_into_one_root(tmp_path):
    syn = tmp_path / "syn"
    generate_synth(syn, clips=10, seed=9, duration_s=2.0, size=64)
    clips = sorted((syn / "videos").iterdir())
    folders = {"a": clips[:7], "b": clips[3:]}  # clips 3-6 in both
    root, env = tmp_path / "root", vta_env(tmp_path)
    procs = {}
    for name, members in folders.items():
        d = tmp_path / name
        d.mkdir()
        for p in members:
            shutil.copyfile(p, d / p.name)
        log = tmp_path / f"{name}.log"
        out = tmp_path / f"{name}.json"
        cmd = [*VTA, "ingest", str(d), "--labels", str(syn / "labels.csv"), "--root", str(root), "--preset", "tiny",
               "--max-windows", "1", "--no-filter", "--synth-clips", "6", "--json"]
        procs[name] = (start(["sh", "-c", f'exec "$0" "$@" > {out}', *cmd], env, log), out, log)
    results = {}
    for name, (proc, out, log) in procs.items():
        try:
            assert proc.wait(timeout=900) == 0, log_tail(log)
        finally:
            if proc.poll() is None:
                proc.kill()
        results[name] = json.loads(out.read_text())["stages"]

    store = ArtifactStore(str(root))
    arts = store.list()
    for art in arts:  # every committed artifact intact
        assert store.verify(art) == [], art.ref
    assert store.gc(dry_run=True) == []  # no uncommitted leftovers: nothing half-written anywhere
    refs = [a.ref for a in arts]
    assert len(refs) == len(set(refs))
    expected = {s["ref"] for r in results.values() for s in r}
    assert set(refs) == expected  # exactly the versions the two runs report, no extra ones
    a, b = results["a"], results["b"]
    shared = [s["ref"] for s in a if s["ref"] in {t["ref"] for t in b}]
    assert [r.split("@")[0] for r in shared] == ["synth", "decode", "features", "flow", "align", "augment", "vae",
                                                 "latents", "shards"]  # synth + its whole data DAG
    for ref in shared:  # computed by exactly one process, reused by the other (the version lock)
        assert sorted(s["reused"] for s in (*a, *b) if s["ref"] == ref) == [False, True], ref
    for name, members in folders.items():
        own = [s for s in results[name] if s["stage"] == "decode" and s["ref"] not in shared]
        assert [s["counts"] for s in own] == [{"ok": len(members), "failed": 0, "filtered": 0}], name
    for stage_dir in root.iterdir():  # one directory per version, nothing else
        names = {p.name for p in stage_dir.iterdir() if p.is_dir()}
        assert names == {a.version for a in arts if a.stage == stage_dir.name}, stage_dir.name
    assert subprocess.run([*VTA, "artifacts", "list", "--root", str(root)], env=env, capture_output=True).returncode == 0
