"""The paper's ablation tables at a chosen budget, with wall times, written as JSON.

    python bench/ablation.py --tables aux conditioning --preset demo --steps 100 --clips 32 \
        [--eval-steps 10] [--seeds 1] [--root DIR] [--out-dir bench/results]

Runs ``flows.ablate.ablate_flow`` (what ``vta ablate`` runs) for each table in one artifact root (tables
share the synthetic world and every ingest artifact they can), and writes
``{out-dir}/ablation_{table}_{preset}.json``: the command, the budget, the wall time, the world, and per
row the points, intervals, paired Δ to the baseline and the verdict against the paper's direction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", nargs="+", default=["aux", "conditioning"])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--eval-steps", type=int, default=10)
    ap.add_argument("--classifier-steps", type=int, default=300)
    ap.add_argument("--root", default=None, help="artifact root (default: a new temporary folder)")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    from flows.ablate import ablate_flow
    from flows.engine import Runner, prefect_api
    from vta_core.ablations import get_table

    root = args.root or tempfile.mkdtemp(prefix="vta-ablation-")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.tables:
        t0 = time.perf_counter()
        with prefect_api(Runner("local")):
            result = ablate_flow(table=name, root=root, preset=args.preset, steps=args.steps, seeds=args.seeds,
                                 clips=args.clips, eval_steps=args.eval_steps, classifier_steps=args.classifier_steps)
        wall = time.perf_counter() - t0
        table = get_table(name)
        doc = {
            "command": "python bench/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "table": name, "title": table.title, "world": table.world, "baseline": table.baseline,
            "budget": {"preset": args.preset, "steps": args.steps, "clips": args.clips, "seeds": args.seeds,
                       "eval_steps": args.eval_steps, "classifier_steps": args.classifier_steps},
            "wall_s": round(wall, 1), "reused": result["reused"], "artifact": result["ref"],
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "rows": result["rows"], "failures": result["failures"],
            "table_md": Path(result["table_md"]).read_text(),
        }
        path = out_dir / f"ablation_{name}_{args.preset}.json"
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(doc["table_md"])
        print(f"{name}: {wall:.0f} s -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
