"""The fast path (vta_core.accel) against the eager fp32 path at the tiny preset, on CPU.

torch.compile runs with the ``aot_eager`` backend here: the same Dynamo capture, guards and AOT graph as
inductor (what would break on our wrappers: the Condition input, attribute forwarding, one graph per
shape bucket), without minutes of C++ code generation on a 2-core CI machine; bench/gpu.py runs inductor.
"""

from __future__ import annotations

import pytest
import torch

from vta_core.accel import Acceleration, accelerate_denoiser
from vta_core.presets import build_model, get_preset
from vta_core.sampling import sample_latents
from vta_core.train import latest_checkpoint, train

GEOMETRY = get_preset("tiny").geometry
COMPILED = Acceleration(channels_last=True, compile=True, compile_backend="aot_eager")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.std())


@pytest.fixture(scope="module")
def vision() -> torch.Tensor:
    return torch.randn(2, GEOMETRY.num_frames, 48, generator=torch.Generator().manual_seed(3))


def _latents(model, vision, *, seeds=(0, 1), precision="fp32", steps=4) -> torch.Tensor:
    return sample_latents(model, {"vision": vision}, geometry=GEOMETRY, seeds=list(seeds), steps=steps,
                          precision=precision)


def test_compiled_channels_last_denoiser_equals_eager_and_the_tolerance_tells_seeds_apart(vision):
    eager = build_model("tiny", seed=0, vision_dim=48).eval()
    ref = _latents(eager, vision)
    fast_model = build_model("tiny", seed=0, vision_dim=48).eval()
    fast = accelerate_denoiser(fast_model, COMPILED)
    assert fast is not fast_model and fast.config == fast_model.config  # attributes forward to the model
    assert fast_model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    got = _latents(fast, vision)
    assert _rel(got, ref) < 1e-4
    other_seed = _latents(eager, vision, seeds=(7, 8))
    assert _rel(other_seed, ref) > 0.1  # what a wrong result looks like: far outside the tolerance
    # a second duration bucket (another latent length) compiles its own graph and still matches
    short = GEOMETRY.with_duration(GEOMETRY.duration_s / 2)
    kw = dict(geometry=short, seeds=[0, 1], steps=2)
    cond = {"vision": vision[:, : short.num_frames]}
    assert _rel(sample_latents(fast, cond, **kw), sample_latents(eager, cond, **kw)) < 1e-4


def test_bf16_autocast_stays_within_its_stated_tolerance(vision):
    model = build_model("tiny", seed=0, vision_dim=48).eval()
    ref = _latents(model, vision)
    bf16 = _latents(model, vision, precision="bf16")
    assert bf16.dtype == torch.float32  # the scheduler arithmetic and the latents stay fp32
    assert 0 < _rel(bf16, ref) < 0.15  # bf16 rounding through 4 steps of a random model
    assert _rel(_latents(model, vision, seeds=(7, 8)), ref) > 0.5


def test_auto_acceleration_per_device():
    assert Acceleration.auto("cuda") == Acceleration(precision="bf16", channels_last=True, tf32=True)
    assert Acceleration.fast("cuda").compile and Acceleration.named("eager", "cuda") == Acceleration()
    assert Acceleration.auto("cpu").precision in ("fp32", "bf16") and not Acceleration.auto("cpu").compile
    with pytest.raises(ValueError, match="unknown acceleration 'quick'"):
        Acceleration.named("quick", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        Acceleration(precision="fp16")


def _batches(n: int, *, nan: bool = False) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        latents = torch.randn(2, *GEOMETRY.latent_shape, generator=g)
        if nan:
            latents[0, 0, 0, 0] = float("nan")
        out.append({"latents": latents, "vision": torch.randn(2, GEOMETRY.num_frames, 48, generator=g),
                    "t_u": torch.rand(2, generator=g), "noise": torch.randn(2, *GEOMETRY.latent_shape, generator=g),
                    "drop_u": torch.rand(2, generator=g)})
    return out


def test_compiled_channels_last_training_follows_eager_and_keeps_checkpoint_names(tmp_path):
    frames = torch.randn(16, 48, generator=torch.Generator().manual_seed(1))
    kw = dict(geometry=GEOMETRY, steps=3, warmup=0, ckpt_every=3, seed=0, progress=False, feature_frames=frames,
              log_every=2)
    seen: list[int] = []
    eager = train(build_model("tiny", seed=0, vision_dim=48), _batches(3), out_dir=tmp_path / "eager",
                  on_step=lambda done, total, loss: seen.append(done), **kw)
    fast = train(build_model("tiny", seed=0, vision_dim=48), _batches(3), out_dir=tmp_path / "fast",
                 channels_last=True, compile_unet=True, compile_backend="aot_eager", **kw)
    assert seen == [1, 2, 3]  # settled every log_every steps, every step still reported once, in order
    assert len(eager.losses) == len(fast.losses) == 3
    assert fast.losses == pytest.approx(eager.losses, rel=1e-4)
    from safetensors.torch import load_file

    a, b = (load_file(str(r.checkpoint / "model.safetensors")) for r in (eager, fast))
    assert sorted(a) == sorted(b)  # in-place compile: no "_orig_mod." in the names
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_a_non_finite_loss_stops_training_before_any_checkpoint_holds_it(tmp_path):
    frames = torch.randn(16, 48, generator=torch.Generator().manual_seed(1))
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(build_model("tiny", seed=0, vision_dim=48), _batches(2, nan=True), geometry=GEOMETRY,
              out_dir=tmp_path, steps=4, ckpt_every=2, log_every=10, progress=False, feature_frames=frames)
    assert latest_checkpoint(tmp_path) is None
