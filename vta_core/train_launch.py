"""One training job on N ranks: the JSON a driver (the train stage) hands to every rank, the function each
rank runs, and the entry point torchrun starts on each process.

Two ways to get N ranks:
- ``vta train --nproc N`` (one machine): the stage writes ``job.json`` and runs
  ``torchrun --standalone --nproc-per-node N -m vta_core.train_launch job.json``; rank 0 prints progress
  lines (``@@vta-train {...}``) that the stage turns into Prefect logs, progress and uploads.
- an outside launcher (``torchrun --nnodes 2 ... $(which vta) train ...``, ``accelerate launch``): every
  process runs ``vta train``; rank 0 runs the flow and the stage and sends the job to the others
  (:func:`lead`), which wait for it (:func:`follow`).
Only rank 0 reads checkpoints and writes the run folder: the other ranks need the shards and nothing else
(the job's paths when they exist on their machine, else a local copy of the shards artifact).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vta_core.data import ShardSamples, TrainingSet, training_frames
from vta_core.distributed import World, broadcast_json, die_with_parent, init_world
from vta_core.geometry import ClipGeometry
from vta_core.model import ModelConfig, VTAModel
from vta_core.train import TrainResult, train

log = logging.getLogger("vta.train")
PROGRESS = "@@vta-train "  # + JSON {"done", "steps", "loss"}: rank 0's progress on stdout
_led = False  # this process (rank 0 under an outside launcher) sent a job to the other ranks


def shard_files(job: dict[str, Any]) -> list[str]:
    """The job's train shards as paths on this machine: the driver's paths when they exist here, else a
    (cached) local copy of the shards artifact from the job's root."""
    if all(Path(u).is_file() for u in job["urls"]):
        return list(job["urls"])
    from storage import ArtifactStore, local_copy

    art = local_copy(ArtifactStore(job["root"]).resolve(job["shards"]))
    return [art.file(Path(u).name) for u in job["urls"]]


def run_job(job: dict[str, Any], *, world: World,
            on_step: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Build the model and the data of ``job`` and train on this rank."""
    urls = shard_files(job)
    data = TrainingSet(ShardSamples(urls), batch_size=job["batch_size"], scaling_factor=job["scaling_factor"],
                       seed=job["seed"])
    config = ModelConfig.from_dict(job["model"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job["seed"])
        model = VTAModel(config)
    frames = training_frames(urls) if config.feature_norm and job["mode"] != "audio" and world.main else None
    return train(model, data, geometry=ClipGeometry.from_dict(job["geometry"]), out_dir=job["run_dir"],
                 steps=job["steps"], lr=job["lr"], warmup=job["warmup"], lr_schedule=job["lr_schedule"],
                 ckpt_every=job["ckpt_every"], seed=job["seed"], mode=job["mode"],
                 init_checkpoint=job["init_checkpoint"], resume_from=job["resume_from"], precision=job["precision"],
                 cpu=job["cpu"], log_every=1 if job["cpu"] or not torch.cuda.is_available() else 10, progress=job.get("progress_bar", False), feature_frames=frames,
                 world=world, grad_accum=job["grad_accum"], grad_checkpointing=job["grad_checkpointing"],
                 loader_workers=job["loader_workers"], channels_last=job.get("channels_last", False),
                 compile_unet=job.get("compile", False), on_step=on_step)


def lead(job: dict[str, Any], *, world: World, on_step: Callable[[int, int, float], None] | None) -> TrainResult:
    """Rank 0 under an outside launcher: send ``job`` to the other ranks, then train with them."""
    global _led
    broadcast_json(job, world)
    _led = True
    return run_job(job, world=world, on_step=on_step)


def release(world: World) -> None:
    """Rank 0 under an outside launcher, when it will not train (reused artifact, an error before the job):
    tell the waiting ranks to stop."""
    global _led
    if world.distributed and world.main and not _led:
        broadcast_json({"skip": True}, world)
        _led = True


def follow(world: World) -> TrainResult | None:
    """Ranks 1..N-1 under an outside launcher: wait for rank 0's job and train it (None: nothing to do)."""
    job = broadcast_json(None, world)
    if not isinstance(job, dict) or job.get("skip"):
        return None
    return run_job(job, world=world)


def main(argv: list[str] | None = None) -> int:
    """``python -m vta_core.train_launch JOB.json`` on every rank (torchrun sets RANK / WORLD_SIZE)."""
    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        world = init_world(expected=job["nproc"], cpu=job["cpu"])

        def report(done: int, steps: int, loss: float) -> None:
            print(PROGRESS + json.dumps({"done": done, "steps": steps, "loss": loss}), flush=True)

        run_job(job, world=world, on_step=report if world.main else None)
    except Exception as e:  # one line per failed rank; torchrun then stops the others
        print(f"rank {rank}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
