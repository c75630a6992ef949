"""``vta serve``: Prefect deployments for the UI (ingest, train, evaluate, the full pipeline, a
single-stage rerun, the nightly evaluation on a cron schedule).

Each deployment's flow takes one pydantic model, so the Prefect UI renders a form with typed
fields and defaults; each run publishes its results as Prefect artifacts (tables, markdown, a link
to the HTML report). Start a server (``prefect server start``), point ``PREFECT_API_URL`` at it, run
``vta serve`` and click "Run" on a deployment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from pydantic import BaseModel, Field

from flows import NIGHTLY_CRON
from flows.engine import Runner, with_runner
from flows.publish import publish_report, publish_stages, publish_text
from flows.retries import TASK_OPTIONS
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, Sampler

Preset = Literal["demo", "paper", "tiny"]
RUNNER_PATTERN = r"^(local|dask|dask://\S+)$"
RUNNER_HELP = ("Where per-shard tasks run: local (the worker's process), dask (a LocalCluster on the worker) or "
               "dask://HOST:PORT (an existing Dask scheduler, e.g. the compose file's dask://scheduler:8786).")


def _default_runner() -> str:
    """The forms' default runner: ``$VTA_RUNNER`` (the compose file sets dask://scheduler:8786), else local."""
    return os.environ.get("VTA_RUNNER") or "local"


ROOT_HELP = "Artifact root (path or fsspec URL); empty = $VTA_ROOT or ./vta-artifacts on the worker."


class IngestParams(BaseModel):
    videos_dir: str | None = Field(None, description="Folder of videos on the worker (any container FFmpeg reads).")
    labels_csv: str | None = Field(None, description="VGGSound-layout CSV: ytid,start_seconds,label,split.")
    root: str | None = Field(None, description=ROOT_HELP)
    preset: Preset = "demo"
    synth_clips: int = Field(0, ge=0, description="Also generate and ingest N synthetic clips.")
    max_windows: int | None = Field(None, ge=1, description="Windows per video (empty = every full window).")
    vision: str | None = Field(None, description="Frozen vision encoder spec (empty = the preset's).")
    filter: bool = Field(True, description="Drop clips below the CLAP / AV-Align thresholds or with speech.")
    av_align_threshold: float | None = Field(None, description="Keep AV-Align > this (empty = 0.2).")
    speech_threshold: float | None = Field(None, description="Drop windows whose speech share exceeds this (empty = 0.5; 1 keeps all).")
    text: str | None = Field(None, description="Label text encoder spec (empty = the preset's; 'none' = no label text).")
    runner: str = Field(default_factory=_default_runner, pattern=RUNNER_PATTERN, description=RUNNER_HELP)
    dask_workers: int | None = Field(None, ge=1, description="runner dask: worker processes (empty = one per core).")


class TrainParams(BaseModel):
    root: str | None = Field(None, description=ROOT_HELP)
    shards: str | None = Field(None, description="shards[@VERSION] (empty = the latest shards artifact).")
    preset: Preset = "demo"
    mode: Literal["video", "audio", "finetune"] = "video"
    init: str | None = Field(None, description="finetune: train@VERSION or a checkpoint folder.")
    steps: int | None = Field(None, ge=1, description="Empty = the preset's default.")
    batch_size: int | None = Field(None, ge=1, description="The global batch (split over the processes).")
    seed: int = 0
    nproc: int = Field(1, ge=1, description="Training processes on the worker's machine (DDP; gloo on CPU, "
                                            "NCCL on GPUs); logs and progress come from rank 0.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per process and step.")
    channels_last: bool = Field(False, description="NHWC UNet weights (faster convolutions on GPUs).")
    compile: bool = Field(False, description="torch.compile the UNet (the first steps pay the compile).")


class EvaluateParams(BaseModel):
    train: str = Field("train", description="train[@VERSION] (default: the latest) or a checkpoint folder.")
    synth_dir: str | None = Field(None, description="A `vta synth` folder; empty = a fixed synthetic test set.")
    root: str | None = Field(None, description=ROOT_HELP)
    sampler: Sampler = DEFAULT_SAMPLER
    steps: int = Field(DEFAULT_STEPS, ge=1, description="Denoising steps per clip.")
    guidance: float = Field(DEFAULT_GUIDANCE, description="Classifier-free guidance scale.")
    max_clips: int | None = Field(None, ge=1)
    seed: int = 0


