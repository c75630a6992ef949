"""The demo's figures as a committed result: train refs, stage timings, every track's metrics, the targets.

    python bench/demo.py [--root DIR]            run `vta demo --root DIR --json` (fresh PREFECT_HOME), time it
    python bench/demo.py --root DIR --collect    read the report of a demo that already ran in DIR

Writes bench/results/demo.json (the README's and the notes' demo figures come from it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACK_METRICS = ("onset_f1", "event_class_accuracy", "av_align")


def collect(root: Path) -> dict:
    """The figures of the demo report in ``root/report/report.json``."""
    report = json.loads((root / "report" / "report.json").read_text())
    config = report.get("config", {})
    return {
        "pretrain": config.get("pretrain"), "finetune": config.get("finetune"),
        "precision": config.get("precision"), "evaluation": config.get("evaluation_ref"),
        "timings_s": report.get("timings_s"),
        "tracks": {track: {m: values.get(m) for m in TRACK_METRICS} for track, values in report["metrics"].items()},
        "targets": report.get("targets"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="artifact root (default: a fresh temporary folder)")
    ap.add_argument("--collect", action="store_true", help="only read the report of a finished demo in --root")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo.json")
    args = ap.parse_args()
    if args.collect and args.root is None:
        raise SystemExit("--collect needs --root")
    root = args.root or Path(tempfile.mkdtemp(prefix="vta-bench-demo-"))
    result: dict = {"command": " ".join(["python", "bench/demo.py", *sys.argv[1:]]), "cpu_count": os.cpu_count()}
    if not args.collect:
        env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="vta-bench-prefect-")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cli.main", "demo", "--root", str(root), "--json"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        result["wall_s"] = time.perf_counter() - t0
    result.update(collect(root))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    t = result["tracks"]
    print(f"{result['finetune']}: " + ", ".join(f"{k} F1 {v['onset_f1']:.3f} class {v['event_class_accuracy']:.3f}"
                                                 for k, v in t.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
