"""augment's pair choice: distinct pairs only (a repeated pair could repeat a sample key)."""

import numpy as np

from stages.augment import _pairs


def test_pairs_are_distinct_even_when_few_exist():
    for seed in range(20):
        pairs = _pairs(["dog", "cat"], 2, np.random.default_rng(seed))
        assert sorted(pairs) == [(0, 1), (1, 0)]  # the only two; the old sampler often drew one twice
    pairs = _pairs(["a", "b", "a", "c"], 5, np.random.default_rng(0))
    assert len(pairs) == len(set(pairs)) == 5


def test_one_label_gives_no_pairs():
    assert _pairs(["dog", "dog"], 3, np.random.default_rng(0)) == []