class NightlyParams(BaseModel):
    synth_dir: str | None = Field(None, description="A `vta synth` folder; empty = a fixed synthetic test set.")
    root: str | None = Field(None, description=ROOT_HELP)
    steps: int = Field(DEFAULT_STEPS, ge=1)
    max_clips: int | None = Field(None, ge=1)
    metric: str = Field("onset_f1", description="Compare the latest checkpoint with the previous best on this.")


class PipelineParams(BaseModel):
    root: str | None = Field(None, description=ROOT_HELP)
    quick: bool = Field(False, description="A few clips and steps (wiring check, minutes).")
    seed: int = 0
    runner: str = Field(default_factory=_default_runner, pattern=RUNNER_PATTERN, description=RUNNER_HELP)


class AblateParams(BaseModel):
    table: Literal["aux", "augment", "conditioning", "encoders"] = Field(
        "aux", description="aux: Table 3 (text / PE / flow); augment: Table 4 (filter, concat, pretraining); "
                           "conditioning: cross-attention vs the time-aligned path; encoders: Table 2 (pixel encoders).")
    root: str | None = Field(None, description=ROOT_HELP)
    preset: Preset = "demo"
    steps: int | None = Field(None, ge=1, description="Training steps per row (empty = the preset's).")
    seeds: int = Field(1, ge=1, description="Seeds per row.")
    clips: int = Field(64, ge=4, description="Synthetic clips (train + test split).")
    eval_steps: int = Field(DEFAULT_STEPS, ge=1, description="Sampler steps per generated clip.")
    eval_max_clips: int | None = Field(None, ge=1, description="Test clips per evaluation (empty = all).")
    seed: int = 0
    runner: str = Field(default_factory=_default_runner, pattern=RUNNER_PATTERN, description=RUNNER_HELP)
    ratings: str | None = Field(None, description="A `vta listen --ablation` ratings Parquet file: adds the "
                                                  "listening scores of the rows (empty = none).")
    world: list[Literal["lookalike", "overlap", "moving"]] = Field(
        default_factory=list, description="Harder synthetic world: look-alike classes that only the label tells "
                                          "apart, overlapping events, moving objects (empty = the table's own world).")


class RerunParams(BaseModel):
    stage: str = Field(..., description="STAGE or STAGE@VERSION, e.g. decode or features@0123abcd4567.")
    root: str | None = Field(None, description=ROOT_HELP)
    force: bool = Field(False, description="Recompute from the recorded inputs; a new version only if results change.")
    runner: str = Field(default_factory=_default_runner, pattern=RUNNER_PATTERN, description=RUNNER_HELP)


@flow(name="vta-ingest")
def ingest_deployment(params: IngestParams = IngestParams()) -> dict[str, Any]:
    from flows.ingest import ingest_flow

    overrides = {"max_windows": params.max_windows, "vision": params.vision, "filter": params.filter,
                 "av_align_threshold": params.av_align_threshold, "speech_threshold": params.speech_threshold,
                 "text": params.text}
    runner = Runner(params.runner, workers=params.dask_workers)
    result = with_runner(ingest_flow, runner)(videos_dir=params.videos_dir, labels_csv=params.labels_csv,
                                              root=params.root, preset=params.preset, synth_clips=params.synth_clips,
                                              overrides=overrides, runner=runner.value)
    publish_stages(result["stages"], key="ingest-stages", title=f"ingest into {result['root']}")
    return result


@flow(name="vta-train")
def train_deployment(params: TrainParams = TrainParams()) -> dict[str, Any]:
    from flows.train import train_flow

    options = params.model_dump(exclude={"root", "shards"})
    result = train_flow(root=params.root, shards=params.shards, options=options)
    publish_stages([result["train"]], key="train-result", title=f"trained on {result['shards']}")
    return result


# a fixed synthetic test set (every clip in the test split), generated once per root as a synth artifact
TEST_SET = {"clips": 8, "seed": 20240, "test_fraction": 1.0}


@task(name="test-set", **TASK_OPTIONS)
def test_set_task(root: str | None) -> str:
    from stages.synth import synth_paths, synth_stage
    from storage import ArtifactStore

    art = synth_stage(ArtifactStore(root), **TEST_SET)
    return str(Path(synth_paths(art)["videos_dir"]).parent)


@flow(name="vta-evaluate")
def evaluate_deployment(params: EvaluateParams = EvaluateParams()) -> dict[str, Any]:
    """flows/evaluate.py's evaluate_flow (it publishes its summary table and markdown)."""
    from flows.evaluate import evaluate_flow

    synth = params.synth_dir or test_set_task(params.root)
    point = {"sampler": params.sampler, "steps": params.steps, "guidance": params.guidance}
    return evaluate_flow(checkpoint=params.train, synth_dir=synth, root=params.root, grid=[point], seed=params.seed,
                         max_clips=params.max_clips)


