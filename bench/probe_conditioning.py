"""The probe behind the demo's design (vta_core/presets.py, demo): does the model read the video's timing?

Trains the demo model for ``--steps`` steps (the demo recipe: vta_core.train.train, AdamW, the demo
preset's lr / warm-up / batch) on the train split of a demo root's shards, in three configurations:

* ``eps``: ε-prediction, raw frame features, no frame differences;
* ``v``: v-prediction, otherwise as ``eps``;
* ``v+norm+delta``: v-prediction, standardised features and frame differences (the demo preset).

Then, on held-out samples (the shards' ``test`` split; ``train`` when it has none), the x₀ error at
timestep ``--t`` (default 850): MSE between the clean scaled latent z₀ (posterior mean × scaling factor)
and the model's x̂₀ from z_t (v: x̂₀ = √ᾱ z_t − √(1−ᾱ) v̂; ε: x̂₀ = (z_t − √(1−ᾱ) ε̂)/√ᾱ), with the clip's
true frames, its frames rotated in time by half the clip (``rotated``: the evaluation's shuffled_video
control) and randomly permuted (``permuted``: the probe's original control), and the null condition ∅.
The same noise (``--noise-draws`` per sample, seeded) for every condition. A model that reads the
timing has error(true) < error(rotated); the gap is what the design choice buys.

    python bench/probe_conditioning.py [--root /tmp/demo1/root] [--steps 200]  -> bench/results/probe_conditioning.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.shards import shard_urls
from storage import Artifact, ArtifactStore
from storage.lineage import shards_vae
from vta_core.data import collate, iter_webdataset, shard_loader, training_frames
from vta_core.model import Batch, VTAModel
from vta_core.presets import get_preset
from vta_core.train import train
from vta_core.vae import load_vae

RESULTS = Path(__file__).parent / "results"
CONFIGS: dict[str, dict[str, Any]] = {
    "eps": {"prediction_type": "epsilon", "feature_norm": False, "aligned_delta": False},
    "v": {"prediction_type": "v_prediction", "feature_norm": False, "aligned_delta": False},
    "v+norm+delta": {"prediction_type": "v_prediction", "feature_norm": True, "aligned_delta": True},
}
CONDITIONS = ("true", "rotated", "permuted", "null")


def endless(urls: list[str], *, batch_size: int, scaling_factor: float, seed: int) -> Iterator[Batch]:
    """Deterministic training batches, epoch after epoch (stages/train.py's stream)."""
    loader = shard_loader(urls, batch_size=batch_size, scaling_factor=scaling_factor, seed=seed, resampled=False)
    while True:
        yield from loader


def held_out(urls: list[str], *, scaling_factor: float, limit: int) -> Batch:
    """Held-out samples as ONE batch, latents = posterior mean × scaling factor (no posterior noise)."""
    samples = list(iter_webdataset(urls))[:limit]
    if not samples:
        raise ValueError(f"no samples in {urls[:1]}")
    batch = collate(samples, scaling_factor=scaling_factor, generator=torch.Generator().manual_seed(0))
    mean = torch.from_numpy(np.stack([s["latent_mean"] for s in samples]).astype(np.float32))
    batch["latents"] = mean * scaling_factor  # (B, C, T, F)
    return batch


def with_frames(batch: Batch, how: str, *, seed: int) -> Batch:
    """``batch`` with each clip's real frames rotated by half their count, or randomly permuted (seeded)."""
    out = dict(batch)
    vision = batch["vision"].clone()  # (B, T, D)
    n_real = batch["vision_mask"].sum(dim=1)  # (B,)
    gen = torch.Generator().manual_seed(seed)
    for i, n in enumerate(n_real.tolist()):
        order = torch.arange(n)
        order = torch.roll(order, -(n // 2)) if how == "rotated" else torch.randperm(n, generator=gen)
        vision[i, :n] = batch["vision"][i, order]
    out["vision"] = vision
    return out


@torch.no_grad()
def x0_errors(model: VTAModel, batch: Batch, *, geometry: Any, t: int, draws: int, seed: int) -> dict[str, float]:
    """Mean x₀ MSE per condition over the batch and ``draws`` seeded noise draws (the same for every condition)."""
    model.eval()
    z0 = batch["latents"]  # (B, C, T, F)
    sched = model.scheduler
    alpha_bar = sched.alphas_cumprod[t].float()
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    ts = torch.full((z0.shape[0],), t, dtype=torch.long)
    frames = {"true": batch, "rotated": with_frames(batch, "rotated", seed=seed),
              "permuted": with_frames(batch, "permuted", seed=seed)}
    gen = torch.Generator().manual_seed(seed)
    noises = [torch.randn(z0.shape, generator=gen) for _ in range(draws)]
    out: dict[str, float] = {}
    for name in CONDITIONS:
        if name == "null":
            cond = model.conditioner.null(z0.shape[0], latent_frames=z0.shape[2])
        else:
            cond = model.condition(frames[name], latent_frames=z0.shape[2], geometry=geometry)
        errs = []
        for noise in noises:
            z_t = sched.add_noise(z0, noise, ts)
            pred = model(z_t, ts, cond)
            x0 = a * z_t - s * pred if model.config.prediction_type == "v_prediction" else (z_t - s * pred) / a
            errs.append(((x0 - z0) ** 2).mean().item())
        out[name] = float(np.mean(errs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/demo1/root"), help="a demo root with shards")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--t", type=int, default=850, help="the timestep of the x0 error")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {list(CONFIGS)}")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the demo preset's")
    ap.add_argument("--held-out", type=int, default=64, help="at most this many held-out samples")
    ap.add_argument("--noise-draws", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "probe_conditioning.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [c for c in args.configs.split(",") if c]
    if bad := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown --configs {sorted(bad)}; choose from {list(CONFIGS)}")
    preset = get_preset("demo")
    g, d = preset.geometry, preset.train
    store = ArtifactStore(str(args.root))
    shards = store.latest("shards")
    if shards is None:
        raise SystemExit(f"no shards artifact under {args.root}")
    train_urls = shard_urls(shards, "train")
    test_split = "test" if shard_urls(shards, "test") else "train"
    vae = shards_vae(store, shards)
    scaling_factor = load_vae(vae.file("vae") if isinstance(vae, Artifact) else vae).scaling_factor
    held = held_out(shard_urls(shards, test_split), scaling_factor=scaling_factor, limit=args.held_out)
    vision_dim = held["vision"].shape[-1]
    frames = training_frames(train_urls)
    batch_size = args.batch_size or d.batch_size
    print(f"{shards.ref}: train {len(train_urls)} shard(s); held-out {held['latents'].shape[0]} {test_split} samples; "
          f"{args.steps} steps, batch {batch_size}, t = {args.t}", flush=True)
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/probe_conditioning.py", *sys.argv[1:]]), "cpu_count": os.cpu_count(),
        "root": str(args.root), "shards": shards.ref, "held_out_split": test_split,
        "held_out_samples": int(held["latents"].shape[0]), "steps": args.steps, "batch_size": batch_size,
        "lr": d.lr, "warmup": d.warmup, "t": args.t, "noise_draws": args.noise_draws, "seed": args.seed,
        "x0_error": {}, "train_s": {}, "configs": {c: CONFIGS[c] for c in configs},
    }
    for name in configs:
        model = preset.build_model(seed=args.seed, vision_dim=vision_dim, **CONFIGS[name])
        data = endless(train_urls, batch_size=batch_size, scaling_factor=scaling_factor, seed=args.seed)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            train(model, data, geometry=g, out_dir=tmp, steps=args.steps, lr=d.lr, warmup=min(d.warmup, args.steps),
                  lr_schedule=d.lr_schedule, ckpt_every=args.steps, seed=args.seed, cpu=True, progress=False,
                  feature_frames=frames if model.config.feature_norm else None)
        result["train_s"][name] = round(time.time() - t0, 1)
        result["x0_error"][name] = x0_errors(model, held, geometry=g, t=args.t, draws=args.noise_draws,
                                             seed=args.seed)
        e = result["x0_error"][name]
        print(f"  {name:<14} trained in {result['train_s'][name]:.0f} s: " +
              " ".join(f"{c} {e[c]:.4f}" for c in CONDITIONS), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nx0 MSE at t={args.t} after {args.steps} steps ({result['held_out_samples']} {test_split} samples)")
    print(f"{'config':<14}" + "".join(f"{c:>10}" for c in CONDITIONS) + f"{'rot-true':>10}")
    for name, e in result["x0_error"].items():
        print(f"{name:<14}" + "".join(f"{e[c]:10.4f}" for c in CONDITIONS) + f"{e['rotated'] - e['true']:10.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
