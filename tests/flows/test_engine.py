"""flows/engine.py: parsing --runner, the task runner it gives, the serve forms' runner field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.engine import Runner
from flows.serve import IngestParams, PipelineParams, RerunParams


def test_runner_values():
    assert not Runner().distributed and Runner().task_runner() is None and Runner().shard_map() is None
    local = Runner("dask", workers=3)
    assert local.distributed and local.address is None and local.cluster_workers() == 3
    runner = local.task_runner()
    assert type(runner).__name__ == "DaskTaskRunner" and runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    remote = Runner("dask://sched.example:8786")
    assert remote.address == "tcp://sched.example:8786" and remote.task_runner().address == "tcp://sched.example:8786"
    assert remote.shard_map() is not None


@pytest.mark.parametrize("value", ["dask:", "dask://", "ray", "Local", ""])
def test_a_bad_runner_is_one_line_naming_it(value):
    with pytest.raises(ValueError, match=f"unknown runner {value!r}"):
        Runner(value)


def test_workers_need_a_local_cluster():
    with pytest.raises(ValueError, match="workers=2 needs --runner dask"):
        Runner("local", workers=2)
    with pytest.raises(ValueError, match="workers=0"):
        Runner("dask", workers=0)


def test_serve_forms_have_a_runner_field():
    assert IngestParams(runner="dask://scheduler:8786").runner == "dask://scheduler:8786"
    assert PipelineParams().runner == "local" and RerunParams(stage="decode", runner="dask").runner == "dask"
    for bad in ("ray", "dask:/x"):
        with pytest.raises(ValidationError):
            IngestParams(runner=bad)


def test_the_forms_default_runner_comes_from_vta_runner(monkeypatch):
    monkeypatch.setenv("VTA_RUNNER", "dask://scheduler:8786")  # what docker/compose.yaml sets on the vta worker
    assert IngestParams().runner == PipelineParams().runner == "dask://scheduler:8786"
    monkeypatch.delenv("VTA_RUNNER")
    assert IngestParams().runner == "local"
