"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS


def sampling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--steps``, ``--sampler`` and ``--guidance``, with the defaults of :mod:`vta_core.samplers`."""
    for option in reversed((
        click.option("--steps", type=click.IntRange(min=1), default=DEFAULT_STEPS, show_default=True),
        click.option("--sampler", type=click.Choice(SAMPLERS), default=DEFAULT_SAMPLER, show_default=True),
        click.option("--guidance", type=float, default=DEFAULT_GUIDANCE, show_default=True),
    )):
        fn = option(fn)
    return fn


def runner_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--runner`` and ``--dask-workers``: where the data stages' per-shard tasks run (flows/engine.py)."""
    for option in reversed((
        click.option("--runner", default="local", show_default=True, metavar="local|dask|dask://HOST:PORT",
                     help="Where per-shard tasks (and `vta ablate`'s rows) run: this process, a Dask LocalCluster sized to the machine, or an "
                          "existing Dask scheduler. A distributed runner without PREFECT_API_URL gets one Prefect "
                          "server on loopback for the run."),
        click.option("--dask-workers", type=click.IntRange(min=1), default=None,
                     help="--runner dask: worker processes (default: one per core)."),
    )):
        fn = option(fn)
    return fn


def run_flow(flow_fn: Callable[..., Any], *, runner: str, dask_workers: int | None, **kwargs: Any) -> Any:
    """Call the Prefect flow ``flow_fn(**kwargs, runner=...)`` with that runner's task runner, inside the
    Prefect API it needs (flows.engine.prefect_api)."""
    from flows.engine import Runner, prefect_api, with_runner

    spec = Runner(runner, workers=dask_workers)
    with prefect_api(spec):
        return with_runner(flow_fn, spec)(**kwargs, runner=spec.value)


def _use_s3_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        from storage.fs import set_s3_endpoint

        set_s3_endpoint(value)


def root_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--root`` (the artifact root: a path or an fsspec URL such as ``s3://bucket/prefix``) and
    ``--s3-endpoint`` (an S3-compatible endpoint URL; it is put into ``AWS_ENDPOINT_URL`` so that every
    process the command starts, Dask workers included, uses it too; default: the AWS environment)."""
    fn = click.option("--s3-endpoint", default=None, metavar="URL", expose_value=False, is_eager=True,
                      callback=_use_s3_endpoint,
                      help="S3-compatible endpoint for s3:// roots (sets AWS_ENDPOINT_URL; credentials: the "
                           "AWS environment variables).")(fn)
    return click.option("--root", type=str, default=None,
                        help="Artifact root (path or fsspec URL, e.g. s3://bucket/prefix); default $VTA_ROOT or "
                             "./vta-artifacts.")(fn)
