"""Training throughput with 1 and N processes, and whether N processes follow the 1-process recipe.

Part A (CPU, this machine): the demo ingest of ``--clips`` synthetic clips, then the train stage on its
shards with the demo preset (global batch ``--batch-size``) for ``--steps`` steps, once with 1 process and
once with ``--nproc`` processes (DDP on gloo, torchrun). Samples/s is measured in steady state, from the
time between rank 0's step reports after ``--warmup-steps`` steps (process start, model build and the first
steps are reported separately as start-up). The two loss curves are the same global batches, so their
difference is float rounding, not sampling.

Part B (``--device cuda``, when there is a GPU): samples/s for the paper preset at batch 16 on random
batches, fp32 vs bf16 autocast (no GradScaler), fused AdamW, one process. Without CUDA it is recorded as
unmeasured (``--device cpu`` runs it at the tiny preset, to check the code path only).

    python bench/train.py [--clips 64] [--steps 40] [--nproc 2] [--device cuda]

Writes bench/results/train.json and bench/results/train_loss.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ingest(root: Path, clips: int) -> None:
    from flows.dag import IngestConfig, run_ingest
    from stages.synth import synth_paths, synth_stage
    from storage import ArtifactStore

    store = ArtifactStore(str(root))
    paths = synth_paths(synth_stage(store, clips=clips, seed=0))
    run_ingest(store, videos_dir=paths["videos_dir"], labels_csv=paths["labels_csv"],
               config=IngestConfig.for_preset("demo", vae_steps=50), run_step=lambda name, step: step(None))


def train_run(root: Path, *, nproc: int, steps: int, batch_size: int, warmup_steps: int) -> dict:
    from stages.train import train_stage
    from storage import ArtifactStore
    from vta_core.presets import get_preset

    store = ArtifactStore(str(root))
    stamps: list[float] = []
    t0 = time.perf_counter()
    art = train_stage(store, shards=store.resolve("shards"), preset=get_preset("demo"), steps=steps,
                      batch_size=batch_size, ckpt_every=steps, seed=0, nproc=nproc,
                      progress=lambda done, total: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    history = json.loads(Path(art.file("history.json")).read_text())
    steady = stamps[-1] - stamps[warmup_steps - 1]
    n_steady = len(stamps) - warmup_steps
    return {"nproc": nproc, "version": art.version, "wall_s": wall, "startup_s": stamps[warmup_steps - 1] - t0,
            "steady_steps": n_steady, "steady_s": steady, "samples_per_s": n_steady * batch_size / steady,
            "loss": history["loss"], "lr": history["lr"]}


def gpu_part(device: str, steps: int = 20, warmup: int = 5) -> dict:
    import torch

    from vta_core.presets import build_model, get_preset

    if device == "cuda" and not torch.cuda.is_available():
        return {"measured": False, "reason": "no CUDA device on this machine"}
    preset, batch = ("paper", 16) if device == "cuda" else ("tiny", 4)
    geometry = get_preset(preset).geometry
    out: dict = {"measured": True, "device": device, "preset": preset, "batch_size": batch}
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        out["device_name"] = torch.cuda.get_device_name()
        out["torch"], out["cuda"] = torch.__version__, torch.version.cuda
    for precision in ("fp32", "bf16"):
        model = build_model(preset, seed=0).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
        g = torch.Generator().manual_seed(0)
        d = model.config.vision_dim
        batch_data = {"latents": torch.randn(batch, *geometry.latent_shape, generator=g).to(device),
                      "vision": torch.randn(batch, geometry.num_frames, d, generator=g).to(device)}
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(warmup + steps):
            if i == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model.loss(batch_data, geometry=geometry, generator=g)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out[precision] = {"samples_per_s": steps * batch / dt, "s_per_step": dt / steps}
        if device == "cuda":
            out[precision]["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        del model, opt
    out["bf16_vs_fp32"] = out["bf16"]["samples_per_s"] / out["fp32"]["samples_per_s"]
    return out


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def loss_png(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r, style in zip(runs, ("-", "--"), strict=False):
        ax.plot(range(1, len(r["loss"]) + 1), r["loss"], style, label=f"{r['nproc']} process(es)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("diffusion loss")
    ax.set_title("demo preset, same global batch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64, help="synthetic clips (the demo's 64)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16, help="global batch (the demo preset's)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cuda", help="Part B: cuda (paper preset) or cpu (tiny, code path only)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    args = ap.parse_args()
    result: dict = {"command": "python bench/train.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                   "torch_threads_1_process": _threads(), "torch_threads_per_rank": int(os.environ.get("OMP_NUM_THREADS", "1"))}}  # torchrun: 1 unless set
    with tempfile.TemporaryDirectory(prefix="vta-bench-train-") as tmp:
        base = Path(tmp) / "base"
        t0 = time.perf_counter()
        ingest(base, args.clips)
        result["ingest_s"] = time.perf_counter() - t0
        runs = []
        for n in (1, args.nproc):
            root = Path(tmp) / f"n{n}"
            shutil.copytree(base, root)
            runs.append(train_run(root, nproc=n, steps=args.steps, batch_size=args.batch_size,
                                  warmup_steps=args.warmup_steps))
            print(f"{n} process(es): {runs[-1]['samples_per_s']:.1f} samples/s steady, wall {runs[-1]['wall_s']:.1f} s")
    one, many = runs
    rel = [abs(a - b) / abs(a) for a, b in zip(one["loss"], many["loss"], strict=True)]
    result["cpu"] = {"runs": runs, "speedup": many["samples_per_s"] / one["samples_per_s"],
                     "same_version": one["version"] == many["version"], "lr_identical": one["lr"] == many["lr"],
                     "loss_max_rel_diff": max(rel), "loss_mean_rel_diff": sum(rel) / len(rel)}
    print(f"{args.nproc} vs 1 process: {result['cpu']['speedup']:.2f}x samples/s; loss curves differ by at most "
          f"{max(rel):.2e} (relative); LR identical: {result['cpu']['lr_identical']}")
    result["gpu"] = gpu_part(args.device)
    print("GPU part:", json.dumps(result["gpu"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    loss_png(runs, args.out.with_name("train_loss.png"))
    print(f"wrote {args.out} and {args.out.with_name('train_loss.png')}")


if __name__ == "__main__":
    main()
