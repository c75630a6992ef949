"""librosa, imported so that processes starting together cannot corrupt numba's on-disk cache.

librosa compiles its gufuncs (peak picking, local max/min, zero crossings, pitch helpers) with
``numba.guvectorize(..., cache=True)`` when their modules are first imported, and writes the machine code
beside its sources. Two processes compiling at the same moment can write mismatched halves of one
gufunc's cache (numba issue #10128: the ``.nbc`` and ``guf-*.nbc`` files get different ABI tags), and every
process that loads that cache afterwards dies with a segmentation fault — on a fresh install, the first
parallel ingest (process-pool shards, Dask workers) is exactly that moment.

``import_librosa()`` imports those modules once per process under an exclusive file lock: on a fresh
install the first process compiles and writes the cache alone, and the others then read a complete one
(reading is cheap). Every module of ours that uses librosa imports it through here.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from types import ModuleType

from filelock import FileLock

# librosa's modules that define cached gufuncs and that onset detection, mel spectrograms and resampling
# import (librosa 0.10–0.11); a module missing from a later librosa is skipped. ``librosa.beat`` has them
# too, but nothing here tracks beats and loading its cache costs ~2 s per process.
_GUFUNC_MODULES = ("librosa.util.utils", "librosa.core.audio", "librosa.core.pitch")

_librosa: ModuleType | None = None


def lock_path() -> str:
    """The per-user lock file that serialises the first librosa import of each process."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"vta-librosa-numba-{uid}.lock")


def import_librosa() -> ModuleType:
    """The ``librosa`` module, its numba-compiled modules imported under the lock (once per process)."""
    global _librosa
    if _librosa is None:
        with FileLock(lock_path()):
            import librosa

            for name in _GUFUNC_MODULES:
                try:
                    importlib.import_module(name)
                except ModuleNotFoundError:
                    pass
        _librosa = librosa
    return _librosa


class _LazyLibrosa:
    """Stands for the ``librosa`` module: the first attribute read runs :func:`import_librosa`."""

    def __getattr__(self, name: str) -> object:
        return getattr(import_librosa(), name)


# ``from vta_core.librosa_import import librosa`` keeps ``import librosa``'s laziness (nothing is loaded
# until first use) and its spelling (``librosa.onset.onset_detect(...)``).
librosa: ModuleType = _LazyLibrosa()  # type: ignore[assignment]
