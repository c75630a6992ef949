"""flow: motion curves and flow tokens per decoded window — shapes, padding, onsets, rescaling, reuse."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from stages.decode import DecodeParams, decode_stage
from stages.flow import _window, flow_stage
from storage import ArtifactStore
from storage.shardmap import Sample, iter_samples
from vta_core.opticalflow import MIN_RGB_SCALE_PX, flow_to_rgb, window_flow
from vta_core.synth_world import generate_synth

FPS, SIZE = 10.0, 64
# 2.0-s synthetic clips decoded into 2.5-s windows: 20 valid frames, 5 zero-padded
PARAMS = DecodeParams(fps=FPS, size=SIZE, sample_rate=22050, duration_s=2.5, shard_size=2)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    syn = generate_synth(d, clips=3, seed=3, duration_s=2.0, fps=FPS, size=SIZE)
    store = ArtifactStore(str(tmp_path_factory.mktemp("root")))
    art = decode_stage(store, videos_dir=d / "videos", labels_csv=syn.labels_csv, params=PARAMS)
    assert art.counts["ok"] == 3
    return store, art, pq.read_table(syn.events_parquet).to_pylist()


@pytest.fixture(scope="module")
def flowed(decoded):
    store, art, _ = decoded
    return flow_stage(store, source=art)


def _samples(art):
    return {s.key: s for s in iter_samples(art)}


def test_shapes_dtypes_and_zeros_past_n_frames(decoded, flowed):
    _, art, _ = decoded
    assert flowed.counts == {"ok": 3, "failed": 0, "filtered": 0}
    samples = _samples(flowed)
    assert set(samples) == {s.key for s in iter_samples(art)}
    for s in samples.values():
        n, t = s.meta["n_frames"], PARAMS.num_frames
        assert n == 20 and t == 25
        motion, tokens = s.array("motion.npy"), s.array("flow.npy")
        assert motion.shape == (t,) and motion.dtype == np.float32
        assert tokens.shape == (t, 192) and tokens.dtype == np.float16  # pixels:8 -> 3 * 8 * 8
        assert np.all(motion[:n] > 0) and np.all(motion[n:] == 0)
        assert np.all(np.abs(tokens[:n]).sum(1) > 0) and np.all(tokens[n:] == 0)
        assert motion[0] == motion[1]  # AV-Align trajectory: [m(f0,f1)] + [m(f_{i-1}, f_i)]
    rows = flowed.read_table().to_pylist()
    assert all(r["status"] == "ok" and r["n_frames"] == 20 and r["motion_max"] > 0 for r in rows)
    assert flowed.read_table("samples.parquet").num_rows == 3


@pytest.mark.parametrize("method", ["farneback", "dis", "dis-medium"])
def test_appearing_square_gives_a_spike_at_its_frame(method):
    """Mildly noisy static background; a bright square appears at frame 7 and vanishes at frame 12."""
    rng = np.random.default_rng(0)
    frames = np.full((16, 64, 64, 3), 60.0) + rng.normal(0, 3, (16, 64, 64, 1))
    frames[7:12, 20:40, 24:44] = 230.0
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    motion, _ = window_flow(frames, 14, method=method)
    assert motion.shape == (16,) and np.all(motion[14:] == 0)
    assert motion[7] > 2 * np.median(motion[:14]), np.round(motion, 2)
    top2 = {int(i) for i in np.argsort(motion)[-2:]}
    # Farneback: spikes where it appears and where it vanishes; DIS explains the vanishing flat square
    # as (almost) no motion, but its appearance is the largest motion
    assert top2 == {7, 12} if method == "farneback" else int(np.argmax(motion)) == 7, np.round(motion, 2)


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_motion_peaks_at_synthetic_event_onsets(decoded, method):
    """Objects appearing abruptly in vta_core.synth_world clips give a spike (a strict local maximum well above
    the clip's typical motion) within one frame of their onset. Grey-level flow (as AV-Align) can miss
    an object whose luminance is close to the background's, so most onsets, not all, must be hit."""
    _, art, events = decoded
    hit = total = 0
    for s in iter_samples(art):
        n = s.meta["n_frames"]
        motion, _ = window_flow(s.array("frames.npy"), n, method=method)
        c = motion[:n]
        spikes = {i for i in range(1, n - 1) if c[i] > c[i - 1] and c[i] > c[i + 1] and c[i] > 1.3 * np.median(c)}
        for e in (e for e in events if e["clip_id"] == s.meta["clip_id"]):
            onset = round(e["onset_s"] * FPS)
            hit += any(abs(i - onset) <= 1 for i in spikes)
            total += 1
    assert total >= 8 and hit >= 0.8 * total, (method, hit, total)


def test_deterministic_bytes(decoded, flowed, tmp_path):
    _, art, _ = decoded
    again = flow_stage(ArtifactStore(str(tmp_path)), source=art)
    assert again.version == flowed.version and not again.reused
    assert again.record["files"] == flowed.record["files"]  # sha256 of every shard tar and table


def test_reuse_on_rerun_and_version_params(decoded, flowed):
    store, art, _ = decoded
    rerun = flow_stage(store, source=art)
    assert rerun.reused and rerun.version == flowed.version
    assert flow_stage(store, source=art, flow_size=SIZE).version == flowed.version  # full size = None
    assert flowed.params == {"method": "farneback", "flow_size": None, "encoder": "pixels:8"}
    curve_only = flow_stage(store, source=art, encoder=None, flow_size=32)
    assert curve_only.version != flowed.version and curve_only.params["flow_size"] == 32
    s = next(iter_samples(curve_only))
    assert "motion.npy" in s.members and "flow.npy" not in s.members


def _textured(side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (side, side)).astype(np.float32), (0, 0), 1.5)
    return ((tex - tex.min()) / np.ptp(tex) * 200 + 55).astype(np.uint8)  # (side, side)


