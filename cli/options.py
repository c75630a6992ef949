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
