"""`--root s3://bucket/prefix` end to end against a real S3 endpoint (moto on loopback, started here):
`vta ingest` (synthetic clips + a real clip) -> `vta train` -> `vta evaluate` -> `vta generate`; two
concurrent `vta ingest` runs into one S3 root; train resuming from a step checkpoint in the bucket."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mediafiles import DATA
from procs import VTA, log_tail, run_vta, start, vta_env
from s3server import CREDENTIALS, moto_s3

from storage import ArtifactStore
from storage.store import COMMIT_FILE, WRITERS_DIR

TINY = ["--preset", "tiny", "--max-windows", "1", "--no-filter", "--vae-steps", "2", "--synth-clips", "4"]


@pytest.fixture(scope="module")
def s3():
    """One moto server for this module; its endpoint and credentials in this process's environment (the
    in-process checks), while the `vta` subprocesses get the endpoint only through --s3-endpoint."""
    with moto_s3() as server, pytest.MonkeyPatch.context() as mp:
        for k, v in {**CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield server


@pytest.fixture(scope="module")
def s3_env(s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vta-s3")
    env = vta_env(tmp, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", VTA_CACHE=str(tmp / "cache"), **s3.env)
    env.pop("AWS_ENDPOINT_URL", None)  # only --s3-endpoint names the endpoint
    env.pop("VTA_ROOT", None)
    return env


def _videos(tmp: Path) -> Path:
    """A folder with one real (unlabelled) clip, ingested beside the synthetic clips."""
    d = tmp / "videos"
    d.mkdir(exist_ok=True)
    shutil.copyfile(DATA / "debian_imageio_realshort.mp4", d / "real.mp4")
    return d


def _s3_args(s3, prefix: str) -> list[str]:
    return ["--root", s3.url(prefix), "--s3-endpoint", s3.endpoint]


@pytest.fixture(scope="module")
def ingested(s3, s3_env, tmp_path_factory):
    """`vta ingest` into s3://BUCKET/e2e: the stages it reports."""
    tmp = tmp_path_factory.mktemp("ingest")
    out = run_vta(["ingest", str(_videos(tmp)), *_s3_args(s3, "e2e"), *TINY, "--json"], s3_env)
    return json.loads(out.stdout)


def _committed_and_intact(s3, prefix: str, refs: list[str]) -> ArtifactStore:
    store = ArtifactStore(s3.url(prefix))
    keys = s3.keys(f"{prefix}/")
    for ref in refs:
        stage, version = ref.split("@")
        art = store.get(stage, version)
        assert art is not None, ref
        assert f"{prefix}/{stage}/{version}/{COMMIT_FILE}" in keys and store.verify(art) == [], ref
    assert not [k for k in keys if f"/{WRITERS_DIR}/" in k]  # no writer left a heartbeat behind
    return store


def test_ingest_train_evaluate_generate_on_s3(s3, s3_env, ingested, tmp_path):
    stages = ingested["stages"]
    assert ingested["root"] == s3.url("e2e")
    assert [s["stage"] for s in stages[:9]] == ["synth", "decode", "features", "flow", "align", "augment", "vae",
                                                "latents", "shards"]
    assert all(s["path"].startswith(s3.url("e2e") + "/") for s in stages)
    _committed_and_intact(s3, "e2e", [s["ref"] for s in stages])
    shards = stages[8]["ref"]  # the synthetic clips' shards (their held-out split evaluates the checkpoint)

    t = json.loads(run_vta(["train", *_s3_args(s3, "e2e"), "--shards", shards, "--preset", "tiny", "--steps", "4",
                            "--batch-size", "2", "--ckpt-every", "2", "--json"], s3_env).stdout)["train"]
    assert not t["reused"] and t["checkpoint"] == f"{s3.url('e2e')}/train/{t['version']}/checkpoint"
    keys = s3.keys(f"e2e/train/{t['version']}/")
    for rel in ("_shards/step_0000002.json", "run/step_0000002/state/state.json", "checkpoint/model.safetensors",
                "checkpoint/vae/config.json", "history.json"):
        assert f"e2e/train/{t['version']}/{rel}" in keys, rel

    report = json.loads(run_vta(["evaluate", "--checkpoint", t["ref"], *_s3_args(s3, "e2e"), "--steps", "2",
                                 "--max-clips", "1", "--out", str(tmp_path / "report"), "--json"], s3_env).stdout)
    assert report["config"]["evaluation_ref"].startswith("evaluation@") and (tmp_path / "report" / "report.html").is_file()
    evaluation = report["config"]["evaluation_ref"]

    clip = DATA / "debian_imageio_realshort.mp4"
    run_vta(["generate", str(clip), "--checkpoint", t["ref"], *_s3_args(s3, "e2e"), "--out", str(tmp_path / "gen"),
             "--steps", "2"], s3_env)
    assert (tmp_path / "gen" / f"{clip.stem}.wav").stat().st_size > 0 and (tmp_path / "gen" / f"{clip.stem}.mp4").is_file()

    store = _committed_and_intact(s3, "e2e", [s["ref"] for s in stages] + [t["ref"], evaluation])
    ev = store.resolve(evaluation)
    assert ev.record["checkpoint"] == t["ref"] and ev.record["checkpoint_path"] == t["checkpoint"]
    assert "report.json" in ev.record["files"] and "per_clip.parquet" in ev.record["files"]
    listed = json.loads(run_vta(["artifacts", "list", *_s3_args(s3, "e2e"), "--json"], s3_env).stdout)
    assert {f"{r['stage']}@{r['version']}" for r in listed} >= {t["ref"], evaluation, shards}
    shown = json.loads(run_vta(["artifacts", "show", t["ref"], *_s3_args(s3, "e2e"), "--verify", "--json"],
                               s3_env).stdout)
    assert shown["corrupt_files"] == [] and shown["path"] == f"{s3.url('e2e')}/train/{t['version']}"
    gc = run_vta(["artifacts", "gc", *_s3_args(s3, "e2e"), "--dry-run", "--min-age", "0"], s3_env)
    assert "0 uncommitted item(s) found" in gc.stderr


