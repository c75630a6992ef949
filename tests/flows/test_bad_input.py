"""Real-world broken input through `vta ingest`: every input is exactly one manifest row with a
specific error_type (or a correct ok row), the flow completes, and every good clip in the batch is
decoded exactly as it is on its own and reaches the training shards."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mediafiles import bad_input_corpus, two_hour_clip
from procs import VTA, vta_env

import vta_core.media as media
from stages.decode import DecodeParams, decode_clip, decode_stage
from storage import ArtifactStore
from storage.tar import read_tar
from vta_core.labels import clip_id_for
from vta_core.media import MediaError
from vta_core.presets import get_preset

G = get_preset("tiny").geometry
PARAMS = DecodeParams.from_geometry(G, max_windows=1)


def tar_members(art) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for name in art.record["files"]:
        if name.endswith(".tar"):
            out.update(read_tar(Path(art.file(name)).read_bytes()))
    return out


def test_bad_input_corpus_every_input_accounted_for(tmp_path):
    videos = tmp_path / "videos"
    corpus = bad_input_corpus(videos)
    expected = {clip_id_for(Path(name).stem): err for name, err in corpus.items()}
    assert len(expected) == len(corpus)  # distinct clip ids
    root = tmp_path / "root"
    proc = subprocess.run([*VTA, "ingest", str(videos), "--root", str(root), "--preset",
                           "tiny", "--max-windows", "1", "--no-filter", "--json"],
                          capture_output=True, text=True, env=vta_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    stages = {s["stage"]: s for s in result["stages"]}
    assert list(stages)[-1] == "shards"  # the flow completed, every stage committed

    rows = pq.read_table(Path(stages["decode"]["path"]) / "manifest.parquet").to_pylist()
    assert sorted(r["clip_id"] for r in rows) == sorted(expected)  # exactly one row per input
    for r in rows:
        want = expected[r["clip_id"]]
        got = r["error_type"] if r["status"] == "failed" else None
        assert got == want, (r["clip_id"], r["status"], r["error_type"], r["error_message"])
        if want:
            assert r["error_message"], r["clip_id"]
    ok = {cid for cid, err in expected.items() if err is None}
    by_id = {r["clip_id"]: r for r in rows}
    assert by_id["two_hours"]["duration_s"] > 7199 and by_id["two_hours"]["n_windows"] == 1
    assert by_id["octo_71"]["audio_channels"] == 8 and by_id["pixel_1x1"]["width"] == 1
    assert by_id["uhd_4k"]["width"] == 3840 and by_id["phone_rotated"]["rotation"] in (90, -90, 270)

    # every good clip decodes exactly as it does alone, and reaches the shards
    alone = tmp_path / "alone"
    alone.mkdir()
    for p in videos.iterdir():
        if clip_id_for(p.stem) in ok:
            shutil.copyfile(p, alone / p.name)
    solo = decode_stage(ArtifactStore(str(tmp_path / "solo")), videos_dir=alone, params=PARAMS)
    batch, single = tar_members(ArtifactStore(str(root)).resolve(stages["decode"]["ref"])), tar_members(solo)
    assert sorted(batch) == sorted(single) == sorted(f"{cid}-w000" for cid in ok)
    for key in single:
        assert batch[key]["frames.npy"] == single[key]["frames.npy"], key
        assert batch[key]["audio.npy"] == single[key]["audio.npy"], key
    shard_rows = pq.read_table(Path(stages["shards"]["path"]) / "manifest.parquet").to_pylist()
    assert {r["clip_id"] for r in shard_rows if r["status"] == "ok"} >= set(single)


def test_per_item_time_limit_fails_only_that_item(tmp_path):
    long = two_hour_clip(tmp_path / "two_hours.mp4")
    every_window = DecodeParams(**{**PARAMS.as_dict(), "max_windows": None})  # 4,800 windows of 2 hours
    with pytest.raises(MediaError) as e:
        decode_clip(long, clip_id="two_hours", params=every_window, timeout_s=1.0)
    assert e.value.error_type == "timeout" and "per-item limit of 1 s" in str(e.value)


def test_unreadable_file_is_permission_denied(tmp_path, monkeypatch):
    f = tmp_path / "locked.mp4"
    f.write_bytes(b"\0" * 64)
    monkeypatch.setattr(media.os, "access", lambda path, mode: False)  # as root, chmod 0 does not stop reads
    with pytest.raises(MediaError) as e:
        media.probe(f)
    assert e.value.error_type == "permission_denied" and str(f) in str(e.value)
