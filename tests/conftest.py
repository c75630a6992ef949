"""Test-wide settings. OpenMP threads must not spin (see vta_core/__init__.py): set before torch loads."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub

from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vta_core.librosa_import import librosa  # noqa: E402


def _generated_audio(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A log chirp + noise floor + decaying clicks + a tone burst, float32 (N,) in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    y = 0.3 * librosa.chirp(fmin=100, fmax=sample_rate / 2.5, sr=sample_rate, length=len(t))
    y += 0.01 * rng.standard_normal(len(t))
    for start in rng.uniform(0, seconds - 0.05, size=6):
        i = int(start * sample_rate)
        y[i : i + 200] += 0.5 * np.exp(-np.arange(len(y[i : i + 200])) / 40.0)
    y += 0.2 * np.sin(2 * np.pi * 880 * t) * ((t > seconds / 3) & (t < seconds / 2))
    return np.clip(y, -1, 1).astype(np.float32)


@pytest.fixture(scope="session")
def make_test_audio() -> Callable[..., np.ndarray]:
    """Audio test signal factory (vta_core audio/VAE/vocoder tests): ``(sample_rate, seconds, seed=0) -> (N,)``."""
    return _generated_audio


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ``vta`` subprocesses: a private Prefect home per test module, analytics off, offline."""
    from procs import vta_env

    return vta_env(tmp_path_factory.mktemp("vta"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
