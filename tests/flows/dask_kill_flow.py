"""Run as a script by test_dask_runner.py: a toy sharded stage on a 2-worker Dask LocalCluster through
Prefect, where the task of shard s-00003 SIGKILLs its worker process once, after writing its payload
and before its marker. Prints the committed artifact's ref as JSON.

    python tests/flows/dask_kill_flow.py ROOT FLAG_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from prefect import flow

from flows.engine import Runner, prefect_api, with_runner
from storage import ArtifactStore, StageSpec, ok_row
from storage.sharded import ShardJob, ShardTask, run_sharded

SPEC = StageSpec("toy", {"n": 8}, {}, "1")
KILL = "s-00003"


class KillOnce(ShardTask):
    """Pickled by value (this module is __main__), so the workers need not import it."""

    def __init__(self, flag_dir: str) -> None:
        self.flag_dir = Path(flag_dir)

    def compute(self, job, loaded, writer):  # noqa: ANN001, ANN201 - the ShardTask signature
        data = hashlib.sha256(job.shard.encode()).digest() * 256
        files = {f"{job.shard}.bin": writer.write_bytes(f"{job.shard}.bin", data)}  # payload first
        with open(self.flag_dir / "computed.log", "a") as f:
            f.write(f"{job.shard} {os.getpid()}\n")
        flag = self.flag_dir / "killed"
        if job.shard == KILL and not flag.exists():
            flag.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-shard: payload written, no marker
        return {"rows": [ok_row(job.shard, shard=job.shard)], "files": files}


@flow(name="toy")
def toy_flow(root: str, flag_dir: str, runner: str = "local") -> str:
    store = ArtifactStore(root)
    art = run_sharded(store, spec=SPEC, plan=lambda: [ShardJob(store.root, SPEC, f"s-{i:05d}") for i in range(8)],
                      task=KillOnce(flag_dir), finalize=lambda w, records: w.commit(
                          rows=[r for rec in records for r in rec["rows"]]), shard_map=Runner(runner).shard_map())
    return art.ref


if __name__ == "__main__":
    runner = Runner("dask", workers=2)
    with prefect_api(runner):
        print(json.dumps({"ref": with_runner(toy_flow, runner)(sys.argv[1], sys.argv[2], runner="dask")}))
