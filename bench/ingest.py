"""Ingest throughput and memory: clips/s per stage and peak RSS, for 50 and 500 synthetic clips.

Each size runs in its own process (fresh peak RSS), running the ingest DAG of flows/dag.py without
Prefect (no server, so only our work is measured), each stage timed. Memory must stay flat:
peak RSS at 500 clips <= 1.3x peak RSS at 50 clips.

    python bench/ingest.py [--sizes 50 500] [--preset demo] [--vae-steps 50]

Prints a table and the memory ratio; writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("synth", "decode", "features", "flow", "align", "filter", "augment", "vae", "latents", "shards")


def run_one(clips: int, preset: str, vae_steps: int, root: Path) -> dict:
    """Run every stage once for ``clips`` synthetic clips; returns seconds per stage and peak RSS."""
    from flows.dag import IngestConfig, run_ingest
    from stages.synth import synth_paths, synth_stage
    from storage import ArtifactStore

    cfg = IngestConfig.for_preset(preset, vae_steps=vae_steps)
    store = ArtifactStore(str(root))
    times: dict[str, float] = {}
    rss: dict[str, float] = {}

    def timed(name, step):
        t0 = time.perf_counter()
        out = step(None)
        times[name] = time.perf_counter() - t0
        rss[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, peak so far
        return out

    syn = timed("synth", lambda _: synth_stage(store, clips=clips, seed=0))
    paths = synth_paths(syn)
    arts = run_ingest(store, videos_dir=paths["videos_dir"], labels_csv=paths["labels_csv"], config=cfg,
                      run_step=timed)
    fil = next(a for a in arts if a.stage == "filter")
    return {"clips": clips, "seconds": times, "clips_per_s": {k: clips / v for k, v in times.items()},
            "peak_rss_mib_after": rss, "peak_rss_mib": max(rss.values()), "kept": fil.counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--vae-steps", type=int, default=50, help="fixed cost, not per clip")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="vta-bench-ingest-") as tmp:
            print(json.dumps(run_one(args.child, args.preset, args.vae_steps, Path(tmp))))
        return
    runs = []
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--preset", args.preset,
                               "--vae-steps", str(args.vae_steps)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench child for {n} clips failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'stage':<10}" + "".join(f"{r['clips']:>12} clips/s" for r in runs))
    for st in STAGES:
        print(f"{st:<10}" + "".join(f"{r['clips_per_s'][st]:>20.2f}" for r in runs))
    print("peak RSS MiB: " + ", ".join(f"{r['clips']} clips: {r['peak_rss_mib']:.0f}" for r in runs))
    result = {"preset": args.preset, "vae_steps": args.vae_steps, "runs": runs}
    if len(runs) >= 2:
        result["rss_ratio_largest_vs_smallest"] = runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
        print(f"memory ratio {runs[-1]['clips']} vs {runs[0]['clips']} clips: "
              f"{result['rss_ratio_largest_vs_smallest']:.2f}x (target <= 1.3x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
