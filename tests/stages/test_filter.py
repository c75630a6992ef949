"""filter: the paper's data clean on an align manifest; every drop is a row with its reason."""

from __future__ import annotations

import logging

import pytest

from stages.filter import filter_reasons, filter_stage
from storage import ArtifactStore, StageSpec, failed_row, ok_row


def _ok(key: str, av: float | None, clap: float | None, *, label: str | None = "drum", **extra):
    return ok_row(key, source_clip_id=key.split("-")[0], label=label, split="train", shard="shard-00000",
                  av_align=av, av_align_reason=None if av is not None else "no peaks in audio or video",
                  clap=clap, clap_reason=None if clap is not None else "no label", **extra)  # fmt: skip


ROWS = [
    _ok("keep-w000", 0.5, 0.6),
    _ok("lowav-w000", 0.12, 0.6),
    _ok("edgeav-w000", 0.2, 0.6),  # AV-Align > 0.2 is required: 0.2 itself is dropped
    _ok("lowclap-w000", 0.5, 0.21),
    _ok("both-w000", 0.1, 0.05),
    _ok("undefined-w000", None, 0.6),
    _ok("nolabel-w000", 0.5, None, label=None),
    failed_row("gone-w000", "source_missing", "source file is gone: /x/gone.mp4", shard="shard-00000"),
]


def fake_align(store: ArtifactStore, rows, *, clap_available: bool, tag: str = "a", speech_available: bool = False):
    spec = StageSpec("align", {"tag": tag, "clap": clap_available, "speech": speech_available}, {}, "1")
    with store.writer(spec) as w:
        reason = None if clap_available else "no CLAP checkpoint configured"
        speech = {"available": speech_available, "reason": None if speech_available else "no speech detector"}
        return w.commit(rows=rows, extra={"clap": {"available": clap_available, "reason": reason}, "speech": speech})


def _rows(art):
    return {r["clip_id"]: r for r in art.read_table().to_pylist()}


def test_thresholds_and_reasons_with_clap(tmp_path):
    store = ArtifactStore(str(tmp_path))
    art = filter_stage(store, align=fake_align(store, ROWS, clap_available=True))
    rows = _rows(art)
    assert len(rows) == len(ROWS)
    expected = {
        "keep-w000": ("ok", None),
        "lowav-w000": ("filtered", "av_align 0.12 <= 0.2"),
        "edgeav-w000": ("filtered", "av_align 0.2 <= 0.2"),
        "lowclap-w000": ("filtered", "clap 0.21 <= 0.3"),
        "both-w000": ("filtered", "av_align 0.1 <= 0.2; clap 0.05 <= 0.3"),
        "undefined-w000": ("filtered", "av_align undefined: no peaks in audio or video"),
        "nolabel-w000": ("ok", None),
        "gone-w000": ("failed", "source_missing: source file is gone: /x/gone.mp4"),
    }
    for key, (status, message) in expected.items():
        assert (rows[key]["status"], rows[key]["error_message"]) == (status, message), key
    assert rows["gone-w000"]["error_type"] == "align_failed" and rows["lowav-w000"]["error_type"] == "filtered"
    assert rows["keep-w000"]["clap_checked"] is True and rows["nolabel-w000"]["clap_checked"] is False
    assert art.counts == {"ok": 2, "failed": 1, "filtered": 5}
    assert art.record["clap_used"] is True and art.record["judged_without_clap"] == 1
    kept = art.read_table("kept.parquet").to_pylist()
    assert [k["key"] for k in kept] == ["keep-w000", "nolabel-w000"]
    assert kept[0] == {"key": "keep-w000", "shard": "shard-00000", "source_clip_id": "keep", "label": "drum",
                       "split": "train", "av_align": 0.5, "clap": 0.6, "speech": None}  # fmt: skip


