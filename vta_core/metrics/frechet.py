"""Fréchet distance between two embedding sets (FD, FAD), as docs/algorithms.md#frechet-distance.

``mu, sigma`` = mean and ``np.cov(rowvar=False)`` of the (N, D) embeddings;
``FD = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrtm(S1 S2)`` (scipy.linalg.sqrtm). If the square root is
not finite (a singular product), it is retried on ``(S1 + eps I)(S2 + eps I)`` with ``eps = 1e-6``; a
complex result keeps its real part unless an imaginary diagonal entry exceeds 1e-3 (then it is an error).
This is pytorch-fid's ``calculate_frechet_distance``, which audioldm_eval (FD, FAD) and
frechet_audio_distance copy.

The formula runs on any N >= 2, but with N <= D samples a covariance has rank < D and the distance is
dominated by which directions the few samples happen to span: :func:`too_few_samples` says why a set
is below the minimum (n > D on both sides: full-rank covariances), and the metric suite reports null then.

:class:`GaussianStats` holds (mu, sigma, n) and saves to / loads from ``.npz`` so the statistics of a
reference set are computed once and reused; :class:`FrechetAccumulator` collects embeddings batch by
batch (``update``) and gives the statistics at the end (``compute``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg

EPS = 1e-6  # diagonal offset of the retry
IMAG_TOL = 1e-3  # largest |imag| tolerated on the diagonal of sqrtm(S1 S2)


@dataclass(frozen=True)
class GaussianStats:
    """Mean (D,) and covariance (D, D) of ``n`` embeddings."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_embeddings(cls, emb: np.ndarray, *, what: str = "embeddings") -> GaussianStats:
        x = np.asarray(emb, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"{what}: need at least 2 rows for a covariance, got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain {int((~np.isfinite(x)).sum())} non-finite values")
        return cls(mu=x.mean(axis=0), sigma=np.atleast_2d(np.cov(x, rowvar=False)), n=int(x.shape[0]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez(path, mu=self.mu, sigma=self.sigma, n=np.int64(self.n))
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> GaussianStats:
        with np.load(path, allow_pickle=False) as z:
            missing = {"mu", "sigma", "n"} - set(z.files)
            if missing:
                raise ValueError(f"{path} is not a statistics file (missing {sorted(missing)})")
            return cls(mu=z["mu"], sigma=z["sigma"], n=int(z["n"]))


def frechet_distance(a: GaussianStats, b: GaussianStats, *, eps: float = EPS) -> float:
    """FD between two Gaussians (see the module docstring)."""
    mu1, mu2 = np.atleast_1d(a.mu), np.atleast_1d(b.mu)
    s1, s2 = np.atleast_2d(a.sigma), np.atleast_2d(b.sigma)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"embedding sizes differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: retry with a small diagonal offset
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > IMAG_TOL:
            raise ValueError(f"sqrtm(S1 S2) has an imaginary diagonal part of {imag:.3g} (> {IMAG_TOL})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def too_few_samples(n: int, n_reference: int, dim: int, *, unit: str = "samples") -> str | None:
    """Why FD between sets of ``n`` and ``n_reference`` D-dimensional rows is not reported, or None
    when both have more rows than dimensions (full-rank covariances)."""
    if n > dim and n_reference > dim:
        return None
    return (f"needs more {unit} than embedding dimensions on both sides for full-rank covariances "
            f"(n > D = {dim}), got n = {n} and n_reference = {n_reference}")


def fd_embeddings(a: np.ndarray, b: np.ndarray) -> float:
    """FD between two (N, D) embedding sets."""
    return frechet_distance(GaussianStats.from_embeddings(a, what="first set"),
                            GaussianStats.from_embeddings(b, what="second set"))


class FrechetAccumulator:
    """Collects (n, D) embedding batches; ``compute()`` -> :class:`GaussianStats` (np.cov on all rows)."""

    def __init__(self) -> None:
        self._batches: list[np.ndarray] = []

    def update(self, emb: np.ndarray) -> None:
        x = np.asarray(emb, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or (self._batches and x.shape[1] != self._batches[0].shape[1]):
            raise ValueError(f"embedding batch of shape {x.shape} does not fit the earlier ones")
        self._batches.append(x)

    @property
    def n(self) -> int:
        return sum(len(b) for b in self._batches)

    def embeddings(self) -> np.ndarray:
        return np.concatenate(self._batches) if self._batches else np.zeros((0, 0))

    def compute(self) -> GaussianStats:
        return GaussianStats.from_embeddings(self.embeddings())
