import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from vta_core.checkpoint import load_checkpoint
from vta_core.presets import build_model, get_preset
from vta_core.train import latest_checkpoint, train

GEOM = get_preset("tiny").geometry


class Batches:
    """Deterministic data: batch k is a pure function of k, and iteration can start at any k."""

    def __init__(self, n=5, text=False):
        self.n, self.text = n, text

    def batch(self, k):
        g = torch.Generator().manual_seed(100 + k)
        b = {"latents": torch.randn(2, *GEOM.latent_shape, generator=g),
             "vision": torch.randn(2, GEOM.num_frames, 32, generator=g)}
        if self.text:
            b["text"] = torch.randn(2, 1, 6, generator=g)
        return b

    def __iter__(self):
        return (self.batch(k) for k in range(self.n))

    def iter_from(self, k):
        return (self.batch(j) for j in range(k % self.n, self.n))


FRAMES = torch.randn(40, 32, generator=torch.Generator().manual_seed(3)) * 2.0 + 0.5  # for feature_norm
KW = dict(geometry=GEOM, lr=1e-3, warmup=2, lr_schedule="linear", ema_decay=0.99, grad_clip=0.5, seed=7,
          progress=False, cpu=True, feature_frames=FRAMES)


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    full = train(build_model("tiny", seed=0), Batches(), out_dir=tmp_path / "a", steps=8, ckpt_every=4, **KW)
    first = train(build_model("tiny", seed=0), Batches(), out_dir=tmp_path / "b", steps=8, ckpt_every=4, **KW)
    assert first.losses == full.losses  # same seed, same run
    resumed = train(build_model("tiny", seed=123), Batches(), out_dir=tmp_path / "c", steps=8, ckpt_every=4,
                    resume_from=tmp_path / "a" / "step_0000004", **KW)
    assert resumed.losses == full.losses[4:]
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "a" / "step_0000008" / name))
        c = load_file(str(tmp_path / "c" / "step_0000008" / name))
        assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    assert latest_checkpoint(tmp_path / "a").name == "step_0000008"
    assert list((tmp_path / "a" / "train").rglob("events.out.tfevents*"))  # TensorBoard scalars


def test_resume_without_iter_from_skips_batches(tmp_path):
    class Plain:
        def __init__(self):
            self.inner = Batches()

        def __iter__(self):
            return iter(self.inner)

    full = train(build_model("tiny"), Plain(), out_dir=tmp_path / "a", steps=7, ckpt_every=3, **KW)
    resumed = train(build_model("tiny"), Plain(), out_dir=tmp_path / "b", steps=7, ckpt_every=3,
                    resume_from=tmp_path / "a" / "step_0000003", **KW)
    assert resumed.losses == full.losses[3:]


def test_modes_audio_then_finetune(tmp_path):
    model = build_model("tiny", text_dim=6)
    pre = train(model, Batches(text=True), out_dir=tmp_path / "pre", steps=3, ckpt_every=10, mode="audio", **KW)
    assert pre.checkpoint.name == "step_0000003"
    ck = load_checkpoint(pre.checkpoint)
    assert ck.config["training"]["mode"] == "audio" and ck.config["training"]["lr_schedule"] == "linear"
    ft_model = build_model("tiny", text_dim=6, seed=9)
    ft = train(ft_model, Batches(text=True), out_dir=tmp_path / "ft", steps=2, ckpt_every=10, mode="finetune",
               init_checkpoint=pre.checkpoint, **KW)
    assert ft.step == 2 and len(ft.losses) == 2
    with pytest.raises(ValueError, match="needs init_checkpoint"):
        train(build_model("tiny"), Batches(), out_dir=tmp_path / "x", steps=1, mode="finetune", **KW)
    with pytest.raises(ValueError, match="does not fit the model"):
        train(build_model("tiny"), Batches(), out_dir=tmp_path / "y", steps=1, mode="finetune",
              init_checkpoint=pre.checkpoint, **KW)
    with pytest.raises(ValueError, match="mode must be one of"):
        train(build_model("tiny"), Batches(), out_dir=tmp_path / "z", steps=1, mode="joint", **KW)


def test_feature_statistics_are_set_once_saved_and_kept_by_finetuning(tmp_path):
    kw = {k: v for k, v in KW.items() if k != "feature_frames"}
    with pytest.raises(ValueError, match="feature_norm=True.*pass feature_frames"):
        train(build_model("tiny"), Batches(), out_dir=tmp_path / "x", steps=1, mode="video", **kw)
    audio = train(build_model("tiny"), Batches(), out_dir=tmp_path / "a", steps=1, mode="audio", **kw)
    assert load_checkpoint(audio.checkpoint).model.conditioner.needs_feature_stats  # audio mode: no stats needed
    video = train(build_model("tiny"), Batches(), out_dir=tmp_path / "v", steps=2, mode="video", **KW)
    cond = load_checkpoint(video.checkpoint).model.conditioner
    assert int(cond.vision_stats_frames) == 40
    torch.testing.assert_close(cond.vision_mean, FRAMES.mean(0))
    torch.testing.assert_close(cond.vision_std, FRAMES.std(0))
    other = FRAMES * 10.0  # finetuning from a checkpoint with statistics keeps them
    ft = train(build_model("tiny"), Batches(), out_dir=tmp_path / "f", steps=1, mode="finetune",
               init_checkpoint=video.checkpoint, **{**KW, "feature_frames": other})
    torch.testing.assert_close(load_checkpoint(ft.checkpoint).model.conditioner.vision_std, FRAMES.std(0))


def test_the_loss_aligns_frames_with_the_training_geometry(tmp_path):
    """train() hands its geometry to the loss: the same batches at another frame rate condition differently."""
    kw = {**KW, "geometry": dataclasses.replace(GEOM, fps=2 * GEOM.fps)}
    a = train(build_model("tiny"), Batches(), out_dir=tmp_path / "a", steps=1, **KW)
    b = train(build_model("tiny"), Batches(), out_dir=tmp_path / "b", steps=1, **kw)
    assert a.losses != b.losses
