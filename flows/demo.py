"""Prefect flow ``demo``: the whole DAG on generated data, CPU-sized.

synth (train + test split) -> ingest stages -> video-audio pretraining -> fine-tuning -> evaluate on
the held-out test split (a versioned ``evaluation`` artifact: generated audio beside the controls
mismatched_video, shuffled_video and unconditional, the VAE + vocoder reconstruction and the ground truth,
with bootstrap intervals; vta_core/evaluation/scoring.py) -> its report re-rendered with the demo's config in
``{root}/report/`` (report.json, report.html). ``quick``: a few clips and a handful of steps, to prove the
wiring (its numbers are not meant to pass the demo learning targets,
``vta_core.evaluation.report.DEMO_TARGETS``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.engine import Runner, with_runner
from flows.ingest import ingest_flow
from flows.retries import TASK_OPTIONS
from flows.train import train_task
from storage import ArtifactStore
from vta_core.accel import cpu_has_native_bf16
from vta_core.samplers import DEFAULT_STEPS


@dataclass(frozen=True)
class DemoConfig:
    clips: int = 64
    vae_steps: int = 300
    pretrain_mode: str = "video"  # video-audio pretraining (paper Sec. 3.4); "audio" = audio-only
    pretrain_steps: int = 350
    finetune_steps: int = 400  # fine-tuning from the pretrained checkpoint
    batch_size: int = 16
    eval_steps: int = DEFAULT_STEPS  # steps of the default sampler per generated clip
    eval_max_clips: int | None = None
    classifier_steps: int = 300  # the synthetic-world audio classifier behind the *_synth columns


FULL = DemoConfig()
QUICK = DemoConfig(clips=12, vae_steps=60, pretrain_steps=3, finetune_steps=3, batch_size=4, eval_steps=3,
                   eval_max_clips=2)


@task(name="audio_classifier", **TASK_OPTIONS)
def audio_classifier_task(root: str, synth: str, steps: int, seed: int) -> dict[str, Any]:
    """The synthetic-world audio classifier (its embeddings/logits give the *_synth metric columns)."""
    from stages.audio_classifier import audio_classifier_stage

    art = audio_classifier_stage(ArtifactStore(root), synth=synth, steps=steps, seed=seed)
    return {"ref": art.ref, "model_dir": art.file("model"), "held_out_accuracy": art.record.get("held_out_accuracy")}


@task(name="evaluate", **TASK_OPTIONS)
def evaluate_task(root: str, checkpoint: str, synth_dir: str, steps: int, seed: int,
                  max_clips: int | None, synth_classifier: str | None) -> dict[str, Any]:
    """The versioned evaluation stage (as ``vta evaluate``), reused when this evaluation is committed."""
    from stages.evaluation import evaluation_stage

    art = evaluation_stage(ArtifactStore(root), checkpoint=checkpoint, synth_dir=synth_dir, steps=steps, seed=seed,
                           max_clips=max_clips, metric_weights={"synth_classifier": synth_classifier},
                           echo=get_run_logger().info)
    return {"ref": art.ref, "path": art.path, "metrics": art.record["metrics"]}


@task(name="report", **TASK_OPTIONS)
def report_task(evaluation: str, out_dir: str, timings_s: dict[str, float], config: dict[str, Any]) -> str:
    """The evaluation artifact's report re-rendered in ``out_dir`` with the demo's config and timings."""
    from vta_core.evaluation.report import copy_report

    return str(copy_report(evaluation, out_dir, config=config, timings_s=timings_s))


@flow(name="demo", log_prints=True)
def demo_flow(root: str | None = None, quick: bool = False, seed: int = 0, runner: str = "local",
              dask_workers: int | None = None) -> dict[str, Any]:
    """synth -> ingest -> pretrain -> finetune -> evaluate -> report; returns the stage summaries, the
    report paths and the metric blocks. ``runner``: where the ingest's per-shard tasks run (the ingest
    subflow gets that runner's task runner; training and evaluation run in this process)."""
    cfg = QUICK if quick else FULL
    store = ArtifactStore(root)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    # Synthetic clips score AV-Align 0.04-0.26 (the bouncing distractor ball adds motion peaks that
    # never sound), so the paper's 0.2 would drop most of them: keep every clip with a match.
    ingest = with_runner(ingest_flow, Runner(runner, workers=dask_workers))(
        root=store.root, preset="demo", synth_clips=cfg.clips, synth_seed=seed, runner=runner,
        overrides={"av_align_threshold": 0.0, "vae_steps": cfg.vae_steps, "seed": seed})
    timings["ingest_s"] = time.perf_counter() - t
    stages = ingest["stages"]
    by_stage = {s["stage"]: s for s in stages}
    shards = by_stage["shards"]["ref"]

    t = time.perf_counter()
    # bf16 autocast where the CPU has native bf16 (~1.5x faster training steps), else fp32
    precision = "bf16" if cpu_has_native_bf16() else "fp32"
    common = {"preset": "demo", "batch_size": cfg.batch_size, "seed": seed, "device": "cpu", "precision": precision}
    pre = train_task(store.root, shards, {**common, "mode": cfg.pretrain_mode, "steps": cfg.pretrain_steps})
    fine = train_task(store.root, shards, {**common, "mode": "finetune", "steps": cfg.finetune_steps,
                                            "init": pre["ref"]})
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    out = Path(store.root) / "report"
    synth = str(Path(by_stage["synth"]["videos_dir"]).parent)  # videos/, labels.csv, events.parquet
    classifier = audio_classifier_task(store.root, synth, cfg.classifier_steps, seed)
    evaluation = evaluate_task(store.root, fine["checkpoint"], synth, cfg.eval_steps, seed, cfg.eval_max_clips,
                               classifier["model_dir"])
    timings["evaluate_s"] = time.perf_counter() - t
    config = {"quick": quick, "seed": seed, "demo": asdict(cfg), "ingest": ingest["config"],
              "pretrain": pre["ref"], "finetune": fine["ref"], "precision": precision, "audio_classifier": classifier["ref"],
              "audio_classifier_held_out_accuracy": classifier["held_out_accuracy"], "evaluation_ref": evaluation["ref"]}
    report = report_task(evaluation["path"], str(out), timings, config)
    return {"root": store.root, "config": config, "stages": [*stages, pre, fine], "report": report,
            "report_html": str(Path(report).with_suffix(".html")), "metrics": evaluation["metrics"],
            "timings_s": timings}
