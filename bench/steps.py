"""Quality against sampler steps on the demo model: the curve behind the default sampler and steps.

    python bench/steps.py --root DEMO_ROOT [--samplers ddim dpmsolver++ unipc euler] [--steps 1 2 4 8 16 25 50]
                          [--guidance 3] [--fresh-seed 7 --fresh-clips 16] [--out bench/results/steps.json]

Reads the demo's fine-tuned checkpoint and synthetic world from ``DEMO_ROOT/report/report.json`` (a finished
``vta demo --root DEMO_ROOT``), then scores the generated track at every (sampler, steps, guidance) point
with ``vta_core.evaluation.steps_curve`` — the same test clips and the same noise at every point — on the
demo's test clips and, with ``--fresh-seed``, on a fresh synthetic world the model never saw. Writes the
rows (onset F1, class accuracy, AV-Align with bootstrap 95% intervals, seconds per clip) and the pick to
``--out``, and the plot next to it (``steps.png``).

The pick (``pick``): among the points whose onset F1 and class accuracy are within ``--tolerance`` of their
own sampler's most-steps point on every test set (converged), the fewest denoiser calls per clip, then the
fewest seconds. Onset F1 and class accuracy do not measure fidelity (FAD / IS need weights that are not
reachable here), so the pick is a lower bound on the steps a default needs, not the default itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import ArtifactStore  # noqa: E402
from vta_core.evaluation.steps_curve import STEP_COUNTS, plot_steps, steps_curve  # noqa: E402
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS  # noqa: E402


def pick(testsets: dict[str, list[dict]], *, tolerance: float) -> dict:
    """The cheapest converged point: onset F1 and class accuracy within ``tolerance`` of its own sampler's
    most-steps point on every test set; fewest denoiser calls per clip first, then seconds per clip."""
    metrics = ("onset_f1", "event_class_accuracy")
    key = ("sampler", "steps", "guidance")

    def reference(rows: list[dict], r: dict) -> dict:
        same = [x for x in rows if (x["sampler"], x["guidance"]) == (r["sampler"], r["guidance"])]
        return max(same, key=lambda x: x["steps"])

    demo = next(iter(testsets.values()))
    converged = []
    for r in demo:
        ok = True
        for rows in testsets.values():
            here = next(x for x in rows if all(x[k] == r[k] for k in key))
            ref = reference(rows, here)
            ok &= all(here[m] is not None and ref[m] is not None and here[m] >= ref[m] - tolerance for m in metrics)
        if ok:
            converged.append(r)
    choice = min(converged, key=lambda r: (r["unet_calls"], r["seconds_per_clip"]))
    return {"rule": f"onset F1 and class accuracy within {tolerance} of the same sampler's most-steps point on "
                    "every test set; then fewest denoiser calls, then seconds per clip",
            "converged": [{k: r[k] for k in key} for r in converged],
            "choice": {k: choice[k] for k in (*key, "unet_calls", "onset_f1", "event_class_accuracy", "av_align",
                                              "log_spectral_l1_to_converged", "seconds_per_clip")}}


def _ci(r: dict, m: str) -> str:
    return "n/a" if r[m] is None else f"{r[m]:.3f} [{r[f'{m}_lo']:.3f}, {r[f'{m}_hi']:.3f}]"


def table(rows: list[dict]) -> str:
    out = ["| sampler | steps | w | onset F1 [95%] | class accuracy [95%] | AV-Align | log-spec. L1 to converged | s/clip |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        av = "n/a" if r["av_align"] is None else f"{r['av_align']:.3f}"
        out.append(f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {_ci(r, 'onset_f1')} | "
                   f"{_ci(r, 'event_class_accuracy')} | {av} | {r['log_spectral_l1_to_converged']:.3f} | "
                   f"{r['seconds_per_clip']:.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the artifact root of a finished `vta demo`")
    ap.add_argument("--samplers", nargs="+", default=["ddim", "dpmsolver++", "unipc", "euler"])
    ap.add_argument("--steps", nargs="+", type=int, default=list(STEP_COUNTS))
    ap.add_argument("--guidance", nargs="+", type=float, default=[DEFAULT_GUIDANCE])
    ap.add_argument("--fresh-seed", type=int, default=None, help="also a fresh synthetic world of this seed")
    ap.add_argument("--fresh-clips", type=int, default=16, help="clips of the fresh world (its test split is scored)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="the few-step goal's margin (issue: within 0.05)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "steps.json")
    args = ap.parse_args()
    config = json.loads((args.root / "report" / "report.json").read_text())["config"]
    store = ArtifactStore(str(args.root))
    checkpoint = store.resolve(config["finetune"]).file("checkpoint")
    evaluation = store.resolve(config["evaluation_ref"])  # the demo's evaluation names its synthetic world
    synth_dir = Path(json.loads(Path(evaluation.file("report.json")).read_text())["config"]["synth_dir"])
    points = [{"sampler": s, "steps": n, "guidance": w} for w in args.guidance for s in args.samplers for n in args.steps]
    testsets = {"demo test clips": synth_dir}
    if args.fresh_seed is not None:
        from vta_core.synth_world import generate_synth

        fresh = Path(tempfile.mkdtemp(prefix=f"vta-steps-seed{args.fresh_seed}-")) / "synth"
        generate_synth(fresh, clips=args.fresh_clips, seed=args.fresh_seed)
        testsets[f"fresh world, seed {args.fresh_seed}"] = fresh
    result: dict = {"command": " ".join(["python", "bench/steps.py", *sys.argv[1:]]), "cpu_count": os.cpu_count(),
                    "checkpoint": config["finetune"], "default": {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS,
                                                                "guidance": DEFAULT_GUIDANCE}, "testsets": {}}
    t0 = time.perf_counter()
    for name, folder in testsets.items():
        print(f"== {name}: {folder}")
        result["testsets"][name] = steps_curve(checkpoint=checkpoint, synth_dir=folder, points=points)
    result["wall_s"] = time.perf_counter() - t0
    result["pick"] = pick({name: curve["rows"] for name, curve in result["testsets"].items()},
                          tolerance=args.tolerance)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plot_steps(result["testsets"]["demo test clips"]["rows"], png,
               title=f"demo model ({config['finetune']}), {len(result['testsets']['demo test clips']['clips'])} "
                     "demo test clips")
    for name, curve in result["testsets"].items():
        print(f"\n{name} ({len(curve['clips'])} clips)\n{table(curve['rows'])}")
    print(f"\npick: {result['pick']}\nwrote {args.out} and {png} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
