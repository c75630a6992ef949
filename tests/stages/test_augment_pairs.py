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


def test_concat_parents_are_of_the_sample_split_only(tmp_path):
    """augment on a tiny decode: train concat samples have train-split parents only, test_concat samples
    test-split ones; a labels row without a split is an error naming the clip (or takes --split-default), and
    a video without a labels row (no split) is never a parent."""
    import shutil

    import pytest

    from stages.augment import augment_stage
    from stages.decode import DecodeParams, decode_stage
    from storage import ArtifactStore
    from storage.shardmap import iter_samples
    from vta_core.presets import get_preset
    from vta_core.synth_world import generate_synth

    syn = tmp_path / "syn"
    generate_synth(syn, clips=8, seed=1, duration_s=2.0, size=64)
    rows = (syn / "labels.csv").read_text().splitlines()
    first_test = next(r.split(",")[0] for r in rows if r.endswith(",test"))
    labels = tmp_path / "labels.csv"  # the first test clip's row loses its split
    labels.write_text("\n".join(",".join(r.split(",")[:3]) if r.startswith(first_test + ",") else r
                                for r in rows) + "\n")
    shutil.copy(syn / "videos" / f"{first_test}.mp4", syn / "videos" / "unlisted.mp4")  # no labels row
    store = ArtifactStore(str(tmp_path / "root"))
    params = DecodeParams.from_geometry(get_preset("tiny").geometry)
    with pytest.raises(ValueError, match=f"clip {first_test} has no split"):
        decode_stage(store, videos_dir=syn / "videos", labels_csv=labels, params=params)
    dec = decode_stage(store, videos_dir=syn / "videos", labels_csv=labels, params=params, split_default="test")
    assert dec.record["inputs"]["split_default"] == "test"
    split_of = {r["key"]: r["split"] for r in dec.read_table("windows.parquet").to_pylist()}
    clip_of = {r["key"]: r["clip_id"] for r in dec.read_table("windows.parquet").to_pylist()}
    assert {split_of[k] for k, c in clip_of.items() if c == first_test} == {"test"}  # the default, given
    assert {split_of[k] for k, c in clip_of.items() if c == "unlisted"} == {None}
    aug = augment_stage(store, decode=dec, train_ratio=2.0, test_ratio=2.0, seed=0)
    samples = list(iter_samples(aug))
    by_split = {s: [x for x in samples if x.meta["split"] == s] for s in ("train", "test_concat")}
    assert by_split["train"] and by_split["test_concat"] and len(samples) == sum(map(len, by_split.values()))
    for split, want in (("train", "train"), ("test_concat", "test")):
        for s in by_split[split]:
            assert [split_of[p] for p in s.meta["parents"]] == [want, want], (split, s.meta["parents"])
    parents = {p for s in samples for p in s.meta["parents"]}
    assert not any(clip_of[p] == "unlisted" for p in parents)
