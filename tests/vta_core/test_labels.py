"""labels CSV: a row without a split is an error naming the clip, unless a split default is given."""

from __future__ import annotations

import pytest

from vta_core.labels import read_labels


def test_missing_split_is_an_error_naming_the_clip(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("ytid,start_seconds,label,split\nclipA,0,dog,train\nclipB,1.5,cat\nclipC,0,bird,  \n")
    with pytest.raises(ValueError, match=r"labels.csv:3: clip clipB has no split \(give one, or --split-default\)"):
        read_labels(path)
    labels = read_labels(path, split_default="test")
    assert {k: v.split for k, v in labels.items()} == {"clipA": "train", "clipB": "test", "clipC": "test"}
    assert labels["clipB"].start_seconds == 1.5 and labels["clipB"].label == "cat"
    path.write_text("clipA,0,dog,train\nclipB,0,cat,test\n")  # every row has its split: no default needed
    assert {k: v.split for k, v in read_labels(path).items()} == {"clipA": "train", "clipB": "test"}
    with pytest.raises(ValueError, match="split_default must be a split name"):
        read_labels(path, split_default=" ")


def test_a_window_without_a_split_is_training_data_only_without_any_labels_csv():
    from vta_core.labels import sample_split

    assert sample_split("test", labelled=True) == "test"
    assert sample_split("train", labelled=False) == "train"
    assert sample_split(None, labelled=False) == "train"  # `vta ingest DIR` without --labels: all training data
    assert sample_split(None, labelled=True) is None  # a video missing from the labels CSV: never training data
    assert sample_split("", labelled=True) is None
