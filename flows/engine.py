"""Choosing the engine: where the data stages' per-shard tasks run (docs/architecture.md#scale-out).

``--runner local``       in this process, shard after shard (the embedded default)
``--runner dask``        a ``dask.distributed`` LocalCluster sized to this machine: one single-threaded
                         worker process per core (``--dask-workers N`` to choose)
``--runner dask://H:P``  an existing Dask scheduler (SLURM through dask-jobqueue, Kubernetes through
                         dask-kubernetes, or ``dask scheduler`` / ``dask worker`` by hand)

Dask is reached through Prefect's own task runner (prefect-dask's ``DaskTaskRunner``): every shard
is a Prefect task run (retried on transient errors, logged, visible in the UI) mapped onto the
cluster; the stage's plan and finalize run in the flow's process. The runner is never a parameter
of a version: artifacts are byte-identical whatever the engine. A distributed runner needs one
Prefect API that every worker reaches: :func:`prefect_api` starts one on loopback for the run when
none is configured (never one per worker).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from prefect import task, unmapped
from prefect.context import FlowRunContext
from prefect.futures import as_completed

from flows.retries import TASK_OPTIONS
from storage.sharded import Progress, Record, ShardJob, ShardMap, ShardTask, local_map

log = logging.getLogger("vta.engine")

LOCAL = "local"


@dataclass(frozen=True)
class Runner:
    """A parsed ``--runner`` value."""

    value: str = LOCAL
    workers: int | None = None  # LocalCluster worker processes (None: one per core)

    def __post_init__(self) -> None:
        v = self.value
        if v not in (LOCAL, "dask") and not (v.startswith("dask://") and len(v) > len("dask://")):
            raise ValueError(f"unknown runner {v!r}: use local, dask or dask://HOST:PORT")
        if self.workers is not None and (self.workers < 1 or v != "dask"):
            raise ValueError(f"workers={self.workers} needs --runner dask and a count >= 1")

    @property
    def distributed(self) -> bool:
        return self.value != LOCAL

    @property
    def address(self) -> str | None:
        return "tcp://" + self.value[len("dask://"):] if self.value.startswith("dask://") else None

    def cluster_workers(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))

    def task_runner(self) -> Any:
        """The flow's Prefect task runner (None: Prefect's default, for the local runner)."""
        if not self.distributed:
            return None
        from prefect_dask import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        # single-threaded worker processes: torch uses one core in each (dask sets OMP_NUM_THREADS=1), OpenCV too
        # (flows/dask_setup.py sets it: OpenCV ignores OMP_NUM_THREADS)
        return DaskTaskRunner(cluster_kwargs={"n_workers": self.cluster_workers(), "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})

    def shard_map(self) -> ShardMap | None:
        """How the stages map their shards (None: in process, :func:`storage.sharded.local_map`)."""
        return prefect_shard_map if self.distributed else None


@task(name="shard", task_run_name="{job.label}", **TASK_OPTIONS)
def run_shard(shard_task: ShardTask, job: ShardJob) -> Record:
    """One shard of one stage, on whichever worker Dask picks (idempotent: see storage/sharded.py)."""
    return shard_task(job)


def prefect_shard_map(shard_task: ShardTask, jobs: Sequence[ShardJob], *, progress: Progress | None = None) -> list[Record]:
    """Map ``shard_task`` over ``jobs`` as Prefect task runs on the flow's task runner (Dask), records in job
    order. A task that asks for Dask resources (``{"GPU": 1}``) runs where a worker has them; when no worker
    of the cluster does, the shards run in this process instead (never a task that waits forever)."""
    if not jobs:
        return []
    resources = shard_task.resources
    if resources and not _cluster_has(resources):
        log.warning("%s: no Dask worker offers %s; its %d shard(s) run in the flow's process",
                    jobs[0].spec.stage, resources, len(jobs))
        return local_map(shard_task, jobs, progress=progress)
    import dask

    prepare_workers()
    with dask.annotate(resources=resources) if resources else nullcontext():
        futures = run_shard.with_options(name=f"{jobs[0].spec.stage}-shard").map(shard_task=unmapped(shard_task),
                                                                                 job=list(jobs))
    for done, _ in enumerate(as_completed(futures), start=1):
        if progress:
            progress(done, len(jobs))
    return [f.result() for f in futures]


def _client() -> Any:
    """The Dask client of the flow's task runner (None: not a Dask task runner)."""
    return getattr(getattr(FlowRunContext.get(), "task_runner", None), "client", None)


def prepare_workers() -> None:
    """Register the worker set-up (flows/dask_setup.py) once per client; workers that join later get it too."""
    client = _client()
    if client is not None and not getattr(client, "_vta_prepared", False):
        from flows.dask_setup import ProjectImports

        client.register_plugin(ProjectImports())
        client._vta_prepared = True


def _cluster_has(resources: dict[str, float]) -> bool:
    client = _client()
    if client is None:
        return False
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    return any(all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items()) for w in workers)


@contextmanager
def prefect_api(runner: Runner) -> Iterator[str | None]:
    """For a distributed runner with no ``PREFECT_API_URL`` configured: one Prefect server on loopback for
    the run (Prefect's own subprocess server, on this profile's database), its URL exported so that the
    Dask workers started afterwards inherit it; stopped on exit. Yields the API URL (None: local runner)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if not runner.distributed or configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    log.info("started a Prefect server for this run at %s", server.api_url)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        _drain_prefect_clients()  # logs and events still queued for the server go out before it stops
        server.stop()
        log.info("stopped the Prefect server at %s", server.api_url)


def _drain_prefect_clients() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception as e:  # noqa: BLE001 - best effort: the run itself is over
            log.debug("draining %s: %s", worker.__name__, e)


def with_runner(flow_fn: Any, runner: Runner) -> Any:
    """``flow_fn`` (a Prefect flow) with ``runner``'s task runner."""
    task_runner = runner.task_runner()
    return flow_fn if task_runner is None else flow_fn.with_options(task_runner=task_runner)


__all__ = ["LOCAL", "Runner", "prefect_api", "prefect_shard_map", "run_shard", "with_runner"]