def test_train_resumes_from_a_step_checkpoint_in_the_bucket(s3, ingested, tmp_path, monkeypatch):
    """Two training processes (the uploads follow rank 0's step reports), stopped after step 3 (step_0000002
    uploaded and marked), rerun on a fresh cache (another machine): it fetches the step checkpoint from the
    bucket, resumes and ends with the uninterrupted run's weights."""
    import torch
    from safetensors.torch import load

    from stages.train import train_stage
    from vta_core.presets import get_preset

    torch.set_num_threads(1)
    store = ArtifactStore(s3.url("e2e"))
    shards = store.resolve(ingested["stages"][8]["ref"])
    kw = dict(shards=shards, preset=get_preset("tiny"), steps=4, batch_size=2, ckpt_every=2, seed=7, nproc=2)
    monkeypatch.setenv("VTA_CACHE", str(tmp_path / "cache-a"))
    full = train_stage(store, **kw)
    weights = {n: load(full.open(f"checkpoint/{n}").read()) for n in ("model.safetensors", "ema.safetensors")}
    history = json.loads(full.open("history.json").read())
    store.fs.rm(store._dir("train", full.version), recursive=True)  # forget it: the same version is trained again

    class Stop(Exception):
        pass

    def stop_at_step_3(done, total):
        if done == 3:  # after step 3: step_0000002 was uploaded and marked
            raise Stop

    with pytest.raises(Stop):
        train_stage(store, progress=stop_at_step_3, **kw)
    assert store.get("train", full.version) is None
    keys = s3.keys(f"e2e/train/{full.version}/")
    assert f"e2e/train/{full.version}/_shards/step_0000002.json" in keys
    assert not [k for k in keys if "step_0000004" in k]

    monkeypatch.setenv("VTA_CACHE", str(tmp_path / "cache-b"))  # nothing local survives
    resumed = train_stage(store, **kw)
    assert resumed.version == full.version and not resumed.reused and resumed.record["resumed_from_step"] == 2
    for name, ref in weights.items():
        got = load(resumed.open(f"checkpoint/{name}").read())
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref), name
    assert json.loads(resumed.open("history.json").read()) == history
    assert store.verify(resumed) == [] and {f"run/step_000000{i}/model.safetensors" for i in (2, 4)} <= set(
        resumed.record["files"])


def test_two_concurrent_ingests_into_one_s3_root(s3, s3_env, tmp_path):
    videos = _videos(tmp_path)
    procs = {}
    for name in "ab":
        log, out = tmp_path / f"{name}.log", tmp_path / f"{name}.json"
        cmd = [*VTA, "ingest", str(videos), *_s3_args(s3, "both"), *TINY, "--json"]
        procs[name] = (start(["sh", "-c", f'exec "$0" "$@" > {out}', *cmd], s3_env, log), out, log)
    results, logs = {}, {}
    for name, (proc, out, log) in procs.items():
        try:
            assert proc.wait(timeout=600) == 0, log_tail(log)
        finally:
            if proc.poll() is None:
                proc.kill()
        results[name], logs[name] = json.loads(out.read_text())["stages"], log.read_text()
    a, b = results["a"], results["b"]
    assert [s["ref"] for s in a] == [s["ref"] for s in b]  # the same versions
    refs = [s["ref"] for s in a]
    store = _committed_and_intact(s3, "both", refs)
    assert sorted(a.ref for a in store.list()) == sorted(set(refs))  # no extra versions
    for ref in set(refs):  # committed by exactly one process; the other reused it
        commits = sum(len(re.findall(rf"{re.escape(ref)}: committed \(", text)) for text in logs.values())
        assert commits == 1, (ref, commits)
        assert sorted(s["reused"] for s in (*a, *b) if s["ref"] == ref) == [False, True], ref
    assert store.gc(dry_run=True, min_age_s=0) == []  # no uncommitted leftovers
    assert subprocess.run([*VTA, "artifacts", "list", *_s3_args(s3, "both")], env=s3_env,
                          capture_output=True).returncode == 0
