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
