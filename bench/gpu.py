"""The GPU fast path against its baselines, in one process: generation, training and feature caching.

Random weights at ``--preset`` (paper: the official UNet, AudioLDM's VAE and HiFi-GAN layouts, CLIP
ViT-L/14), no network. Every fast figure sits beside its baseline measured in the same run:

- generation (UNet + VAE + vocoder, guidance 3): the official settings (DDPM 300 steps, eager fp32,
  batch 1); eager fp32 DPM-Solver++ 25 at batch 1 and 16; ``auto`` (bf16 + channels-last + TF32) at batch
  16; ``fast`` (auto + torch.compile, CUDA graphs on CUDA) at batch 1 and 16, its first (compiling) call
  reported apart from steady state; and how far the fast output is from the eager fp32 output on the same
  noise (relative to how far two seeds are apart);
- training (``vta_core.train.train``, per-sample draws as the loader makes them): eager fp32, naive bf16
  autocast, and fast (bf16 + TF32 + channels-last, optionally + torch.compile), samples/s in steady state;
- feature caching (decode included): FFmpeg decode then fp32 encode video by video, against decoding on
  worker threads overlapped with bf16 encoding in batches spanning videos (``vta_core.video_features``);
  decode alone and encode alone bound it.

On CUDA the targets of the GPU issue are checked; what bounds a missed one is recorded beside it. On CPU
(``--device cpu --preset tiny``) it checks the code paths; its figures are CPU figures, not GPU ones.

    python bench/gpu.py --device cuda                 # ≤ 8 min on one H100/H200 -> bench/results/gpu.json
    python bench/gpu.py --device cpu --preset tiny    # -> bench/results/gpu_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from vta_core.accel import Acceleration, accelerate_denoiser, accelerate_vae, set_tf32  # noqa: E402
from vta_core.media import ffmpeg_exe  # noqa: E402
from vta_core.model import VTAModel  # noqa: E402
from vta_core.official import OFFICIAL_SAMPLING  # noqa: E402
from vta_core.presets import get_preset  # noqa: E402
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS  # noqa: E402
from vta_core.sampling import decode, sample_latents  # noqa: E402
from vta_core.train import train  # noqa: E402
from vta_core.unet import count_parameters  # noqa: E402

TARGETS = {  # the GPU issue's targets (one H100/H200, paper preset)
    "generate_batch1_s": ("<=", 0.3, "one clip, batch 1, 25 steps, UNet + VAE + vocoder (s)"),
    "generate_clips_per_s": (">=", 20.0, "batched generation (clips/s)"),
    "train_samples_per_s": (">=", 150.0, "training, paper preset, batch 16 (samples/s)"),
    "features_frames_per_s": (">=", 1800.0, "feature caching end to end incl. decode (frames/s)"),
}


def _load_bench_vocoder():
    """bench/sampling.py's vocoder builder (AudioLDM's 16 kHz HiFi-GAN layout, random weights)."""
    spec = importlib.util.spec_from_file_location("bench_sampling", ROOT / "bench" / "sampling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.bench_vocoder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def release_memory(device: torch.device) -> None:
    """Drop compiled graphs (they hold their models) and cached device memory between parts."""
    import gc

    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Clock:
    """Elapsed time of the whole bench, against its budget (optional parts are skipped past it)."""

    def __init__(self, budget_s: float) -> None:
        self.t0, self.budget_s = time.perf_counter(), budget_s

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def allows(self, part: str, needs_s: float, skipped: list[str]) -> bool:
        if self.elapsed + needs_s <= self.budget_s:
            return True
        skipped.append(f"{part}: skipped at {self.elapsed:.0f} s of a {self.budget_s:.0f} s budget")
        print(skipped[-1], flush=True)
        return False


# --- generation -------------------------------------------------------------------------------
def _generate(denoiser, vae, vocoder, vision, *, geometry, device, sampler, steps, precision, seeds):
    """One batch end to end; returns (latents, waves, seconds)."""
    sync(device)
    t0 = time.perf_counter()
    z = sample_latents(denoiser, {"vision": vision}, geometry=geometry, seeds=seeds, sampler=sampler, steps=steps,
                       guidance=DEFAULT_GUIDANCE, precision=precision)
    wave = decode(z, vae=vae, vocoder=vocoder, seconds=geometry.duration_s, precision=precision)
    sync(device)
    return z, wave, time.perf_counter() - t0


def bench_generation(preset: str, device: torch.device, *, official_steps: int, batch: int, backend: str,
                     repeats: int, clock: Clock, skipped: list[str]) -> dict:
    p = get_preset(preset)
    g = p.geometry
    torch.manual_seed(0)
    with torch.device(device):
        model = VTAModel(p.model).eval()
        vae = p.build_vae(seed=0).to(device).eval()
    vocoder = _load_bench_vocoder()(g, device)
    D = model.config.vision_dim
    gen = torch.Generator().manual_seed(1)
    vision = torch.randn(batch, g.num_frames, D, generator=gen).to(device)
    out: dict = {"preset": preset, "unet_params_m": count_parameters(model.unet) / 1e6, "batch": batch,
                 "clip_seconds": g.duration_s, "guidance": DEFAULT_GUIDANCE}
    common = dict(geometry=g, device=device)

    def run(name, denoiser, vae_, *, sampler, steps, precision, b, repeats, first_is_compile=False):
        seeds = list(range(b))
        times = []
        first = None
        for r in range(repeats + (1 if first_is_compile or device.type == "cuda" else 0)):
            z, wave, dt = _generate(denoiser, vae_, vocoder, vision[:b], sampler=sampler, steps=steps,
                                    precision=precision, seeds=seeds, **common)
            if r == 0 and (first_is_compile or device.type == "cuda"):
                first = dt  # compile / CUDA warm-up (kernels, allocator, cuDNN plans)
                continue
            times.append(dt)
        assert torch.isfinite(wave).all(), f"{name}: non-finite audio"
        s = float(np.median(times))
        row = {"sampler": sampler, "steps": steps, "precision": precision, "batch": b, "s_per_batch": s,
               "s_per_clip": s / b, "clips_per_s": b / s, "repeats": len(times)}
        if first is not None:
            row["first_call_s"] = first
            row["first_call_overhead_s"] = first - s
        out[name] = row
        print(f"generation {name}: {s / b:.3f} s/clip, {b / s:.2f} clips/s"
              + (f" (first call {first:.1f} s)" if first is not None else ""), flush=True)
        return z, wave

    reset_peak(device)
    run("official", model, vae, sampler=OFFICIAL_SAMPLING["sampler"], steps=official_steps, precision="fp32", b=1,
        repeats=1)
    z_ref, w_ref = run("eager_fp32_b1", model, vae, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, precision="fp32",
                       b=1, repeats=repeats)
    z_seed, _, _ = _generate(model, vae, vocoder, vision[:1], sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS,
                             precision="fp32", seeds=[12345], **common)
    run("eager_fp32_batch", model, vae, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, precision="fp32", b=batch,
        repeats=1)
    out["eager_peak_mem_gib"] = peak_gib(device)

    auto = Acceleration.auto(device)
    fast = Acceleration(precision=auto.precision, channels_last=auto.channels_last, tf32=auto.tf32, compile=True,
                        compile_backend=backend)
    out["accel_auto"], out["accel_fast"] = auto.to_dict(), fast.to_dict()
    reset_peak(device)
    # the auto path (no compile): channels-last and TF32 applied to the same weights
    model_auto = accelerate_denoiser(model, auto)
    vae = accelerate_vae(vae, auto)
    run("auto_batch", model_auto, vae, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, precision=auto.precision,
        b=batch, repeats=max(1, repeats - 1))
    z_auto, w_auto = run("auto_b1", model_auto, vae, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS,
                         precision=auto.precision, b=1, repeats=repeats)
    match = {"seed_to_seed_latent_rel": _rel(z_seed, z_ref),
             "auto_latent_rel": _rel(z_auto, z_ref), "auto_wave_rel": _rel(w_auto, w_ref)}
    if clock.allows("generation fast (torch.compile)", 150.0, skipped):
        denoiser = accelerate_denoiser(model, fast)
        z_fast, w_fast = run("fast_b1", denoiser, vae, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS,
                             precision=fast.precision, b=1, repeats=repeats + 2, first_is_compile=True)
        match["fast_latent_rel"], match["fast_wave_rel"] = _rel(z_fast, z_ref), _rel(w_fast, w_ref)
        if clock.allows("generation fast batched", 120.0, skipped):
            run("fast_batch", denoiser, vae, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, precision=fast.precision,
                b=batch, repeats=max(1, repeats - 1), first_is_compile=True)
    out["fast_peak_mem_gib"] = peak_gib(device)
    match["note"] = ("max |x − x_eager_fp32| / std(x_eager_fp32) on the same noise; seed_to_seed is the same "
                     "measure between two noise seeds (what a wrong result would look like)")
    out["match"] = match
    return out


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.float().cpu(), ref.float().cpu()
    return float((a - ref).abs().max() / ref.std())


# --- training ---------------------------------------------------------------------------------
def _train_batches(preset: str, batch: int, n: int, device: torch.device) -> list[dict]:
    """``n`` random batches with the per-sample draws the loader attaches (vta_core.data.seeded_collate)."""
    p = get_preset(preset)
    g = torch.Generator().manual_seed(0)
    pin = device.type == "cuda"
    out = []
    for _ in range(n):
        b = {"latents": torch.randn(batch, *p.geometry.latent_shape, generator=g),
             "vision": torch.randn(batch, p.geometry.num_frames, p.model.vision_dim, generator=g),
             "t_u": torch.rand(batch, generator=g), "noise": torch.randn(batch, *p.geometry.latent_shape, generator=g),
             "drop_u": torch.rand(batch, generator=g)}
        out.append({k: v.pin_memory() if pin else v for k, v in b.items()})
    return out


def bench_training(preset: str, device: torch.device, *, batch: int, steps: int, warmup: int, compile_unet: bool,
                   backend: str, clock: Clock, skipped: list[str]) -> dict:
    if steps % warmup:
        raise ValueError(f"--train-steps ({steps}) must be a multiple of --train-warmup ({warmup}): the loss is "
                         "read back (a timing point) every warm-up steps")
    p = get_preset(preset)
    data = _train_batches(preset, batch, 4, device)
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None  # the final checkpoint is written to RAM
    variants = [("eager_fp32", dict(precision="fp32", tf32=False)),
                ("naive_bf16", dict(precision="bf16", tf32=False)),
                ("fast", dict(precision="bf16", tf32=True, channels_last=True))]
    if compile_unet:
        variants.append(("fast_compiled", dict(precision="bf16", tf32=True, channels_last=True, compile_unet=True,
                                               compile_backend=backend)))
    out: dict = {"preset": preset, "batch": batch, "steps_timed": steps, "warmup_steps": warmup}
    for name, kw in variants:
        if name == "fast_compiled" and not clock.allows("training with torch.compile", 200.0, skipped):
            continue
        torch.manual_seed(0)
        model = VTAModel(p.model)
        stamps: dict[int, float] = {}

        def on_step(done, total, loss, stamps=stamps):
            stamps[done] = time.perf_counter()

        reset_peak(device)
        with tempfile.TemporaryDirectory(prefix="vta-bench-gpu-", dir=scratch) as tmp:
            t0 = time.perf_counter()
            # steps: warm-up, the timed window, and one more settle window that absorbs the final checkpoint
            res = train(model, data, geometry=p.geometry, out_dir=tmp, steps=2 * warmup + steps, warmup=0,
                        ckpt_every=10**9, cpu=device.type == "cpu", log_every=warmup, progress=False,
                        feature_frames=torch.randn(64, p.model.vision_dim), on_step=on_step, **kw)
        # settle points are every ``warmup`` steps: the steady window runs from step ``warmup`` to warmup + steps
        steady = stamps[warmup + steps] - stamps[warmup]
        row = {**{k: v for k, v in kw.items()}, "samples_per_s": steps * batch / steady, "s_per_step": steady / steps,
               "startup_s": stamps[warmup] - t0, "loss_first": res.losses[0], "loss_last": res.losses[-1],
               "peak_mem_gib": peak_gib(device)}
        assert all(np.isfinite(res.losses)), f"{name}: non-finite loss"
        out[name] = row
        print(f"training {name}: {row['samples_per_s']:.1f} samples/s (start-up {row['startup_s']:.1f} s)", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --- feature caching --------------------------------------------------------------------------
def make_videos(folder: Path, *, n: int, seconds: float, size: int, workers: int) -> list[Path]:
    """``n`` test-pattern videos (H.264, 25 fps, ``size``²) made with FFmpeg; no network."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> Path:
        path = folder / f"v{i:03d}.mp4"
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}x{size}:rate=25:duration={seconds}", "-vf", f"hue=h={i * 17 % 360}",
                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
        return path

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(n)))


