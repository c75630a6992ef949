"""Operations on a Prefect server backed by PostgreSQL (as docker/compose.yaml runs it): many runs at
once, then the server restarted under a training run and an ingest.

    python bench/ops.py [--roots 4] [--synth-clips 3] [--out bench/results/ops.json]

Starts a throwaway PostgreSQL cluster on loopback (initdb; PostgreSQL must be installed), a Prefect
server on it and ``vta serve``, then:

- **load**: ``roots`` × 2 ingest runs (two runs per root on the same inputs, all at once) plus an
  evaluate and a forced rerun, all triggered through the REST API. Every run must end Completed,
  each stage version is computed by exactly one run per root and reused by the other, every committed
  artifact re-hashes to its commit record and nothing half-written is left. The API's latency
  (``POST /flow_runs/filter``, a UI's poll) is sampled idle and under load, in the same process.
- **restart**: a training run and an ingest in flight, the server stopped (SIGTERM) and started again
  on the same database and port. Each run either continues to Completed or, if it was marked
  crashed or failed, is triggered again and must then complete from the store (training resumes
  from its last step checkpoint). The nightly schedule must still be there, and the restarted
  ingest's artifacts must be byte-identical to a clean run's (same versions, same file checksums).
- **faults** (in this process, no server): a flipped byte in a committed decode shard, in a features
  shard and in a checkpoint; a disk that fills up (a small tmpfs: root only); a bucket that refuses
  PUTs (moto enforcing an IAM policy). Each records its one-line error, what the faulty run committed
  (must be nothing) and whether the recovery (``vta run --force``, more space, a permitted user) ends
  byte-identical to a clean run.

Writes the figures (runs completed / started, p50/p99 latency, faults and outcomes, bytes lost) to
``--out``. tests/bench/test_bench_ops.py runs both parts at a small size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the process and PostgreSQL helpers the tests use

import httpx  # noqa: E402
from pg import PrefectServer, postgres, prefect_on_postgres  # noqa: E402
from procs import VTA, log_tail, start, stop, vta_env  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DEPLOYMENTS = {"ingest": "vta-ingest/ingest", "train": "vta-train/train", "evaluate": "vta-evaluate/evaluate",
               "rerun": "vta-rerun/rerun", "nightly": "vta-nightly-evaluate/nightly"}
RUN_S = 900  # a run's limit on a busy 2-core machine


class Api:
    """The REST calls a UI or a script makes: deployments by name, runs created and read back."""

    def __init__(self, api: str) -> None:
        self.http = httpx.Client(base_url=api, timeout=60)

    def deployment(self, name: str) -> dict[str, Any]:
        resp = self.http.get(f"/deployments/name/{DEPLOYMENTS[name]}")
        resp.raise_for_status()
        return resp.json()

    def create_run(self, name: str, **params: Any) -> str:
        dep = self.deployment(name)
        full = {**dep["parameters"]["params"], **params}
        resp = self.http.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": {"params": full}})
        resp.raise_for_status()
        return resp.json()["id"]

    def state(self, run_id: str) -> str | None:
        try:
            resp = self.http.get(f"/flow_runs/{run_id}")
        except httpx.HTTPError:
            return None  # the server is down for a moment
        return resp.json()["state"]["type"] if resp.status_code == 200 else None

    def wait(self, run_ids: list[str], timeout_s: float, logs: list[Path]) -> dict[str, str]:
        """run id -> terminal state type, waiting for all of them."""
        deadline, states = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            for rid in run_ids:
                if rid not in states and (s := self.state(rid)) in TERMINAL:
                    states[rid] = s
            if len(states) == len(run_ids):
                return states
            time.sleep(2)
        raise TimeoutError(f"runs not finished after {timeout_s} s: "
                           f"{ {r: self.state(r) for r in run_ids if r not in states} }\n{log_tail(*logs)}")

    def message(self, run_id: str) -> str | None:
        """The run's state message (why a run crashed or failed)."""
        resp = self.http.get(f"/flow_runs/{run_id}")
        return resp.json()["state"].get("message") if resp.status_code == 200 else None

    def table(self, run_id: str, key: str) -> list[dict[str, Any]]:
        arts = self.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
        art = next(a for a in arts if a["key"] == key)
        return json.loads(art["data"]) if isinstance(art["data"], str) else art["data"]


