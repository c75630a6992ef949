"""align: AV-Align on the original files per decoded window, CLAP where labels exist, failures as rows."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from mediafiles import DATA

from stages import align as align_mod
from stages.align import NO_CLAP, align_stage
from stages.decode import DecodeParams, decode_stage
from stages.filter import filter_stage
from storage import ArtifactStore
from storage.hashing import file_sha256
from storage.shardmap import iter_samples
from vta_core.av_align import av_align
from vta_core.synth_world import generate_synth

PARAMS = DecodeParams(fps=10.0, size=32, sample_rate=16000, duration_s=2.0, shard_size=2)


def make_inputs(tmp_path):
    """3 synthetic clips of 4 s (2 windows each, labelled) + a real 1.2 s clip (1 padded window, no label)."""
    synth = generate_synth(tmp_path / "synth", clips=3, seed=5, duration_s=4.0, size=64, fps=25.0)
    shutil.copy(DATA / "debian_imageio_realshort.mp4", synth.out_dir / "videos")
    return synth


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    synth = make_inputs(tmp)
    store = ArtifactStore(str(tmp / "root"))
    art = decode_stage(store, videos_dir=synth.out_dir / "videos", labels_csv=synth.labels_csv, params=PARAMS)
    return store, art


@pytest.fixture(scope="module")
def aligned(decoded):
    store, dec = decoded
    return store, dec, align_stage(store, source=dec)


def _rows(art):
    return {r["clip_id"]: r for r in art.read_table().to_pylist()}


def test_one_row_per_window_with_scores_from_the_original_files(aligned):
    _, dec, art = aligned
    windows = dec.read_table("windows.parquet").to_pylist()
    rows = _rows(art)
    assert set(rows) == {w["key"] for w in windows} and len(rows) == 7
    assert art.counts == {"ok": 7, "failed": 0, "filtered": 0}
    for w in windows:
        r = rows[w["key"]]
        direct = av_align(Path(dec.record["source"]) / w["source_path"], start_s=w["start_s"], duration_s=PARAMS.duration_s)
        assert r["av_align"] == direct["av_align"] and r["video_peaks"] == direct["video_peaks"]
        assert r["audio_peaks"] == direct["audio_peaks"] and r["matches"] == direct["matches"]
        assert r["clap"] is None and r["clap_reason"] == NO_CLAP
    assert rows["synth5_00000-w001"]["start_s"] == 2.0 and rows["synth5_00000-w001"]["label"]
    assert rows["debian_imageio_realshort-w000"]["fps"] == pytest.approx(30.02, abs=0.01)
    assert art.record["clap"] == {"available": False, "reason": NO_CLAP}
    assert art.params["clap_checkpoint_sha256"] is None
    payload = {s.key: json.loads(s.members["json"]) for s in iter_samples(art)}
    assert set(payload) == set(rows)
    first = payload["synth5_00001-w000"]
    assert len(first["video_peak_times"]) == first["video_peaks"] and first["source_path"].endswith(".mp4")


def test_reuse_and_byte_identical_rerun(aligned, tmp_path):
    store, dec, art = aligned
    again = align_stage(store, source=dec)
    assert again.reused and again.version == art.version
    other = ArtifactStore(str(tmp_path / "other"))
    # same decode artifact copied into a fresh root -> same align version, same bytes
    shutil.copytree(dec.path, tmp_path / "other" / "decode" / dec.version)
    fresh = align_stage(other, source=other.get("decode", dec.version))
    assert fresh.version == art.version and not fresh.reused
    for name in art.record["files"]:
        assert (tmp_path / "other" / "align" / art.version / name).read_bytes() == open(f"{art.path}/{name}", "rb").read()


def test_missing_source_is_a_failed_row_not_a_crash(tmp_path):
    synth = make_inputs(tmp_path)
    store = ArtifactStore(str(tmp_path / "root"))
    dec = decode_stage(store, videos_dir=synth.out_dir / "videos", labels_csv=synth.labels_csv, params=PARAMS)
    (synth.out_dir / "videos" / "synth5_00002.mp4").unlink()
    art = align_stage(store, source=dec)
    rows = _rows(art)
    for key in ("synth5_00002-w000", "synth5_00002-w001"):
        assert rows[key]["status"] == "failed" and rows[key]["error_type"] == "source_missing"
        assert "synth5_00002.mp4" in rows[key]["error_message"]
    assert art.counts == {"ok": 5, "failed": 2, "filtered": 0}
    filt = filter_stage(store, align=art, av_align_threshold=-1.0)  # failures stay visible downstream
    assert _rows(filt)["synth5_00002-w000"]["error_type"] == "align_failed"


class FakeClap:
    """Stands in for ClapScorer (the real one is tested in tests/vta_core/test_clap.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[str]]] = []

    def score(self, audio: np.ndarray, sample_rate: int, texts: list[str]) -> np.ndarray:
        self.calls.append((len(audio), sample_rate, list(texts)))
        return np.array([0.5 if t in ("drum", "bell") else 0.1 for t in texts])


