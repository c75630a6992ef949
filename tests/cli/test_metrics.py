"""`vta metrics fd` as a user runs it (a subprocess), against an independent computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from metric_refs import embedding_sets, fd_reference

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}


def vta(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "metrics", *args], capture_output=True, text=True,
                          env=ENV, timeout=300)


def test_fd_json_matches_reference_incl_rank_deficient_and_nearly_singular(tmp_path):
    cases = {"full": (300, 16, None, None), "n_lt_d": (12, 40, None, None), "subspace": (200, 24, 6, None),
             "near_singular": (400, 20, None, -6)}
    for name, (n, d, rank, scale_pow) in cases.items():
        a, b = embedding_sets(n + d, n, d, rank=rank, scale_pow=scale_pow)
        np.save(tmp_path / f"{name}_a.npy", a)
        np.save(tmp_path / f"{name}_b.npy", b)
        proc = vta("fd", str(tmp_path / f"{name}_a.npy"), str(tmp_path / f"{name}_b.npy"), "--json")
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["fd"] == pytest.approx(fd_reference(a, b), rel=1e-6), name
        assert (out["n_a"], out["n_b"], out["dim"]) == (n, n + 7, d)


def test_fd_reads_saved_stats_and_fails_in_one_line(tmp_path):
    from vta_core.metrics.frechet import GaussianStats

    a, b = embedding_sets(0, 100, 5)
    np.save(tmp_path / "a.npy", a)
    GaussianStats.from_embeddings(b).save(tmp_path / "b_stats.npz")
    out = json.loads(vta("fd", str(tmp_path / "a.npy"), str(tmp_path / "b_stats.npz"), "--json").stdout)
    assert out["fd"] == pytest.approx(fd_reference(a, b), rel=1e-6)

    np.save(tmp_path / "other_dim.npy", np.random.default_rng(1).standard_normal((10, 3)))
    (tmp_path / "junk.npy").write_text("not an array")
    for other, needle in (("other_dim.npy", "embedding sizes differ: 5 vs 3"), ("junk.npy", "junk.npy")):
        proc = vta("fd", str(tmp_path / "a.npy"), str(tmp_path / other), "--json")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert vta("fd", str(tmp_path / "a.npy")).returncode == 2  # usage error
