"""Does the alignment filter find the noisy pairs of a noisy synthetic world? Written as JSON.

    python bench/noisy_world.py [--clips 64] [--noisy-share 0.5] [--seed 0] [--out bench/results/noisy_world.json]

Generates the same world twice — clean, and with ``--noisy-share`` of its train clips made noisy pairs
(vta_core/synth_world.py: shifted, swapped or off-screen audio) — and scores every train clip's AV-Align
(vta_core/av_align.py, the filter's criterion) in both. A noisy clip and its clean twin have the same
frames and differ only in the audio, so the paired difference per kind is what the noise does to the
score. Per kind: mean AV-Align with a bootstrap 95% interval, the paired Δ (noisy − clean twin) with its
interval, and the share the filter stage's AV-Align rule keeps at each threshold (0.1: the ablation's filter row; 0.2: the paper's).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.filter import filter_reasons  # noqa: E402
from vta_core.av_align import av_align  # noqa: E402
from vta_core.labels import read_labels  # noqa: E402
from vta_core.synth_world import generate_synth  # noqa: E402

THRESHOLDS = (0.1, 0.2)


def mean_interval(x: np.ndarray, *, seed: int, resamples: int = 2000) -> list[float]:
    """[mean, lo, hi]: the mean and its percentile-bootstrap 95% interval."""
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    boot = x[idx].mean(axis=1)
    return [float(x.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--noisy-share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "noisy_world.json"))
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vta-noisy-") as tmp:
        clean = generate_synth(Path(tmp) / "clean", clips=args.clips, seed=args.seed)
        noisy = generate_synth(Path(tmp) / "noisy", clips=args.clips, seed=args.seed, noisy_share=args.noisy_share)
        kinds = {r["clip_id"]: r["pair"] for r in pq.read_table(Path(tmp) / "noisy" / "pairs.parquet").to_pylist()}
        train = [c for c, lab in read_labels(noisy.labels_csv).items() if lab.split == "train"]
        results = {w: {c: av_align(Path(res.out_dir) / "videos" / f"{c}.mp4") for c in train}
                   for w, res in (("clean", clean), ("noisy", noisy))}
    # undefined (no peak on either side) counts as 0 in the means; the filter drops it like a low score
    scores = {w: {c: r["av_align"] or 0.0 for c, r in rs.items()} for w, rs in results.items()}

    def kept(c: str, t: float) -> bool:
        row = {"av_align": results["noisy"][c]["av_align"], "av_align_reason": results["noisy"][c]["reason"]}
        return not filter_reasons(row, clap_used=False, clap_threshold=0.0, av_align_threshold=t)

    by_kind: dict[str, dict] = {}
    for kind in ("clean", "shifted", "swapped", "offscreen"):
        ids = [c for c in train if kinds[c] == kind]
        if not ids:
            continue
        x = np.array([scores["noisy"][c] for c in ids])
        twin = np.array([scores["clean"][c] for c in ids])
        by_kind[kind] = {
            "clips": len(ids), "av_align": mean_interval(x, seed=args.seed),
            "delta_vs_clean_twin": mean_interval(x - twin, seed=args.seed),
            "kept": {str(t): float(np.mean([kept(c, t) for c in ids])) for t in THRESHOLDS},
        }
    noisy_ids = [c for c in train if kinds[c] != "clean"]
    clean_ids = [c for c in train if kinds[c] == "clean"]
    summary = {t: {"noisy_removed": float(np.mean([not kept(c, t) for c in noisy_ids])) if noisy_ids else None,
                   "clean_removed": float(np.mean([not kept(c, t) for c in clean_ids])) if clean_ids else None}
               for t in THRESHOLDS}
    result = {
        "command": "python bench/noisy_world.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "clips": args.clips, "train_clips": len(train), "noisy_share": args.noisy_share, "seed": args.seed,
        "by_kind": by_kind, "filter": {str(t): v for t, v in summary.items()},
        "wall_s": round(time.monotonic() - t0, 1), "machine": {"python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for kind, v in by_kind.items():
        m, lo, hi = v["av_align"]
        d, dlo, dhi = v["delta_vs_clean_twin"]
        print(f"{kind:9s} n={v['clips']:3d} AV-Align {m:.3f} [{lo:.3f}, {hi:.3f}]  Δ vs clean twin {d:+.3f} "
              f"[{dlo:+.3f}, {dhi:+.3f}]  kept@0.1 {v['kept']['0.1']:.2f}  kept@0.2 {v['kept']['0.2']:.2f}")
    for t, v in summary.items():
        print(f"threshold {t}: removes {v['noisy_removed']} of noisy pairs, {v['clean_removed']} of clean clips")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