def test_clap_scores_labelled_windows_and_enters_the_version(decoded, tmp_path, monkeypatch, caplog):
    store, dec = decoded
    fake = FakeClap()
    loaded = []
    monkeypatch.setattr(align_mod, "load_clap", lambda path, amodel: loaded.append(path) or fake)
    ckpt = tmp_path / "clap.pt"
    ckpt.write_bytes(b"weights v1")
    art = align_stage(store, source=dec, clap_checkpoint=ckpt)
    assert loaded == [ckpt] and art.record["clap"] == {"available": True, "reason": None}
    assert art.params["clap_checkpoint_sha256"] == file_sha256(ckpt)
    rows = _rows(art)
    assert rows["debian_imageio_realshort-w000"]["clap"] is None
    assert rows["debian_imageio_realshort-w000"]["clap_reason"] == "no label"
    labelled = [r for r in rows.values() if r["label"]]
    assert len(labelled) == 6 and all(r["clap"] in (0.5, 0.1) and r["clap_reason"] is None for r in labelled)
    # the window of the original audio track (synth: 22,050 Hz), 2 s long
    assert {(n, sr) for n, sr, _ in fake.calls} == {(44100, 22050)}
    # the checkpoint's content, not its path, is the identity
    ckpt.write_bytes(b"weights v2")
    assert align_stage(store, source=dec, clap_checkpoint=ckpt).version != art.version
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        align_stage(store, source=dec, clap_checkpoint=tmp_path / "nowhere.pt")
    # the filter then uses both scores
    with caplog.at_level(logging.WARNING, logger="vta.filter"):
        filt = filter_stage(store, align=art, av_align_threshold=-1.0)
    frows = _rows(filt)
    for key, r in rows.items():
        if r["clap"] == 0.1:
            assert frows[key]["status"] == "filtered" and frows[key]["error_message"] == "clap 0.1 <= 0.3"
        else:
            assert frows[key]["status"] == "ok"
    assert filt.record["clap_used"] is True and filt.record["judged_without_clap"] == 1
    assert "no CLAP score" in caplog.text


def test_align_then_filter_defaults_without_clap(aligned, caplog):
    store, _, art = aligned
    with caplog.at_level(logging.WARNING, logger="vta.filter"):
        filt = filter_stage(store, align=art)
    assert filt.record["clap_used"] is False and filt.record["reason"] == NO_CLAP
    assert "AV-Align alone" in caplog.text
    rows, arows = _rows(filt), _rows(art)
    for key, r in rows.items():
        score = arows[key]["av_align"]
        assert r["status"] == ("ok" if score is not None and score > 0.2 else "filtered"), (key, score)
    kept = filt.read_table("kept.parquet").to_pylist()
    assert [k["key"] for k in kept] == sorted(k for k, r in rows.items() if r["status"] == "ok")
    assert filt.counts["ok"] + filt.counts["filtered"] == 7


def test_rejects_a_non_decode_source(aligned):
    store, _, art = aligned
    with pytest.raises(ValueError, match="duration_s"):
        align_stage(store, source=art)


def _speak_into(video: Path, out: Path, tmp: Path) -> None:
    """``video`` with real speech (Debian's espeak-ng) mixed into its audio track over the whole clip."""
    import subprocess

    from vta_core.media import ffmpeg_exe

    wav = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-s", "190", "-w", str(wav), "The quick brown fox jumps over the lazy dog, "
                    "and then it speaks again, sentence after sentence, for the whole clip."], check=True)
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video), "-i", str(wav), "-filter_complex",
                    "[1:a]volume=2.0[s];[0:a][s]amix=inputs=2:duration=first:normalize=0[a]", "-map", "0:v",
                    "-map", "[a]", "-c:v", "copy", "-c:a", "aac", str(out)], check=True)


def test_speech_share_flags_an_espeak_clip_and_passes_the_synthetic_ones(aligned, tmp_path):
    """Silero VAD (the silero-vad package's ONNX model) on every window; the filter drops talking."""
    import shutil as sh

    from vta_core.speech import silero_weights

    if silero_weights() is None:
        pytest.skip("the silero-vad package (Silero VAD weights) is not installed")
    store, dec, art = aligned
    assert art.record["speech"] == {"available": True, "reason": None} and len(art.params["speech_vad_sha256"]) == 64
    rows = _rows(art)
    synth = {k: r["speech"] for k, r in rows.items() if k.startswith("synth")}
    assert len(synth) == 6 and max(synth.values()) < 0.1, synth  # engine noises, bells and tones are not speech
    if sh.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/ensure-test-tools installs it as root)")
    videos = tmp_path / "videos"
    videos.mkdir()
    src = Path(dec.record["source"])
    sh.copy(src / "synth5_00001.mp4", videos / "quiet.mp4")
    _speak_into(src / "synth5_00001.mp4", videos / "talking.mp4", tmp_path)
    root = ArtifactStore(str(tmp_path / "root"))
    dec2 = decode_stage(root, videos_dir=videos, labels_csv=None, params=PARAMS)
    talk = align_stage(root, source=dec2)
    scores = {k: r["speech"] for k, r in _rows(talk).items()}
    assert min(v for k, v in scores.items() if k.startswith("talking")) > 0.5, scores
    assert max(v for k, v in scores.items() if k.startswith("quiet")) < 0.1, scores
    filt = filter_stage(root, align=talk, av_align_threshold=-1.0)
    got = _rows(filt)
    assert all(got[k]["status"] == "ok" for k in got if k.startswith("quiet"))
    for k in (k for k in got if k.startswith("talking")):
        assert got[k]["status"] == "filtered" and got[k]["error_message"].startswith("speech 0.")
        assert got[k]["error_message"].endswith("> 0.5")
