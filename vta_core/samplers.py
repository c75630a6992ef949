"""The samplers generation offers and the defaults every entry point uses (``vta generate``, ``vta evaluate``,
the sweep, the UI forms, the library functions). Torch-free, so the CLI can read it at startup;
``vta_core.sampling.make_sampler`` builds the schedulers."""

from __future__ import annotations

from typing import Literal, get_args

# ancestral DDPM, deterministic DDIM, DPM-Solver++ (2nd order), UniPC (2nd-order predictor-corrector),
# Euler (the sigma-space ODE step, no churn): all diffusers schedulers (vta_core.sampling.make_sampler)
Sampler = Literal["ddpm", "ddim", "dpmsolver++", "unipc", "euler"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
DEFAULT_SAMPLER: Sampler = "dpmsolver++"  # good audio in ~25 steps
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 3.0  # classifier-free guidance scale w