@dataclass
class LatencyProbe:
    """Samples ``POST /flow_runs/filter`` (the UI's runs page) every ``every_s`` on its own thread."""

    api: str
    every_s: float = 0.25
    seconds: list[float] = field(default_factory=list)
    errors: int = 0

    @contextmanager
    def sampling(self) -> Iterator[LatencyProbe]:
        done = threading.Event()

        def loop() -> None:
            with httpx.Client(base_url=self.api, timeout=30) as http:
                while not done.is_set():
                    t0 = time.perf_counter()
                    try:
                        http.post("/flow_runs/filter", json={"limit": 20, "sort": "START_TIME_DESC"}).raise_for_status()
                        self.seconds.append(time.perf_counter() - t0)
                    except httpx.HTTPError:
                        self.errors += 1
                    done.wait(self.every_s)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join(timeout=60)

    def summary(self) -> dict[str, Any]:
        ms = sorted(s * 1000 for s in self.seconds)
        if not ms:
            return {"samples": 0, "errors": self.errors}
        return {"samples": len(ms), "errors": self.errors, "p50_ms": round(statistics.median(ms), 1),
                "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1), "max_ms": round(ms[-1], 1)}


def _store(root: Path | str):
    from storage import ArtifactStore

    return ArtifactStore(str(root))


def integrity(root: Path) -> dict[str, Any]:
    """Committed artifacts under ``root``, the damaged ones (files that do not re-hash to the commit
    record) and the uncommitted leftovers ``vta artifacts gc`` would remove."""
    store = _store(root)
    arts = store.list()
    return {"artifacts": len(arts), "damaged": [a.ref for a in arts if store.verify(a)],
            "leftovers": [str(p) for p in store.gc(dry_run=True, min_age_s=0)]}


def file_checksums(root: Path) -> dict[str, dict[str, str]]:
    """ref -> {file: sha256} for every committed artifact (what "byte-identical" compares)."""
    return {a.ref: a.record.get("files", {}) for a in _store(root).list()}


def prepare_ops_root(root: Path) -> dict[str, str]:
    """A root holding a tiny train artifact and a small synthetic test set (a committed synth artifact):
    what the evaluate and the forced rerun of the load phase work on."""
    from tiny_checkpoints import tiny_train_artifact

    from stages.synth import synth_paths, synth_stage

    store = _store(root)
    train = tiny_train_artifact(store, seed=0)
    synth = synth_stage(store, clips=2, seed=31, test_fraction=1.0)
    return {"train": train.ref, "synth": synth.ref, "synth_dir": str(Path(synth_paths(synth)["videos_dir"]).parent)}


INGEST = {"preset": "tiny", "max_windows": 1, "filter": False, "runner": "local"}


def load_phase(api: Api, work: Path, *, roots: int, synth_clips: int, logs: list[Path]) -> dict[str, Any]:
    ops_root = work / "ops-root"
    ops = prepare_ops_root(ops_root)
    probe = LatencyProbe(str(api.http.base_url))
    with probe.sampling():
        time.sleep(10)  # idle baseline: the same probe, the same server, nothing running
    idle = probe.summary()

    loaded = LatencyProbe(str(api.http.base_url))
    t0 = time.monotonic()
    with loaded.sampling():
        runs: dict[str, dict[str, Any]] = {}
        created: dict[str, dict[str, Any]] = {}  # run id -> the parameters it was created with
        todo = [("ingest", {"root": str(work / f"root{i}"), "synth_clips": synth_clips, **INGEST},
                 {"kind": "ingest", "root": i, "copy": j}) for i in range(roots) for j in range(2)]
        todo += [("evaluate", {"root": str(ops_root), "train": ops["train"], "synth_dir": ops["synth_dir"], "steps": 2,
                               "max_clips": 1}, {"kind": "evaluate"}),
                 ("rerun", {"root": str(ops_root), "stage": ops["synth"], "force": True, "runner": "local"},
                  {"kind": "rerun"})]
        for kind, params, info in todo:
            rid = api.create_run(kind, **params)
            runs[rid], created[rid] = info, params
        states = api.wait(list(runs), RUN_S, logs)
    wall = time.monotonic() - t0

    names = {rid: run["kind"] + (f"-root{run['root']}-{run['copy']}" if run["kind"] == "ingest" else "")
             for rid, run in runs.items()}
    # a run that did not complete: why (its state message and the worker's log; the folder is temporary), then
    # the same run triggered once more, alone, which must complete from the store
    not_completed = {names[rid]: {"state": s, "message": api.message(rid)} for rid, s in states.items() if s != "COMPLETED"}
    finished = {rid: rid for rid, s in states.items() if s == "COMPLETED"}  # run -> the run whose table stands for it
    crashed_roots: set[int] = set()
    if not_completed:
        log_text = log_tail(logs[1], chars=6000)
        for rid, s in states.items():
            if s != "COMPLETED":
                again = api.create_run(runs[rid]["kind"], **created[rid])
                not_completed[names[rid]]["rerun_state"] = api.wait([again], RUN_S, logs)[again]
                if runs[rid]["kind"] == "ingest":
                    crashed_roots.add(runs[rid]["root"])
                    if not_completed[names[rid]]["rerun_state"] == "COMPLETED":
                        finished[rid] = again
        not_completed["serve_log_tail"] = log_text

    per_root: dict[int, list[list[dict[str, Any]]]] = {}
    for rid, run in runs.items():
        run["state"] = states[rid]
        if run["kind"] == "ingest" and rid in finished:
            per_root.setdefault(run["root"], []).append(api.table(finished[rid], "ingest-stages"))
    computed_once, same_versions = True, True
    for root, tables in per_root.items():
        refs = [sorted(r["ref"] for r in t) for t in tables]
        same_versions &= len(refs) == 2 and refs[0] == refs[1]
        for ref in {r["ref"] for t in tables for r in t}:  # computed by one run, reused by the other
            results = sorted(r["result"] for t in tables for r in t if r["ref"] == ref)
            if root in crashed_roots:
                # the crashed run's own table is gone: what it committed before it died shows as reused in both
                # the other run and its rerun; the invariant left is that no version was computed twice
                computed_once &= results.count("computed") <= 1 and len(results) == 2
            else:
                computed_once &= results == ["computed", "reused"]
    checks = {f"root{i}": integrity(work / f"root{i}") for i in range(roots)} | {"ops-root": integrity(ops_root)}
    return {
        "runs_started": len(runs), "runs_completed": sum(s == "COMPLETED" for s in states.values()),
        "states": {names[rid]: run["state"] for rid, run in runs.items()},
        **({"not_completed": not_completed} if not_completed else {}),
        "wall_s": round(wall, 1), "each_version_computed_once": computed_once,
        "both_runs_of_a_root_same_versions": same_versions, "integrity": checks,
        "api_latency_idle": idle, "api_latency_under_load": loaded.summary(),
    }


def _wait_for(what: str, check, timeout_s: float, logs: list[Path], *, api: Api | None = None,
              runs: tuple[str, ...] = ()) -> Any:
    """``check()``'s first truthy value; fails at once if one of ``runs`` ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        ended = {r: s for r in runs if (s := api.state(r)) in TERMINAL} if api is not None else {}
        if ended:
            raise RuntimeError(f"run(s) ended while waiting for {what}: {ended}\n{log_tail(*logs)}")
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}\n{log_tail(*logs)}")


def restart_phase(api: Api, server: PrefectServer, work: Path, *, train_root: Path, synth_clips: int,
                  train_steps: int, logs: list[Path]) -> dict[str, Any]:
    """The server stopped and started under a training run (on ``train_root``'s shards) and an ingest
    into a fresh root; ``work/root0``'s ingest (the same inputs) is the clean run compared against."""
    from vta_core.train import latest_checkpoint

    fresh = work / "restart-root"
    params = {"ingest": {"root": str(fresh), "synth_clips": synth_clips, **INGEST},
              "train": {"root": str(train_root), "preset": "tiny", "steps": train_steps, "batch_size": 1, "seed": 3}}
    first = {kind: api.create_run(kind, **p) for kind, p in params.items()}
    # in flight: training has written a step checkpoint (so a resume has something to resume from) and
    # the ingest has committed at least one stage but not all
    _wait_for("a step checkpoint of the training run",
              lambda: any(latest_checkpoint(d) for d in (train_root / "train").glob("*/run")), RUN_S, logs,
              api=api, runs=tuple(first.values()))
    _wait_for("the ingest to commit a stage", lambda: any(fresh.glob("*/*/_COMMITTED.json")), RUN_S, logs,
              api=api, runs=tuple(first.values()))
    before = {kind: api.state(rid) for kind, rid in first.items()}

    t0 = time.monotonic()
    server.stop()
    down_s = time.monotonic() - t0
    time.sleep(5)  # the runs go on without a server for a while
    start_s = server.start()

    states = api.wait(list(first.values()), RUN_S, logs)
    outcome: dict[str, Any] = {}
    for kind, rid in first.items():
        entry: dict[str, Any] = {"state_at_fault": before[kind], "state_after": states[rid]}
        if states[rid] != "COMPLETED":  # crashed or failed with the server gone: rerun from the store
            again = api.create_run(kind, **params[kind])
            entry["rerun_state"] = api.wait([again], RUN_S, logs)[again]
            rid = again
        entry["outcome"] = ("continued" if states[first[kind]] == "COMPLETED" else
                            "rerun completed" if entry.get("rerun_state") == "COMPLETED" else "lost")
        if kind == "train" and entry["outcome"] != "lost":
            row = api.table(rid, "train-result")[0]
            entry["train_ref"] = row["ref"]
        outcome[kind] = entry

    train_art = _store(train_root).latest("train")
    resumed = train_art.record.get("resumed_from_step") if train_art is not None else None
    nightly = api.deployment("nightly")
    # root0 also holds the train artifact: compare the ingest's stages (every ref of the restarted root)
    clean, restarted = file_checksums(work / "root0"), file_checksums(fresh)
    return {
        "faults": ["prefect server SIGTERM + restart under a training run and an ingest"],
        "server_stop_s": round(down_s, 1), "server_restart_s": round(start_s, 1), "runs": outcome,
        "train_resumed_from_step": resumed,
        "nightly_schedule_after_restart": [s["schedule"].get("cron") for s in nightly["schedules"]],
        "restarted_ingest_identical_to_clean": bool(restarted) and all(clean.get(r) == f for r, f in restarted.items()),
        "integrity": {"restart-root": integrity(fresh), "train-root": integrity(train_root)},
    }


FAULT_DECODE = {"fps": 10.0, "size": 48, "sample_rate": 16000, "duration_s": 3.0, "shard_size": 1}


def _error(fn) -> str:  # noqa: ANN001 - a call that must fail
    """The one-line error of ``fn()`` (AssertionError when it does not fail)."""
    try:
        fn()
    except (OSError, ValueError) as e:
        return str(e)
    raise AssertionError("the fault did not fail the call")


def faults_phase(work: Path, videos: Path) -> list[dict[str, Any]]:
    """Damage and full-disk faults, in this process, each against a clean run of the same call: the error
    (one line), what was committed from the faulty run, and whether recovery ends byte-identical."""
    from faults import Unavailable, flip, fresh_s3_clients, grow, small_disk
    from s3server import moto_s3_with_policies
    from tiny_checkpoints import tiny_train_artifact

    from flows.rerun import rerun
    from stages.decode import DecodeParams, decode_stage
    from stages.features import features_stage
    from storage.shardmap import iter_samples
    from vta_core.checkpoint import load_checkpoint

    params = DecodeParams(**FAULT_DECODE)
    clean_store = _store(work / "faults-clean")
    clean_dec = decode_stage(clean_store, videos_dir=videos, params=params)
    clean_feat = features_stage(clean_store, source=clean_dec, vision="pixels:4")
    out: list[dict[str, Any]] = []

    def entry(fault: str, error: str, committed: int, recovery: str, identical: bool | None) -> None:
        out.append({"fault": fault, "error": error, "one_line": "\n" not in error, "committed_from_fault": committed,
                    "recovery": recovery, "identical_to_clean": identical})

    store = _store(work / "faults-damage")
    dec = decode_stage(store, videos_dir=videos, params=params)
    flip(Path(dec.file("shard-00000.tar")))
    err = _error(lambda: features_stage(store, source=dec, vision="pixels:4"))
    committed = len(store.list("features"))
    fixed = rerun(dec.ref, root=store.root, force=True, log=lambda _m: None)
    feat = features_stage(store, source=dec, vision="pixels:4")
    entry("flipped byte in a committed decode shard, read by features", err, committed,
          f"vta run {dec.ref} --force rewrote {fixed['repaired_files']}",
          store.verify(dec) == [] and feat.record["files"] == clean_feat.record["files"])
    flip(Path(feat.file("shard-00000.tar")), at=-100)
    err = _error(lambda: list(iter_samples(feat)))
    fixed = rerun(feat.ref, root=store.root, force=True, log=lambda _m: None)
    entry("flipped byte in a committed features shard, read by the next stage", err, 0,
          f"vta run {feat.ref} --force rewrote {fixed['repaired_files']}", store.verify(feat) == [])
    train = tiny_train_artifact(store, seed=0)
    weights = sorted(Path(train.file("checkpoint")).glob("*.safetensors"))[0]
    flip(weights, at=-10)
    entry("flipped byte in a checkpoint, loaded for generation", _error(lambda: load_checkpoint(weights.parent)), 0,
          "none by vta run (train is not a rerunnable stage): restore the file or retrain", None)

    try:
        size = Path(clean_dec.file("shard-00000.tar")).stat().st_size
        with small_disk(work / "faults-disk", int(size * 1.6)) as disk:
            full = _store(disk / "root")
            err = _error(lambda: decode_stage(full, videos_dir=videos, params=params))
            committed = len(full.list())
            grow(disk, 64 << 20)
            again = decode_stage(full, videos_dir=videos, params=params)
            entry("disk full (a 1.6-shard tmpfs) during decode", err, committed,
                  "the same call after the disk was grown", again.record["files"] == clean_dec.record["files"])
    except Unavailable as e:
        out.append({"fault": "disk full", "skipped": str(e)})

    import os

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL")}
    try:
        with moto_s3_with_policies() as (s3, writer, no_put):
            os.environ.update({**no_put.env, "AWS_ENDPOINT_URL": s3.endpoint})
            fresh_s3_clients()
            bucket = _store(s3.url("root"))
            err = _error(lambda: decode_stage(bucket, videos_dir=videos, params=params))
            committed = len(bucket.list())
            os.environ.update(writer.env)
            fresh_s3_clients()
            again = decode_stage(_store(s3.url("root")), videos_dir=videos, params=params)
            entry("bucket denies s3:PutObject during decode", err, committed, "the same call with a permitted user",
                  again.record["files"] == clean_dec.record["files"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fresh_s3_clients()
    return out


def bytes_lost(result: dict[str, Any]) -> int:
    """Files of committed artifacts that do not re-hash (damaged or missing), over every checked root,
    plus every run that neither completed nor completed when rerun and every fault whose recovery did not
    end byte-identical (counted as 1 each)."""
    checks = [*result["load"]["integrity"].values(), *result["restart"]["integrity"].values()]
    lost_runs = sum(r["outcome"] == "lost" for r in result["restart"]["runs"].values())
    lost_runs += sum(f.get("identical_to_clean") is False for f in result["faults"])
    lost_runs += sum(r.get("rerun_state") != "COMPLETED" for name, r in result["load"].get("not_completed", {}).items()
                     if name != "serve_log_tail")
    return sum(len(c["damaged"]) for c in checks) + lost_runs


def run_ops(work: Path, *, roots: int = 4, synth_clips: int = 3, train_steps: int = 400) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = vta_env(work, PREFECT_RUNNER_POLL_FREQUENCY="2", VTA_ROOT=str(work / "default-root"), OMP_NUM_THREADS="1")
    logs = [work / "server.log", work / "serve.log"]
    t0 = time.monotonic()
    with ExitStack() as stack:
        pg = stack.enter_context(postgres())
        server = stack.enter_context(prefect_on_postgres(pg, env, logs[0]))
        env = {**env, "PREFECT_API_URL": server.api}
        serve = start([*VTA, "serve", "--root", str(work / "default-root")], env, logs[1])
        stack.callback(stop, serve)
        api = Api(server.api)
        stack.callback(api.http.close)
        _wait_for("the deployments", lambda: _deployed(api), 240, logs)
        load = load_phase(api, work, roots=roots, synth_clips=synth_clips, logs=logs)
        restart = restart_phase(api, server, work, train_root=work / "root0", synth_clips=synth_clips,
                                train_steps=train_steps, logs=logs)
        serve_alive = serve.poll() is None
    from stages.synth import synth_paths

    videos = Path(synth_paths(_store(work / "ops-root").latest("synth"))["videos_dir"])
    faults = faults_phase(work, videos)
    result = {"bench": "ops", "database": "postgresql (initdb on loopback)", "roots": roots,
              "synth_clips": synth_clips, "load": load, "restart": restart, "serve_alive_after_restart": serve_alive,
              "faults": faults, "wall_s": round(time.monotonic() - t0, 1)}
    result["bytes_lost"] = bytes_lost(result)
    return result


def _deployed(api: Api) -> bool:
    try:
        for name in DEPLOYMENTS:
            api.deployment(name)
    except httpx.HTTPError:
        return False
    return True


def main() -> None:
    import signal
    import tempfile

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its servers
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roots", type=int, default=4)
    ap.add_argument("--synth-clips", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ops.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vta-ops-") as tmp:
        result = run_ops(Path(tmp), roots=args.roots, synth_clips=args.synth_clips, train_steps=args.train_steps)
    result["command"] = " ".join(["python", "bench/ops.py", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("bytes_lost", "wall_s")} | {
        "completed/started": f"{result['load']['runs_completed']}/{result['load']['runs_started']}",
        "latency idle": result["load"]["api_latency_idle"], "latency load": result["load"]["api_latency_under_load"],
        "restart": {k: v["outcome"] for k, v in result["restart"]["runs"].items()}}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
