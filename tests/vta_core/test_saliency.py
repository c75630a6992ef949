"""Saliency maps: the gradient through the frozen encoder is the real one, the FFmpeg frame mapping and the box
shares are exact, and an untrained model's map is deterministic."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_checkpoints import save_tiny_checkpoint

from vta_core import saliency as S
from vta_core.media import ffmpeg_exe, read_frames
from vta_core.pipeline import VTAPipeline
from vta_core.synth_world import generate_synth


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> VTAPipeline:
    torch.set_num_threads(1)
    return VTAPipeline.from_checkpoint(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt")))


def _frames(pipe: VTAPipeline, seed: int = 0) -> np.ndarray:
    g = pipe.geometry
    return np.random.default_rng(seed).integers(0, 256, (g.num_frames, g.frame_size, g.frame_size, 3), dtype=np.uint8)


def test_the_map_is_the_gradient_of_the_score(pipe: VTAPipeline) -> None:
    frames, seconds = _frames(pipe), pipe.geometry.duration_s
    latent = S.generated_latent(pipe, frames, seconds, seed=0, steps=2, sampler="ddim", guidance=3.0)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double().div(255.0).float().requires_grad_(True)
    score = S.saliency_score(pipe, x, seconds, latent=latent, seed=0)
    (grad,) = torch.autograd.grad(score, x)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    eps = 1e-2
    with torch.no_grad():  # central difference along a random direction
        up = S.saliency_score(pipe, x + eps * direction, seconds, latent=latent, seed=0)
        down = S.saliency_score(pipe, x - eps * direction, seconds, latent=latent, seed=0)
    numeric, analytic = float(up - down) / (2 * eps), float((grad * direction).sum())
    assert abs(numeric - analytic) <= 0.05 * abs(analytic) + 1e-9, (numeric, analytic)

    m = S.saliency_map(pipe, frames, seconds, latent=latent, seed=0)
    assert m.shape == frames.shape[:3] and m.dtype == np.float32 and (m >= 0).all() and m.sum() > 0
    np.testing.assert_allclose(m, grad.abs().sum(1).numpy(), rtol=1e-5, atol=1e-12)
    # pixels:4 averages 8x8 cells of the 32 px frames: the gradient is constant within a cell
    cells = m.reshape(len(m), 4, 8, 4, 8)
    assert np.allclose(cells, cells.mean(axis=(2, 4), keepdims=True), rtol=1e-4, atol=1e-12)
    assert np.array_equal(m, S.saliency_map(pipe, frames, seconds, latent=latent, seed=0))  # deterministic
    other = S.generated_latent(pipe, _frames(pipe, 1), seconds, seed=0, steps=2, sampler="ddim", guidance=3.0)
    assert not np.allclose(m, S.saliency_map(pipe, frames, seconds, latent=other, seed=0))  # depends on the audio


def test_a_model_that_reads_no_frames_has_no_saliency(pipe: VTAPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipe.model, "config", pipe.model.config.__class__(**{**pipe.model.config.__dict__,
                                                                           "vision_tokens": False}))
    assert "does not read frames" in S.unavailable_reason(pipe)
    with pytest.raises(ValueError, match="no saliency"):
        S.saliency_map(pipe, _frames(pipe), 1.0, latent=torch.zeros(1), seed=0)


@pytest.mark.parametrize("fps_out", [10.0, 4.0])
def test_fps_filter_sources_match_ffmpeg(tmp_path: Path, fps_out: float) -> None:
    n_in, fps_in = 50, 25.0
    frames = np.zeros((n_in, 32, 32, 3), np.uint8)
    frames[:] = (np.arange(n_in) * 5)[:, None, None, None]  # frame j has grey level 5 j
    video = tmp_path / "ramp.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "32x32",
                    "-r", f"{fps_in:g}", "-i", "-", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", str(video)],
                   input=frames.tobytes(), check=True)
    out = read_frames(video, fps=fps_out, size=16)
    seen = [round(float(f.mean()) / 5) for f in out]
    assert seen == S.fps_filter_sources(len(out), fps_out=fps_out, n_in=n_in, fps_in=fps_in)


def test_box_shares_are_exact() -> None:
    T, size = 3, 20
    boxes = [[("sounding", 0.0, 0.0, 10.0, 10.0), ("ball", 10.0, 10.0, 15.0, 15.0)], [("ball", 10.0, 10.0, 15.0, 15.0)],
             [("ball", 10.0, 10.0, 15.0, 15.0)]]
    uniform = S.box_shares(np.ones((T, size, size)), boxes)
    assert uniform["sounding"]["frames"] == 1 and uniform["sounding"]["lift"] == pytest.approx(1.0)
    assert uniform["ball"]["share"] == pytest.approx(25 / 400) and uniform["ball"]["lift"] == pytest.approx(1.0)
    assert uniform["silent"]["frames"] == 0 and uniform["silent"]["lift"] is None
    inside = np.zeros((T, size, size))
    inside[:, :10, :10] = 1.0  # all mass on the sounding object's box (also on frames where it is gone)
    s = S.box_shares(inside, boxes)
    assert s["sounding"]["share"] == pytest.approx(1.0) and s["sounding"]["lift"] == pytest.approx(4.0)
    assert s["ball"]["share"] == 0.0
    half = S.box_shares(np.ones((1, size, size)), [[("sounding", 0.5, 0.0, 1.5, 1.0)]])  # half pixels count half
    assert half["sounding"]["area_share"] == pytest.approx(1 / 400)

    summary = S.summarise({"generated": [s] * 4, "mismatched_video": [uniform] * 4}, resamples=50)
    g = summary["generated"]
    assert g["n_clips"] == 4 and g["sounding"]["lift"] == pytest.approx(4.0)
    assert g["sounding"]["lift_lo"] == pytest.approx(4.0) and g["sounding"]["lift_hi"] == pytest.approx(4.0)
    assert g["paired"]["mismatched_video"]["sounding"]["diff"] == pytest.approx(3.0)


def test_clip_boxes_follow_the_decoded_frames(tmp_path: Path) -> None:
    synth = tmp_path / "synth"
    generate_synth(synth, clips=1, seed=4, duration_s=2.0, fps=25.0, size=64)
    video = next((synth / "videos").iterdir())
    frames = read_frames(video, fps=10.0, size=32)
    boxes = S.clip_boxes(synth, video.stem, n_frames=len(frames), fps=10.0, frame_size=32)
    assert len(boxes) == len(frames) and all(any(k == "ball" for k, *_ in b) for b in boxes)
    for f, frame_boxes in zip(frames.astype(np.float32), boxes, strict=True):
        for kind, x0, y0, x1, y1 in frame_boxes:
            if kind == "ball":
                continue
            cx, cy = round((x0 + x1) / 2), round((y0 + y1) / 2)
            centre = f[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            assert centre.max() - centre.min() > 60, (kind, centre)  # a saturated class colour, not the dull background