def test_without_clap_filters_on_av_align_alone_and_says_so(tmp_path, caplog):
    store = ArtifactStore(str(tmp_path))
    rows = [_ok("a-w000", 0.5, None), _ok("b-w000", 0.1, None), _ok("c-w000", 0.3, None)]
    with caplog.at_level(logging.WARNING, logger="vta.filter"):
        art = filter_stage(store, align=fake_align(store, rows, clap_available=False))
    assert art.record["clap_used"] is False and art.record["reason"] == "no CLAP checkpoint configured"
    assert "CLAP unavailable" in caplog.text and "AV-Align alone" in caplog.text
    out = _rows(art)
    assert out["a-w000"]["status"] == "ok" and out["c-w000"]["status"] == "ok"
    assert out["b-w000"]["error_message"] == "av_align 0.1 <= 0.2"
    # CLAP values are never used when the align artifact had no CLAP model
    stale = [_ok("d-w000", 0.5, 0.01)]
    art2 = filter_stage(store, align=fake_align(store, stale, clap_available=False, tag="b"))
    assert _rows(art2)["d-w000"]["status"] == "ok" and art2.record["judged_without_clap"] == 1


def test_thresholds_are_parameters(tmp_path):
    store = ArtifactStore(str(tmp_path))
    align = fake_align(store, ROWS, clap_available=True)
    default = filter_stage(store, align=align)
    assert filter_stage(store, align=align).reused
    loose = filter_stage(store, align=align, clap_threshold=0.0, av_align_threshold=0.0)
    assert loose.version != default.version
    assert loose.params == {"clap_threshold": 0.0, "av_align_threshold": 0.0, "speech_threshold": 0.5}
    assert loose.counts == {"ok": 6, "failed": 1, "filtered": 1}  # only the undefined score is dropped
    with pytest.raises(ValueError, match="clap_threshold"):
        filter_stage(store, align=align, clap_threshold=float("nan"))


def test_filter_reasons_alone():
    row = {"av_align": 0.25, "clap": 0.31}
    assert filter_reasons(row, clap_used=True, clap_threshold=0.3, av_align_threshold=0.2) == []
    assert filter_reasons(row, clap_used=True, clap_threshold=0.31, av_align_threshold=0.25) == [
        "av_align 0.25 <= 0.25", "clap 0.31 <= 0.31",
    ]  # fmt: skip
    assert filter_reasons({"av_align": None, "clap": None}, clap_used=False, clap_threshold=0.3,
                          av_align_threshold=0.2) == ["av_align undefined: no score"]  # fmt: skip


def test_empty_align_artifact(tmp_path):
    store = ArtifactStore(str(tmp_path))
    art = filter_stage(store, align=fake_align(store, [], clap_available=True))
    assert art.counts == {"ok": 0, "failed": 0, "filtered": 0}
    assert art.read_table("kept.parquet").num_rows == 0


def test_speech_share_over_the_threshold_is_filtered_with_its_reason(tmp_path, caplog):
    store = ArtifactStore(str(tmp_path))
    rows = [_ok("talk-w000", 0.5, 0.6, speech=0.89), _ok("edge-w000", 0.5, 0.6, speech=0.5),
            _ok("quiet-w000", 0.5, 0.6, speech=0.0), _ok("both-w000", 0.1, 0.6, speech=0.75)]
    art = filter_stage(store, align=fake_align(store, rows, clap_available=True, speech_available=True))
    got = {k: (r["status"], r["error_message"]) for k, r in _rows(art).items()}
    assert got == {"talk-w000": ("filtered", "speech 0.89 > 0.5"), "edge-w000": ("ok", None),
                   "quiet-w000": ("ok", None), "both-w000": ("filtered", "av_align 0.1 <= 0.2; speech 0.75 > 0.5")}
    assert art.record["speech_used"] is True and art.params["speech_threshold"] == 0.5
    keep_all = filter_stage(store, align=fake_align(store, rows, clap_available=True, speech_available=True),
                            speech_threshold=1.0)
    assert keep_all.version != art.version and keep_all.counts == {"ok": 3, "failed": 0, "filtered": 1}
    with caplog.at_level(logging.WARNING, logger="vta.filter"):
        none = filter_stage(store, align=fake_align(store, ROWS, clap_available=True, tag="no-vad"))
    assert none.record["speech_used"] is False and "speech is not checked" in caplog.text
