"""Progress for long stages: a tqdm bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from tqdm import tqdm


def progress_callback(desc: str, *, logger: logging.Logger | None = None) -> Callable[[int, int], None]:
    """``callback(done, total)`` for stage callables."""
    logger = logger or logging.getLogger("vta.progress")
    bar: tqdm | None = None
    last = [0.0]

    def update(done: int, total: int) -> None:
        nonlocal bar
        if sys.stderr.isatty():
            if bar is None:
                bar = tqdm(total=total, desc=desc, unit="clip", leave=False)
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()
        elif done >= total or time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            logger.info("%s: %d/%d", desc, done, total)

    return update
