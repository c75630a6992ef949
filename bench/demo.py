"""The demo's figures as a committed result: train refs, stage timings, every track's metrics, the targets.

    python bench/demo.py [--root DIR] [--seed S] run `vta demo --root DIR --seed S --json` (fresh PREFECT_HOME), time it
    python bench/demo.py --root DIR --collect    read the report of a demo that already ran in DIR
    ... --out bench/results/saliency_demo.json     (any --out) the saliency shares are in every result
    ... [--before bench/results/demo_before_12.json]  also print an earlier result beside this one

Writes bench/results/demo.json (the README's and the notes' demo figures come from it): per track the
point values and their bootstrap 95% intervals over clips, the paired differences generated − control,
the targets and the stage timings; the saliency summary (vta_core/saliency.py: share of the saliency inside
the sounding object's / silent decoy's / ball's boxes against their area share, generated vs
mismatched-video audio) and its table.
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


def collect(root: Path, *, folder: str = "report") -> dict:
    """The figures of the demo report in ``root/{folder}/report.json``."""
    report = json.loads((root / folder / "report.json").read_text())
    config = report.get("config", {})
    return {
        "pretrain": config.get("pretrain"), "finetune": config.get("finetune"),
        "precision": config.get("precision"), "evaluation": config.get("evaluation_ref"),
        "timings_s": report.get("timings_s"),
        "tracks": {track: {**{m: values.get(m) for m in TRACK_METRICS},
                           **{f"{m}_ci95": (values.get("intervals") or {}).get(m) for m in TRACK_METRICS}}
                   for track, values in report["metrics"].items()},
        "paired": report["metrics"].get("generated", {}).get("paired"),
        "clips": report["metrics"].get("generated", {}).get("n_clips"),
        "targets": report.get("targets"),
        "saliency": (report.get("saliency") or {}).get("summary"),
    }


def saliency_table(result: dict) -> str:
    """A markdown table: per track and kind the share inside the boxes, the area share and the lift."""
    summary = result.get("saliency") or {}
    lines = ["| track | kind | share (95% CI) | area share | lift (95% CI) |", "|---|---|---|---|---|"]
    for track, by_kind in summary.items():
        for kind, v in by_kind.items():
            if kind in ("n_clips", "paired") or not isinstance(v, dict):
                continue
            lines.append(f"| {track} | {kind} | {_cell(v.get('share'), [v['share_lo'], v['share_hi']] if v.get('share_lo') is not None else None)} "
                         f"| {_cell(v.get('area_share'))} | {_cell(v.get('lift'), [v['lift_lo'], v['lift_hi']] if v.get('lift_lo') is not None else None)} |")
    for control, by_kind in (summary.get("generated", {}).get("paired") or {}).items():
        for kind, d in by_kind.items():
            lines.append(f"| generated − {control} | {kind} | | | Δ lift {_cell(d['diff'], [d['lo'], d['hi']] if d.get('lo') is not None else None)} |")
    return "\n".join(lines)


def _cell(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def side_by_side(before: dict, after: dict) -> str:
    """A markdown table: every track's onset F1 / class accuracy / AV-Align, before and after."""
    lines = ["| track | metric | before | after (95% CI) |", "|---|---|---|---|"]
    for track in dict.fromkeys([*after["tracks"], *before["tracks"]]):
        b, a = before["tracks"].get(track, {}), after["tracks"].get(track, {})
        for m in TRACK_METRICS:
            lines.append(f"| {track} | {m} | {_cell(b.get(m))} | {_cell(a.get(m), a.get(f'{m}_ci95'))} |")
    for control, by_metric in (after.get("paired") or {}).items():
        for m, d in by_metric.items():
            lines.append(f"| generated − {control} | {m} | | {_cell(d['diff'], [d['lo'], d['hi']])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="artifact root (default: a fresh temporary folder)")
    ap.add_argument("--collect", action="store_true", help="only read the report of a finished demo in --root")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo.json")
    ap.add_argument("--before", type=Path, default=None, help="an earlier demo.json to print beside this one")
    ap.add_argument("--seed", type=int, default=0, help="`vta demo --seed`: another synthetic world and training seeds")
    args = ap.parse_args()
    if args.collect and args.root is None:
        raise SystemExit("--collect needs --root")
    root = args.root or Path(tempfile.mkdtemp(prefix="vta-bench-demo-"))
    result: dict = {"command": " ".join(["python", "bench/demo.py", *sys.argv[1:]]), "cpu_count": os.cpu_count()}
    if not args.collect:
        env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="vta-bench-prefect-")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cli.main", "demo", "--root", str(root), "--seed", str(args.seed), "--json"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        result["wall_s"] = time.perf_counter() - t0
    result.update(collect(root))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.before is not None:
        print(side_by_side(json.loads(args.before.read_text()), result))
    else:
        print(side_by_side({"tracks": {}}, result))
    if result.get("saliency"):
        print(saliency_table(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