def bench_features(preset: str, device: torch.device, *, n_videos: int, workers: int, arch: str) -> dict:
    import open_clip

    from vta_core.video_features import decode_ahead, encode_videos, video_frames
    from vta_core.vision import OpenClipVisionEncoder

    g = get_preset(preset).geometry
    set_tf32(False)  # the fp32 baseline is plain fp32 (the generation part turned TF32 on for its fast path)
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None, device=str(device))  # random weights, no download
    spec = f"open_clip:{arch}:random"
    fp32 = OpenClipVisionEncoder(model, spec=spec, device=str(device), batch_size=64, unnormalized=True, bf16=False)
    bf16 = OpenClipVisionEncoder(model, spec=spec, device=str(device), batch_size=256, unnormalized=True,
                                 bf16=device.type == "cuda")
    out: dict = {"encoder": f"open_clip {arch} (random init)", "fps": g.fps, "frame_size": g.frame_size,
                 "videos": n_videos, "video_seconds": g.duration_s, "decode_workers": workers}
    with tempfile.TemporaryDirectory(prefix="vta-bench-videos-") as tmp:
        paths = make_videos(Path(tmp), n=n_videos, seconds=g.duration_s, size=max(256, g.frame_size), workers=workers)
        fp32.encode_frames(video_frames(paths[0], geometry=g)[0])  # warm-up: kernels, allocator
        bf16.encode_frames(video_frames(paths[0], geometry=g)[0])
        sync(device)
        # baseline: decode a video, encode it (fp32), next video
        t0 = time.perf_counter()
        frames_total = 0
        for p in paths:
            frames = video_frames(p, geometry=g)[0]
            fp32.encode_frames(frames)
            frames_total += len(frames)
        sync(device)
        base = time.perf_counter() - t0
        # decode alone on the worker threads (the decode bound)
        t0 = time.perf_counter()
        decoded = [f for _, (f, _) in decode_ahead(paths, lambda p: video_frames(p, geometry=g), workers=workers)]
        dec = time.perf_counter() - t0
        # encode alone, bf16, frames already in memory (the encoder bound)
        allf = np.concatenate(decoded)
        sync(device)
        t0 = time.perf_counter()
        bf16.encode_frames(allf)
        sync(device)
        enc = time.perf_counter() - t0
        # fast: decode on worker threads overlapped with batched bf16 encoding
        reset_peak(device)
        t0 = time.perf_counter()
        n_fast = sum(len(e) for _, e in encode_videos(paths, encoder=bf16, geometry=g, workers=workers))
        sync(device)
        fast = time.perf_counter() - t0
    assert n_fast == frames_total == len(allf)
    out.update({"frames": frames_total, "baseline_frames_per_s": frames_total / base,
                "decode_only_frames_per_s": frames_total / dec, "encode_only_frames_per_s": frames_total / enc,
                "fast_frames_per_s": frames_total / fast, "speedup": base / fast, "peak_mem_gib": peak_gib(device)})
    print(f"features: {out['fast_frames_per_s']:.0f} frames/s (baseline {out['baseline_frames_per_s']:.0f}; decode "
          f"alone {out['decode_only_frames_per_s']:.0f}, encode alone {out['encode_only_frames_per_s']:.0f})", flush=True)
    return out


