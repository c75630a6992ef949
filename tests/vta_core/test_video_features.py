"""Decoding ahead on threads and encoding across videos: same features as video by video, bad files fail alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from mediafiles import make_clip

from vta_core.media import MediaError
from vta_core.presets import get_preset
from vta_core.video_features import decode_ahead, encode_videos, video_frames
from vta_core.vision import load_vision_encoder

G = get_preset("tiny").geometry


def test_decode_ahead_keeps_input_order_runs_in_parallel_and_yields_errors():
    active, peak = [0], [0]
    lock = threading.Lock()

    def read(path):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05 if path.name != "a" else 0.2)  # the first finishes last
        with lock:
            active[0] -= 1
        if path.name == "bad":
            raise MediaError("unreadable", "bad: not a video")
        return path.name.upper()

    got = list(decode_ahead(["a", "b", "bad", "d"], read, workers=3))
    assert [p.name for p, _ in got] == ["a", "b", "bad", "d"]
    assert [r for _, r in got if isinstance(r, str)] == ["A", "B", "D"]
    assert isinstance(got[2][1], MediaError) and str(got[2][1]) == "bad: not a video"
    assert peak[0] >= 2  # decoding overlapped
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        list(decode_ahead(["a"], read, workers=0))


def test_encode_videos_equals_video_by_video_and_a_bad_file_fails_alone(tmp_path):
    videos = [make_clip(tmp_path / f"v{i}.mp4", seconds=1.0 + 0.5 * i, size="64x48", audio_rate=None) for i in range(3)]
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    paths = [videos[0], tmp_path / "broken.mp4", videos[1], videos[2]]
    enc = load_vision_encoder("pixels:4")
    got = list(encode_videos(paths, encoder=enc, geometry=G, workers=2, batch_frames=6))
    assert [p for p, _ in got] == paths
    assert isinstance(got[1][1], MediaError) and "broken.mp4" in str(got[1][1])
    for path, emb in (got[0], got[2], got[3]):
        expect = enc.encode_frames(video_frames(path, geometry=G)[0])
        assert emb.shape == expect.shape and np.array_equal(emb, expect)
    assert [len(e) for _, e in (got[0], got[2], got[3])] == [4, 6, 8]  # floor(seconds · 4 fps)
