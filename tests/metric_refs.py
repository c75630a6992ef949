"""Independent reference computations for the metric tests (numpy only, no code shared with vta_core)."""

from __future__ import annotations

import numpy as np


def fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    """FD through the symmetric form Tr sqrt(S1^1/2 S2 S1^1/2) with eigh: no sqrtm of a non-symmetric product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = (a - mu1).T @ (a - mu1) / (len(a) - 1)
    s2 = (b - mu2).T @ (b - mu2) / (len(b) - 1)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def embedding_sets(seed: int, n: int, d: int, *, rank: int | None = None, scale_pow: float | None = None):
    """Two (n, d) / (n + 7, d) sets sharing a random mixing matrix; ``rank`` < d puts them in a subspace,
    ``scale_pow`` spreads the column scales over 10**0 .. 10**scale_pow (nearly singular covariances)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((rank or d, d))
    if scale_pow is not None:
        mix = mix * np.logspace(0, scale_pow, d)
    a = rng.standard_normal((n, rank or d)) @ mix
    b = 0.8 * rng.standard_normal((n + 7, rank or d)) @ mix + 0.3
    return a, b
