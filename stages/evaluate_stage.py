"""evaluate as a versioned artifact ``evaluate/{version}/``: one train artifact scored on one
synthetic test set (see stages/evaluate.py). The version hashes the train version, the test set's
content fingerprint and the evaluation settings, so "already evaluated" is "already committed":
the nightly evaluation only computes what is new. Issue #6 extends the metrics.

Files: report.json, report.html, per_clip.parquet, clips/<clip_id>/... (as ``vta evaluate`` writes).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.decode import fingerprint, list_inputs
from storage import Artifact, ArtifactStore, StageSpec

log = logging.getLogger("vta.evaluate")

STAGE = "evaluate"
CODE_VERSION = "1"


def evaluate_spec(*, train: Artifact, synth_dir: str | Path, split: str, steps: int, sampler: str, guidance: float,
                  seed: int, max_clips: int | None) -> StageSpec:
    synth = Path(synth_dir)
    if not (synth / "videos").is_dir() or not (synth / "labels.csv").is_file():
        raise FileNotFoundError(f"not a `vta synth` folder (videos/ + labels.csv): {synth}")
    params = {"split": split, "steps": steps, "sampler": sampler, "guidance": guidance, "seed": seed,
              "max_clips": max_clips}
    inputs = {"train": train.version, "synth": fingerprint(list_inputs(synth / "videos"), synth / "labels.csv")}
    return StageSpec(STAGE, params, inputs, CODE_VERSION)


def evaluate_stage(store: ArtifactStore, *, train: Artifact, synth_dir: str | Path, split: str = "test",
                   steps: int = 25, sampler: str = "dpmsolver++", guidance: float = 3.0, seed: int = 0,
                   max_clips: int | None = None, device: str = "cpu",
                   echo: Callable[[str], None] = print) -> Artifact:
    """Evaluate ``train`` on ``synth_dir`` (or reuse the committed evaluation); the commit record
    carries the metric blocks and targets."""
    from stages.evaluate import evaluate_synthetic
    from stages.report import write_report
    from stages.train import checkpoint_dir

    spec = evaluate_spec(train=train, synth_dir=synth_dir, split=split, steps=steps, sampler=sampler,
                         guidance=guidance, seed=seed, max_clips=max_clips)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: %s was already evaluated", w.artifact.ref, train.ref)
            return w.artifact
        with tempfile.TemporaryDirectory(prefix="vta-evaluate-") as tmp:
            ev = evaluate_synthetic(checkpoint=checkpoint_dir(train), synth_dir=synth_dir, out_dir=tmp, split=split,
                                    steps=steps, sampler=sampler, guidance=guidance, seed=seed,
                                    max_clips=max_clips, device=device, echo=echo)
            path = write_report(out_dir=tmp, evaluation=ev, timings_s={},
                                config={"command": "evaluate", "train": train.ref,
                                        "synth_dir": str(Path(synth_dir).resolve())})
            report: dict[str, Any] = json.loads(path.read_text())
            for f in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                w.write_bytes(f.relative_to(tmp).as_posix(), f.read_bytes())
        return w.commit(counts={"ok": len(ev["clips"]), "failed": 0, "filtered": 0},
                        extra={"train": train.ref, "metrics": report["metrics"], "targets": report["targets"]})