@flow(name="vta-nightly-evaluate")
def nightly_evaluation_deployment(params: NightlyParams = NightlyParams()) -> dict[str, Any]:
    """flows/sweep.py's nightly_sweep: evaluate every train artifact not yet evaluated, extend the history."""
    from flows.sweep import nightly_sweep

    synth = params.synth_dir or test_set_task(params.root)
    return nightly_sweep(root=params.root, synth_dir=synth, steps=params.steps, max_clips=params.max_clips,
                         metric=params.metric)


@flow(name="vta-pipeline")
def pipeline_deployment(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    from flows.demo import demo_flow

    result = demo_flow(root=params.root, quick=params.quick, seed=params.seed, runner=params.runner)
    publish_stages(result["stages"], key="pipeline-stages", title="synth -> ingest -> train -> evaluate")
    publish_report(result["report"], key="pipeline-report")
    return result


@flow(name="vta-ablate")
def ablate_deployment(params: AblateParams = AblateParams()) -> dict[str, Any]:
    """flows/ablate.py: train and evaluate every row of one ablation table; publishes the table."""
    from flows.ablate import ablate_flow

    result = ablate_flow(**params.model_dump())  # the flow gives the runner to its ingest and rows
    publish_text(Path(result["table_md"]).read_text(), key="ablation-table")
    return result


@flow(name="vta-rerun")
def rerun_deployment(params: RerunParams) -> dict[str, Any]:
    from flows.rerun import rerun, rerun_flow

    if params.runner == "local":
        result = rerun(params.stage, root=params.root, force=params.force)
    else:
        result = with_runner(rerun_flow, Runner(params.runner))(ref=params.stage, root=params.root, force=params.force,
                                                                runner=params.runner)
    publish_text("\n".join(f"- **{k}**: {v}" for k, v in result.items()), key="rerun-result")
    return result


def deployments(*, nightly_cron: str = NIGHTLY_CRON, timezone: str = "UTC", root: str | None = None) -> list[Any]:
    """The RunnerDeployments ``vta serve`` serves; ``root`` becomes every form's default root."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    module = {"entrypoint_type": EntrypointType.MODULE_PATH}  # importable from any working directory

    def defaults(model: type[BaseModel], **required: Any) -> dict[str, Any]:
        return {"params": model(**required, root=root).model_dump(mode="json")}

    return [
        ingest_deployment.to_deployment("ingest", **module, parameters=defaults(IngestParams),
                                        description="Videos -> training shards (every stage a versioned artifact)."),
        train_deployment.to_deployment("train", **module, parameters=defaults(TrainParams),
                                       description="Pretrain or fine-tune on committed shards; resumes a killed run."),
        evaluate_deployment.to_deployment("evaluate", **module, parameters=defaults(EvaluateParams),
                                          description="Score one train artifact on a synthetic test set."),
        pipeline_deployment.to_deployment("pipeline", **module, parameters=defaults(PipelineParams),
                                          description="The whole DAG on generated data: synth -> ... -> report."),
        ablate_deployment.to_deployment("ablate", **module, parameters=defaults(AblateParams),
                                        description="One of the paper's ablation tables, every row trained and "
                                                    "evaluated with the same budget."),
        rerun_deployment.to_deployment("rerun", **module, parameters=defaults(RerunParams, stage="decode"),
                                       description="Rerun one stage from its recorded inputs."),
        nightly_evaluation_deployment.to_deployment("nightly", **module, parameters=defaults(NightlyParams),
                                         schedules=[Cron(nightly_cron, timezone=timezone)],
                                         description=f"Evaluate every train artifact not yet evaluated ({nightly_cron} "
                                                     f"{timezone})."),
    ]


def serve(*, nightly_cron: str = NIGHTLY_CRON, timezone: str = "UTC", root: str | None = None,
          limit: int | None = None, only: list[str] | None = None) -> None:
    """Serve the deployments until interrupted (``only``: a subset by deployment name)."""
    import prefect

    deps = deployments(nightly_cron=nightly_cron, timezone=timezone, root=root)
    if only:
        unknown = sorted(set(only) - {d.name for d in deps})
        if unknown:
            raise ValueError(f"unknown deployment(s) {unknown}; choose from {[d.name for d in deps]}")
        deps = [d for d in deps if d.name in only]
    prefect.serve(*deps, limit=limit)