def test_rescaled_curve_matches_full_resolution_on_translating_square():
    """A textured square moving (2, 1) px/frame: the curve at flow_size=32 is in 64-px pixels too."""
    tex = _textured(32, seed=0)
    frames = np.full((8, 64, 64, 3), 20, np.uint8)
    for t in range(8):
        frames[t, 6 + t : 38 + t, 4 + 2 * t : 36 + 2 * t] = tex[..., None]
    full, fields = window_flow(frames, 8, method="dis")
    low, low_fields = window_flow(frames, 8, method="dis", flow_size=32)
    assert fields.shape == (8, 64, 64, 2) and low_fields.shape == (8, 32, 32, 2)
    np.testing.assert_allclose(low, full, rtol=0.1)  # without the x2 rescale it would be ~0.5
    # inside the square the flow is the true displacement (2, 1) at both resolutions
    np.testing.assert_allclose(np.median(fields[3, 20:30, 20:30], axis=(0, 1)), [2, 1], atol=0.3)
    np.testing.assert_allclose(np.median(low_fields[3, 10:15, 10:15], axis=(0, 1)), [2, 1], atol=0.3)


@pytest.mark.parametrize("method", ["farneback", "dis", "dis-medium"])
def test_whole_frame_translation_gives_true_speed_at_any_flow_size(method):
    big = cv2.resize(_textured(64, seed=1), (128, 128), interpolation=cv2.INTER_CUBIC)
    frames = np.stack([np.repeat(big[10 + t : 74 + t, 10 + 2 * t : 74 + 2 * t, None], 3, -1) for t in range(6)])
    for flow_size in (None, 32):
        motion, _ = window_flow(frames, 6, method=method, flow_size=flow_size)
        np.testing.assert_allclose(motion, np.sqrt(5), rtol=0.05, err_msg=f"{method} @ {flow_size}")


def test_flow_to_rgb_colour_wheel():
    fields = np.zeros((2, 4, 4, 2), np.float32)
    fields[0, ..., 0] = 3.0  # rightwards: hue 0 (red), full value (largest in the window)
    fields[1, ..., 0] = 1.5  # half as fast: half the value
    rgb = flow_to_rgb(fields)
    assert rgb.shape == (2, 4, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0, 0], [255, 0, 0])
    np.testing.assert_array_equal(rgb[1, 0, 0], [128, 0, 0])
    still = flow_to_rgb(np.full((1, 2, 2, 2), 0.1, np.float32))  # noise-level motion stays dim
    assert still.max() <= round(255 * 0.15 / MIN_RGB_SCALE_PX)
    down = np.zeros((1, 2, 2, 2), np.float32)
    down[..., 1] = 2.0  # downwards (+y in image coordinates): angle 90 deg -> hue 90 deg, yellow-green
    np.testing.assert_array_equal(flow_to_rgb(down)[0, 0, 0], [127, 255, 0])


def test_bad_window_is_a_failed_row_and_bad_params_raise(decoded):
    store, art, _ = decoded
    meta = {"key": "broken-w000", "n_frames": 20}
    bad = Sample("broken-w000", meta, {"frames.npy": b"not an npy", "json": json.dumps(meta).encode()})
    row, members = _window(bad, method="dis", flow_size=None, encoder=None)
    assert row["status"] == "failed" and row["error_type"] == "bad_input" and members == {}
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 32, 32, 3), np.uint8))
    too_many = Sample("x-w000", {"n_frames": 99}, {"frames.npy": buf.getvalue(), "json": b"{}"})
    row, _ = _window(too_many, method="dis", flow_size=None, encoder=None)
    assert row["error_type"] == "bad_input" and "n_frames=99" in row["error_message"]
    with pytest.raises(ValueError, match="optical-flow method 'lk'"):
        flow_stage(store, source=art, method="lk")
    with pytest.raises(ValueError, match="flow_size=128"):
        flow_stage(store, source=art, flow_size=128)
