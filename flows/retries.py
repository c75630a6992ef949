"""Retries for transient failures only: a flaky disk, NFS or object store is retried; a bad value,
a missing file or a code error fails at once (retrying it would only repeat the same error).

A retried stage resumes from what it committed (per-shard commits), so a retry redoes little.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from storage.fs import NO_SPACE

# OSError subclasses that say "your input is wrong", not "try again"
PERMANENT_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def is_transient(exc: BaseException | None) -> bool:
    """I/O and network errors (and timeouts) are worth a retry; everything else is not (a full disk
    neither: it stays full for the seconds a retry waits)."""
    if exc is None or isinstance(exc, PERMANENT_OS_ERRORS) or getattr(exc, "errno", None) in NO_SPACE:
        return False
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: continue to the retry policy only for transient errors."""
    return is_transient(state.result(raise_on_failure=False))


# keyword arguments of every stage task: the artifact store is the cache (versions), not Prefect
TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 2, "retry_delay_seconds": 10,
                                "retry_condition_fn": retry_transient}
