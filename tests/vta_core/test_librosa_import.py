"""Processes that first use librosa together must not corrupt numba's cache (numba issue #10128).

Without the lock in ``vta_core.librosa_import``, three processes compiling librosa's gufuncs into one fresh
cache folder left it broken in 2 of 3 tries here: every later process died with SIGSEGV in ``peak_pick``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vta_core.librosa_import import librosa

USE = """
import numpy as np
from vta_core.librosa_import import librosa
x = np.random.default_rng(0).random(2000)
peaks = librosa.util.peak_pick(x, pre_max=3, post_max=3, pre_avg=3, post_avg=5, delta=0.1, wait=10)
print(len(peaks), int(librosa.zero_crossings(x - 0.5).sum()), int(librosa.util.localmax(x).sum()))
"""


def test_concurrent_first_use_then_a_reader_of_the_cache(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # a fresh cache, as on a new install
    procs = [subprocess.Popen([sys.executable, "-c", USE], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert any((tmp_path / "numba").rglob("guf-*.nbc")), "the gufuncs were not cached where NUMBA_CACHE_DIR says"
    reader = subprocess.run([sys.executable, "-c", USE], env=env, capture_output=True, text=True, timeout=300)
    assert reader.returncode == 0, reader.stderr[-2000:]  # -11 here is the corrupted-cache crash
    assert len(set(outs + [reader.stdout])) == 1 and outs[0].split()[0] != "0"


def test_the_lazy_name_is_librosa() -> None:
    assert librosa.__version__ == __import__("librosa").__version__
    assert librosa.util.peak_pick is __import__("librosa").util.peak_pick
