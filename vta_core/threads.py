"""A fixed intra-op thread count for the data stages' numeric work.

torch's CPU kernels split their reductions by thread, so a convolution's float32 result depends (in the
last bits) on how many threads ran it: 2 threads in this process and 1 in a Dask worker gave latents
that differ by 1e-6. Sharded stages therefore compute with ``STAGE_THREADS`` threads whatever the
engine (parallelism comes from running shards side by side), so their bytes do not depend on the
runner or the number of workers. ``VTA_STAGE_THREADS`` changes it (then results may differ in the last
bits from a root written with another value: keep it the same for every writer of a root).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

STAGE_THREADS = int(os.environ.get("VTA_STAGE_THREADS", "1"))


@contextmanager
def stage_threads(n: int | None = None) -> Iterator[int]:
    """``torch.set_num_threads(n or STAGE_THREADS)`` for the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n or STAGE_THREADS)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