# --- targets ----------------------------------------------------------------------------------
def check_targets(result: dict) -> dict:
    gen, tr, fe = result.get("generation", {}), result.get("training", {}), result.get("features", {})
    best_gen = max((gen[k]["clips_per_s"] for k in ("fast_batch", "auto_batch") if k in gen), default=None)
    b1 = min((gen[k]["s_per_clip"] for k in ("fast_b1", "auto_b1") if k in gen), default=None)
    best_train = max((tr[k]["samples_per_s"] for k in ("fast", "fast_compiled", "naive_bf16") if k in tr), default=None)
    measured = {"generate_batch1_s": b1, "generate_clips_per_s": best_gen, "train_samples_per_s": best_train,
                "features_frames_per_s": fe.get("fast_frames_per_s")}
    out = {}
    for key, (op, target, what) in TARGETS.items():
        v = measured[key]
        ok = None if v is None else (v <= target if op == "<=" else v >= target)
        out[key] = {"what": what, "target": f"{op} {target:g}", "measured": v, "met": ok}
    if "fast_b1" in gen or "auto_b1" in gen:  # what bounds batch-1 latency: UNet steps vs decode
        out["generate_batch1_s"]["bound"] = "see generation.*_b1 (UNet loop) and the per-call overhead"
    if fe:
        out["features_frames_per_s"]["bound"] = (
            "decode" if fe["decode_only_frames_per_s"] < fe["encode_only_frames_per_s"] else "encoder")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--preset", default=None, help="default: paper on CUDA, tiny on CPU")
    ap.add_argument("--batch", type=int, default=16, help="generation and training batch")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per generation setting (median)")
    ap.add_argument("--official-steps", type=int, default=OFFICIAL_SAMPLING["steps"])
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-warmup", type=int, default=5)
    ap.add_argument("--train-compile", action="store_true", help="also time training with torch.compile")
    ap.add_argument("--videos", type=int, default=None, help="feature-caching videos (default 96 CUDA, 8 CPU)")
    ap.add_argument("--decode-workers", type=int, default=None, help="default: CPU cores - 2")
    ap.add_argument("--encoder", default=None, help="open_clip architecture (default ViT-L-14 CUDA, ViT-B-32 CPU)")
    ap.add_argument("--compile-backend", default="inductor", help="inductor (the real path) | aot_eager (tests)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="optional parts are skipped past this")
    ap.add_argument("--skip", default="", help="comma list of generation,training,features")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    preset = args.preset or ("paper" if cuda else "tiny")
    out_path = args.out or ROOT / "bench" / "results" / ("gpu.json" if cuda else f"gpu_{device.type}_{preset}.json")
    skip = set(filter(None, args.skip.split(",")))
    workers = args.decode_workers or max(1, (os.cpu_count() or 2) - 2)
    clock, skipped = Clock(args.budget_s), []
    result: dict = {
        "bench": "gpu", "command": "python bench/gpu.py " + " ".join(sys.argv[1:]), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(), "preset": preset,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"bench/gpu.py on {result['device_name']} ({device}), preset {preset}", flush=True)
    if "generation" not in skip:
        result["generation"] = bench_generation(preset, device, official_steps=args.official_steps, batch=args.batch,
                                                backend=args.compile_backend, repeats=args.repeats, clock=clock, skipped=skipped)
        release_memory(device)
    if "training" not in skip:
        result["training"] = bench_training(preset, device, batch=args.batch, steps=args.train_steps,
                                            warmup=args.train_warmup, compile_unet=args.train_compile,
                                            backend=args.compile_backend, clock=clock, skipped=skipped)
        release_memory(device)
    if "features" not in skip:
        result["features"] = bench_features(preset, device, n_videos=args.videos or (96 if cuda else 8),
                                            workers=workers, arch=args.encoder or ("ViT-L-14" if cuda else "ViT-B-32"))
    result["targets"] = check_targets(result) if cuda else "not checked: the targets are for one H100/H200 GPU"
    result["skipped"] = skipped
    result["wall_s"] = clock.elapsed
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path} ({clock.elapsed:.0f} s)", flush=True)
    if cuda:
        for t in result["targets"].values():
            print(f"  {t['what']}: {t['measured']} ({t['target']}) {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
