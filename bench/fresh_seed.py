"""The demo checkpoint on clips it has never seen: a fresh synthetic world, then ``vta evaluate``.

    python bench/fresh_seed.py --root DEMO_ROOT --seed 7 [--clips 64]

Runs, as a user would, ``vta synth DIR --clips N --seed S`` and ``vta evaluate --checkpoint train@FINETUNE
--root DEMO_ROOT --videos DIR`` (the demo's fine-tuned checkpoint and its synthetic audio classifier, read
from ``DEMO_ROOT/report/report.json``), and writes bench/results/fresh_seed.json: the commands, every
track's values with bootstrap 95% intervals, the paired differences generated − control, and the checks
onset F1 >= 0.7, class accuracy >= 0.75 and onset-F1 difference to mismatched_video >= 0.3.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import collect, side_by_side  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"onset_f1": 0.7, "event_class_accuracy": 0.75, "onset_f1_minus_mismatched_video": 0.3}


def run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "cli.main", *cmd[1:]], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the artifact root of a finished `vta demo`")
    ap.add_argument("--seed", type=int, default=7, help="seed of the fresh synthetic world (the demo uses 0)")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fresh_seed.json")
    args = ap.parse_args()
    demo = json.loads((args.root / "report" / "report.json").read_text())["config"]
    classifier = args.root / "audio_classifier" / demo["audio_classifier"].split("@")[1] / "model"
    synth_dir = Path(tempfile.mkdtemp(prefix=f"vta-fresh-seed{args.seed}-")) / "synth"
    report_dir = args.root / f"report_seed{args.seed}"
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="vta-bench-prefect-")}
    commands = [["vta", "synth", str(synth_dir), "--clips", str(args.clips), "--seed", str(args.seed)],
                ["vta", "evaluate", "--checkpoint", demo["finetune"], "--root", str(args.root), "--videos",
                 str(synth_dir), "--metric-weights", f"synth_classifier={classifier}", "--out", str(report_dir)]]
    t0 = time.perf_counter()
    for cmd in commands:
        run(cmd, env)
    result = {"command": " ".join(["python", "bench/fresh_seed.py", *sys.argv[1:]]), "cpu_count": os.cpu_count(),
              "commands": [" ".join(c) for c in commands], "seed": args.seed, "clips": args.clips,
              "wall_s": time.perf_counter() - t0}
    result.update(collect(report_dir.parent, folder=report_dir.name))
    g = result["tracks"]["generated"]
    diff = (result.get("paired") or {}).get("mismatched_video", {}).get("onset_f1", {}).get("diff")
    values = {"onset_f1": g["onset_f1"], "event_class_accuracy": g["event_class_accuracy"],
              "onset_f1_minus_mismatched_video": diff}
    result["checks"] = {k: {"value": values[k], "need": need, "pass": values[k] is not None and values[k] >= need}
                        for k, need in CHECKS.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(side_by_side({"tracks": {}}, result))
    for k, c in result["checks"].items():
        print(f"{k}: {c['value']} (need >= {c['need']}): {'pass' if c['pass'] else 'FALLS SHORT'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
