"""Inception score (IS) and the paired KL divergence on classifier logits, as docs/algorithms.md#inception-score-and-kl states them
and audioldm_eval computes them (``metrics/isc.py``, ``metrics/kl.py``; IS is torch-fidelity's ISC).

IS over generated clips: rows of the (N, C) logits are shuffled with ``np.random.RandomState(2020)``
(``permutation(N)``), cut into ``splits`` = 10 chunks ``[i N // s, (i + 1) N // s)``; per chunk, in float64,
``p = softmax(logits)``, ``q = mean_rows(p)`` and ``exp(mean_rows(sum_c p (log p - log q)))``. The score
is the mean over chunks (± their population std).

KL, per clip pair (generated, ground truth, paired by id), in audioldm_eval's two variants
(``kl_div((p_gen + EPS).log(), p_gt, reduction="sum") / N``; ``0 log 0 = 0``):

* ``softmax`` ("kullback_leibler_divergence_softmax"): ``KL(p_gt || p_gen) = sum_c p_gt (log p_gt -
  log(p_gen + 1e-6))`` with ``p = softmax(logits)``;
* ``sigmoid`` ("kullback_leibler_divergence_sigmoid"): the same sum with element-wise
  ``p = sigmoid(logits)`` (AudioSet's tags are multi-label; only the p_gt terms, as audioldm_eval).

Both are averaged over clip pairs. IS needs enough clips to mean anything: :data:`IS_MIN_CLIPS`
(10 splits of at least 10 clips); the metric suite reports it as null below that.
"""

from __future__ import annotations

import numpy as np
import scipy.special

IS_SPLITS = 10
IS_SEED = 2020
IS_MIN_PER_SPLIT = 10
IS_MIN_CLIPS = IS_SPLITS * IS_MIN_PER_SPLIT  # below this the split scores are noise (13 clips: IS ~ 1)
KL_EPS = 1e-6
KL_VARIANTS = ("softmax", "sigmoid")
# audioldm_eval's result keys for our columns
AUDIOLDM_EVAL_KL = {"softmax": "kullback_leibler_divergence_softmax", "sigmoid": "kullback_leibler_divergence_sigmoid"}


def _logits(x: np.ndarray, *, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] < 2:
        raise ValueError(f"{what} must be (N, C) logits with N >= 1 and C >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contain non-finite values")
    return a


def inception_score(logits: np.ndarray, *, splits: int = IS_SPLITS, seed: int = IS_SEED,
                    shuffle: bool = True) -> tuple[float, float]:
    """(mean, std) of the IS over ``splits`` chunks of the (N, C) ``logits``; N must be >= ``splits``."""
    x = _logits(logits, what="IS logits")
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"IS needs at least splits={splits} clips, got {n}")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    log_p = scipy.special.log_softmax(x, axis=1)  # (N, C)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(axis=0, keepdims=True)  # (1, C)
        kl = (p[lo:hi] * (log_p[lo:hi] - np.log(q))).sum(axis=1)  # (n_i,)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def kl_per_clip(gen_logits: np.ndarray, gt_logits: np.ndarray, *, eps: float = KL_EPS,
                probs: str = "softmax") -> np.ndarray:
    """(N,) KL(p_gt || p_gen) per paired row, ``probs`` "softmax" or "sigmoid" (see the module docstring)."""
    if probs not in KL_VARIANTS:
        raise ValueError(f"KL probabilities must be one of {KL_VARIANTS}, got {probs!r}")
    gen = _logits(gen_logits, what="generated logits")
    gt = _logits(gt_logits, what="ground-truth logits")
    if gen.shape != gt.shape:
        raise ValueError(f"KL pairs clips: generated {gen.shape} vs ground truth {gt.shape}")
    to_p = (lambda x: scipy.special.softmax(x, axis=1)) if probs == "softmax" else scipy.special.expit
    p_gt, p_gen = to_p(gt), to_p(gen)  # (N, C)
    return (scipy.special.xlogy(p_gt, p_gt) - p_gt * np.log(p_gen + eps)).sum(axis=1)


def kl_divergence(gen_logits: np.ndarray, gt_logits: np.ndarray, *, eps: float = KL_EPS,
                  probs: str = "softmax") -> float:
    """Mean over clip pairs of KL(p_gt || p_gen) (audioldm_eval's ``reduction="sum"`` / N)."""
    return float(kl_per_clip(gen_logits, gt_logits, eps=eps, probs=probs).mean())
