"""FD, IS and KL against independent computations on fixed random data (1e-6 relative)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from metric_refs import embedding_sets, fd_reference

from vta_core.metrics import frechet
from vta_core.metrics.frechet import FrechetAccumulator, GaussianStats, fd_embeddings, frechet_distance
from vta_core.metrics.inception import inception_score, kl_divergence, kl_per_clip


@pytest.mark.parametrize(("n", "d", "rank", "scale_pow"), [
    (500, 32, None, None),   # well conditioned
    (20, 64, None, None),    # rank-deficient: N < D
    (400, 48, 12, None),     # rank-deficient: embeddings in a 12-d subspace
    (600, 24, None, -6),     # nearly singular: eigenvalues spread over 12 decades
])
def test_fd_matches_independent_computation(n, d, rank, scale_pow):
    a, b = embedding_sets(n * 7 + d, n, d, rank=rank, scale_pow=scale_pow)
    ours, ref = fd_embeddings(a, b), fd_reference(a, b)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 0.01


def test_fd_of_a_set_with_itself_is_zero_and_symmetric():
    a, b = embedding_sets(1, 300, 16)
    assert abs(fd_embeddings(a, a)) < 1e-8
    assert fd_embeddings(a, b) == pytest.approx(fd_embeddings(b, a), rel=1e-9)


def test_stats_save_load_and_accumulator(tmp_path):
    a, b = embedding_sets(2, 200, 8)
    acc = FrechetAccumulator()
    for chunk in np.array_split(a, 7):
        acc.update(chunk)
    stats = acc.compute()
    path = stats.save(tmp_path / "ref")
    assert path.name == "ref.npz"
    loaded = GaussianStats.load(path)
    assert loaded.n == 200 and np.array_equal(loaded.sigma, stats.sigma)
    assert frechet_distance(GaussianStats.from_embeddings(b), loaded) == pytest.approx(fd_embeddings(b, a), rel=1e-12)
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="bad.npz"):
        GaussianStats.load(tmp_path / "bad.npz")


def test_fd_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        fd_embeddings(np.zeros(5), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fd_embeddings(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="sizes differ"):
        fd_embeddings(np.ones((4, 3)) * np.arange(4)[:, None], np.ones((4, 2)) * np.arange(4)[:, None])
    bad = np.ones((4, 2))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fd_embeddings(bad, bad)


def test_singular_product_retries_with_eps_and_imaginary_rule(monkeypatch):
    a, b = embedding_sets(3, 100, 6)
    sa, sb = GaussianStats.from_embeddings(a), GaussianStats.from_embeddings(b)
    seen = []
    real_sqrtm = scipy.linalg.sqrtm

    def fake_sqrtm(m):
        seen.append(m)
        return np.full_like(m, np.nan) if len(seen) == 1 else real_sqrtm(m)

    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", fake_sqrtm)
    fd = frechet_distance(sa, sb)
    eye = np.eye(6) * 1e-6
    np.testing.assert_allclose(seen[1], (sa.sigma + eye) @ (sb.sigma + eye), rtol=1e-14)
    assert fd == pytest.approx(fd_reference(a, b), rel=1e-5)

    def complex_sqrtm(imag):
        return lambda m: real_sqrtm(m) + 1j * imag * np.eye(len(m))

    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", complex_sqrtm(1e-5))
    assert frechet_distance(sa, sb) == pytest.approx(fd_reference(a, b), rel=1e-6)  # negligible part dropped
    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", complex_sqrtm(1e-2))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(sa, sb)


def is_reference(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    x = logits[np.random.RandomState(seed).permutation(len(logits))]
    out = []
    for part in np.array_split(np.arange(len(x)), splits) if len(x) % splits == 0 else [
            np.arange(i * len(x) // splits, (i + 1) * len(x) // splits) for i in range(splits)]:
        e = np.exp(x[part] - x[part].max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        marginal = p.mean(axis=0)
        out.append(np.exp(np.mean([np.sum(row * (np.log(row) - np.log(marginal))) for row in p])))
    return float(np.mean(out)), float(np.std(out))


@pytest.mark.parametrize("n", [100, 137])
def test_inception_score_matches_independent_computation(n):
    logits = np.random.default_rng(n).standard_normal((n, 527)) * 3
    mean, std = inception_score(logits)
    ref_mean, ref_std = is_reference(logits)
    assert mean == pytest.approx(ref_mean, rel=1e-6) and std == pytest.approx(ref_std, rel=1e-6)
    assert std > 0


def test_inception_score_of_confident_balanced_classes_is_the_class_count():
    logits = 60.0 * np.eye(5)[np.arange(50) % 5]  # each unshuffled chunk of 5 holds all 5 classes
    mean, std = inception_score(logits, shuffle=False)
    assert mean == pytest.approx(5.0, rel=1e-9) and std < 1e-9
    with pytest.raises(ValueError, match="at least splits=10"):
        inception_score(logits[:9])


def test_kl_matches_audioldm_eval_formula_in_torch():
    rng = np.random.default_rng(7)
    gen, gt = rng.standard_normal((40, 527)) * 2, rng.standard_normal((40, 527)) * 2
    g, t = torch.from_numpy(gen), torch.from_numpy(gt)
    ref = torch.nn.functional.kl_div((g.softmax(1) + 1e-6).log(), t.softmax(1), reduction="sum") / len(g)
    assert kl_divergence(gen, gt) == pytest.approx(float(ref), rel=1e-6)
    per = kl_per_clip(gen, gt)
    assert per.shape == (40,) and (per > 0).all()
    assert -527e-6 <= kl_divergence(gt, gt) < 0  # only the eps term remains: sum_c p * log(p / (p + eps)) >= -C eps
    with pytest.raises(ValueError, match="pairs clips"):
        kl_divergence(gen[:3], gt)
