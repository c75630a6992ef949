"""Training loop: one process or N under DDP (torchrun), AdamW + warm-up, EMA, gradient clipping and
accumulation, bf16 autocast, safetensors checkpoints with exact resume, TensorBoard scalars.

Modes (paper Sec. 3.4):
- ``audio``: audio-only pretraining — the vision path is never used; the condition is the label text
  (when the model has ``text_dim`` and the batch has ``text``) or ∅;
- ``video``: video-audio pretraining (vision + whatever auxiliaries the model has);
- ``finetune``: ``video`` starting from ``init_checkpoint`` (required).
Condition dropout (``ModelConfig.cond_dropout``) applies in every mode, and φ is in the optimizer.

Data: a :class:`vta_core.data.TrainingSet` (shards, global batch B, seed). Optimizer step k uses global
batch k of a seeded stream (``BatchPlan``); rank r of N computes its micro-batches of it (sizes differ by
at most one; ``grad_accum`` micro-batches per rank) and the per-sample losses are summed and scaled by
N / B, so DDP's gradient mean is exactly the mean over the B samples: the recipe (global batch, LR per
optimizer step, every sample's random draws) does not depend on N. Resume at step k is O(1). A plain
iterable of batches (one process, no accumulation) still works; its ``iter_from(k)`` is used on resume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vta_core.accel import set_tf32, use_sdpa
from vta_core.checkpoint import (
    apply_training_state,
    commit,
    load_checkpoint,
    rank_rng_state,
    read_training_state,
    save_checkpoint,
    save_training_state,
)
from vta_core.data import TrainingSet
from vta_core.distributed import (
    SINGLE,
    World,
    all_sum_tensor,
    barrier,
    broadcast_json,
    broadcast_tensors,
    gather_tensor,
)
from vta_core.geometry import ClipGeometry
from vta_core.model import Batch, VTAModel

log = logging.getLogger("vta.train")
TRACE_ENV = "VTA_TRAIN_TRACE"  # debugging: each rank appends the sample keys of every step to $VTA_TRAIN_TRACE.rankR.jsonl

MODES = ("audio", "video", "finetune")
STEP_DIR = re.compile(r"^step_(\d{7})$")


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # per step of this run (global mean over the B samples)
    checkpoint: Path | None = None  # the last one written (rank 0)
    world_size: int = 1


class _Objective(nn.Module):
    """Wraps ``model.loss`` as ``forward`` so DDP sees the call (gradient sync); returns the summed loss."""

    def __init__(self, model: VTAModel, geometry: ClipGeometry) -> None:
        super().__init__()
        self.model = model
        self.geometry = geometry

    def forward(self, batch: Batch, generator: torch.Generator, use_vision: bool) -> torch.Tensor:
        return self.model.loss(batch, geometry=self.geometry, generator=generator, use_vision=use_vision,
                               reduction="sum")


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The highest ``step_NNNNNNN`` folder under ``out_dir`` that has training state, or None."""
    out = Path(out_dir)
    found = [p for p in out.glob("step_*") if STEP_DIR.match(p.name) and (p / "state" / "state.json").is_file()]
    return max(found, key=lambda p: int(p.name[5:]), default=None)


def _batches(data: Iterable[Batch], start: int) -> Iterator[Batch]:
    """Endless batches from position ``start``: re-iterates ``data`` when it ends."""
    if hasattr(data, "iter_from"):
        first: Iterable[Batch] = data.iter_from(start)
    else:
        first = itertools.islice(_cycle(data), start, None)
    yield from first
    yield from _cycle(data)  # only reached when iter_from's iterator ends


def _cycle(data: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("training data yielded no batches")


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _digest(model: nn.Module) -> torch.Tensor:
    """The first 8 bytes of the sha256 of every weight, as an int64 (one per rank: they must agree)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return torch.tensor([int.from_bytes(h.digest()[:8], "little", signed=True)], dtype=torch.int64)


def _step_batches(data: TrainingSet | Iterable[Batch], *, start: int, steps: int, world: World, accum: int,
                  workers: int, pin: bool) -> Iterator[list[Batch]]:
    """This rank's micro-batches, step by step from ``start``."""
    if isinstance(data, TrainingSet):
        ds = data.rank_batches(rank=world.rank, world=world.size, accum=accum)
        loader = DataLoader(ds, batch_size=None, sampler=range(start, steps), num_workers=workers, pin_memory=pin,
                            prefetch_factor=4 if workers else None)
        return iter(loader)
    if world.distributed or accum != 1:
        raise ValueError("a plain iterable of batches trains one process without accumulation; "
                         "give a vta_core.data.TrainingSet for several processes or grad_accum")
    return ([b] for b in _batches(data, start))


def train(
    model: VTAModel,
    data: TrainingSet | Iterable[Batch],
    *,
    geometry: ClipGeometry,
    out_dir: str | Path,
    steps: int,
    lr: float = 6e-5,
    warmup: int = 300,
    lr_schedule: str = "constant_with_warmup",
    weight_decay: float = 1e-2,
    ema_decay: float = 0.9999,
    grad_clip: float | None = 1.0,
    ckpt_every: int = 1000,
    seed: int = 0,
    mode: str = "video",
    init_checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
    precision: str = "auto",
    cpu: bool = False,
    log_every: int = 10,
    progress: bool = True,
    feature_frames: torch.Tensor | None = None,
    world: World = SINGLE,
    grad_accum: int = 1,
    grad_checkpointing: bool = False,
    loader_workers: int | None = None,
    channels_last: bool = False,
    compile_unet: bool = False,
    compile_backend: str = "inductor",
    tf32: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps (counted from 0, so a resumed run continues to the
    same total). Rank 0 writes checkpoints to ``{out_dir}/step_NNNNNNN/`` every ``ckpt_every`` steps and at
    the end, after checking that every rank holds the same weights; ``on_step(done, steps, loss)`` is
    called on rank 0 after each step (and its checkpoint).

    world: this process's rank in a launched group (:func:`vta_core.distributed.init_world`); rank 0's
    weights (initial, ``init_checkpoint``, feature statistics) reach the others through DDP, and on resume
    rank 0 reads the checkpoint and sends the training state. precision: ``auto`` (bf16 autocast on CUDA,
    fp32 otherwise), ``bf16`` or ``fp32``; no GradScaler (bf16 needs none). lr_schedule: a diffusers
    scheduler name, stepped once per optimizer step. feature_frames: training frame features (N, D) for a
    ``feature_norm`` model whose statistics are not set yet (video modes; rank 0 only).

    Speed (none of it changes the recipe): SDPA attention; on CUDA fused AdamW, the EMA as multi-tensor
    (foreach) updates and ``tf32`` matmuls; ``channels_last`` UNet weights; ``compile_unet``: the UNet
    under ``torch.compile`` (in place: parameter names, so checkpoints, are unchanged); ``loader_workers``
    data-loading processes (None: 2 on CUDA, 0 on CPU) with pinned memory and prefetch on CUDA. The loop
    reads nothing back from the device between log points: losses, their finiteness check and ``on_step``
    are settled every ``log_every`` steps, at checkpoints and at the end (a non-finite loss still stops the
    run before any checkpoint holds it).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "finetune" and init_checkpoint is None:
        raise ValueError("mode='finetune' needs init_checkpoint")
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if steps < 1 or ckpt_every < 1 or grad_accum < 1:
        raise ValueError(f"steps, ckpt_every and grad_accum must be >= 1, got {steps}/{ckpt_every}/{grad_accum}")
    if geometry.latent_channels != model.config.latent_channels:
        raise ValueError(f"geometry latent_channels={geometry.latent_channels} != model {model.config.latent_channels}")
    out_dir = Path(out_dir)
    if world.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() and not cpu \
        else torch.device("cpu")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    _seed_everything(seed)
    if init_checkpoint is not None and world.main:  # pretrained weights (EMA when saved), architecture must match
        init = load_checkpoint(init_checkpoint)
        try:
            model.load_state_dict(init.model.state_dict())
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise ValueError(f"init_checkpoint {init_checkpoint} does not fit the model: {first}") from None
    if model.conditioner.needs_feature_stats and mode != "audio" and world.main:
        if feature_frames is None:
            raise ValueError("the model standardises frame features (feature_norm=True) but has no statistics "
                             "yet: pass feature_frames (N, D)")
        model.conditioner.set_feature_stats(feature_frames)
    model.to(device)
    model.train()
    cuda = device.type == "cuda"
    if cuda:
        set_tf32(tf32)
    use_sdpa(model.unet)
    if channels_last:
        model.unet.to(memory_format=torch.channels_last)
    if grad_checkpointing:
        model.unet.enable_gradient_checkpointing()
    if compile_unet:  # in place (nn.Module.compile): state_dict names stay those of the eager UNet
        model.unet.compile(backend=compile_backend, dynamic=False)  # no CUDA graphs: autograd + optimizer between calls
    if loader_workers is None:
        loader_workers = 2 if cuda else 0
    params = [p for p in model.parameters() if p.requires_grad]  # UNet and φ (and aux projections)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=cuda)
    lr_scheduler = get_scheduler(lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    # only rank 0 saves, so only it keeps EMA; foreach on CUDA = a few multi-tensor kernels per step
    ema = EMAModel(params, decay=ema_decay, foreach=cuda) if world.main else None
    if ema is not None:
        ema.to(device)
    noise_gen = torch.Generator().manual_seed(seed * 1000 + world.rank)  # t, ε, dropout of plain batches

    start = position = 0
    if resume_from is not None:  # rank 0 reads the checkpoint; the weights go out through DDP, the state here
        resume_from = Path(resume_from)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        tensors = meta = ema_weights = None
        if world.main:
            model.load_state_dict(load_file(str(resume_from / "model.safetensors")))
            ema_sd = load_file(str(resume_from / "ema.safetensors"), device=str(device))
            ema_weights = [ema_sd[n] for n in names]
            tensors, meta = read_training_state(resume_from / "state")
        tensors = broadcast_tensors(tensors, world)
        meta = broadcast_json(meta, world)
        restored = apply_training_state(tensors, meta, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
                                        ema_weights=ema_weights, generators={"noise": noise_gen},
                                        rank=world.rank, world_size=world.size)
        if not restored["exact"] and world.main:
            log.warning("resuming a %d-process run with %d processes: the schedule and data continue, the result "
                        "is not bit-exact", restored["world_size"], world.size)
        start, position = restored["step"], restored["data_position"]
        if isinstance(data, TrainingSet) and position != start:
            raise ValueError(f"{resume_from}: data position {position} != step {start} (a checkpoint of another "
                             "data stream)")

    objective: nn.Module = _Objective(model, geometry)
    if world.distributed:  # broadcasts rank 0's weights and buffers; averages gradients
        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=mode == "audio")  # audio: vision path unused
    batches = _step_batches(data, start=start, steps=steps, world=world, accum=grad_accum, workers=loader_workers,
                            pin=device.type == "cuda")
    writer = None
    if world.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out_dir / "train"))
    trace = os.environ.get(TRACE_ENV)
    bar = tqdm(total=steps, initial=start, disable=not progress or not world.main, desc=f"train[{mode}]")
    result = TrainResult(step=start, world_size=world.size)
    pending: list[tuple[int, torch.Tensor, int]] = []  # (step, this rank's loss sum (float64, on device), B)
    grad_norm = None
    for step in range(start, steps):
        micro = next(batches)
        position += 1
        total = data.batch_size if isinstance(data, TrainingSet) else len(micro[0]["latents"])
        local = torch.zeros((), dtype=torch.float64, device=device)
        for i, mb in enumerate(micro):  # gradient accumulation: sync only on the last micro-batch
            mb = _to(mb, device)
            sync = objective.no_sync() if world.distributed and i < len(micro) - 1 else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss_sum = objective(mb, noise_gen, mode != "audio")
                (loss_sum * (world.size / total)).backward()  # DDP's mean over N ranks -> the mean over B samples
            local += loss_sum.detach().double()
        if trace:
            with open(f"{trace}.rank{world.rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "keys": [k for mb in micro for k in mb.get("keys", [])]}) + "\n")
        pending.append((step, local, total))
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip else None
        optimizer.step()
        lr_scheduler.step()  # once per optimizer step, whatever the number of processes
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)

        done = step + 1
        result.step = done
        checkpoint_now = done % ckpt_every == 0 or done == steps
        if not (checkpoint_now or done % log_every == 0):
            continue
        settled = _settle_losses(pending, world)  # one read-back (and one all-reduce) for the pending steps
        pending.clear()
        result.losses.extend(loss for _, loss in settled)
        bar.update(len(settled))
        bar.set_postfix(loss=f"{settled[-1][1]:.4f}")
        if writer is not None and (done % log_every == 0 or done == steps):
            writer.add_scalar("loss", settled[-1][1], done)
            writer.add_scalar("lr", lr_scheduler.get_last_lr()[0], done)
            if grad_norm is not None:
                writer.add_scalar("grad_norm", float(grad_norm), done)
            writer.flush()
        if checkpoint_now:
            digests = [int(d) for d in gather_tensor(_digest(model), world)]
            rngs = {name: gather_tensor(t, world) for name, t in rank_rng_state({"noise": noise_gen}).items()}
            if trace:
                with open(f"{trace}.rank{world.rank}.jsonl", "a") as f:
                    f.write(json.dumps({"checkpoint": done, "digest": int(_digest(model))}) + "\n")
            if world.main:
                if len(set(digests)) != 1:
                    raise RuntimeError(f"the {world.size} ranks hold different weights after step {done}: DDP out of sync")
                result.checkpoint = _save(
                    out_dir, model=model, geometry=geometry, ema=ema, optimizer=optimizer,
                    lr_scheduler=lr_scheduler, step=done, position=position, generators={"noise": noise_gen},
                    world_size=world.size, rank_rng=[{n: v[r] for n, v in rngs.items()} for r in range(world.size)],
                    digest=digests[0],
                    training={"mode": mode, "step": done, "lr": lr, "warmup": warmup, "lr_schedule": lr_schedule,
                              "seed": seed, "world_size": world.size, "grad_accum": grad_accum,
                              "init_checkpoint": str(init_checkpoint) if init_checkpoint else None},
                )
            barrier(world)
        if on_step is not None and world.main:  # after the checkpoint of ``done``, as before the batching
            for settled_step, loss in settled:
                on_step(settled_step + 1, steps, loss)
    bar.close()
    if writer is not None:
        writer.close()
    barrier(world)  # every rank is done before rank 0 returns (and its caller commits)
    return result


def _settle_losses(pending: list[tuple[int, torch.Tensor, int]], world: World) -> list[tuple[int, float]]:
    """(step, global mean loss) for the pending steps: their per-rank sums summed over the ranks in one
    all-reduce, read back once; raises FloatingPointError at the first non-finite one."""
    sums = all_sum_tensor(torch.stack([local for _, local, _ in pending]), world).tolist()
    out = []
    for (step, _, total), s in zip(pending, sums, strict=True):
        loss = s / total
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}")
        out.append((step, loss))
    return out


def _save(out_dir: Path, *, model, geometry, ema, optimizer, lr_scheduler, step, position, generators, world_size,
          rank_rng, digest, training) -> Path:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    ema_weights = {**model.state_dict(), **dict(zip(names, ema.shadow_params, strict=True))}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_step_", dir=out_dir))
    save_checkpoint(tmp, model=model, geometry=geometry, ema_weights=ema_weights, training=training)
    save_training_state(tmp / "state", optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema, step=step,
                        data_position=position, generators=generators, world_size=world_size, rank_rng=rank_rng,
                        extra={"weights_digest": digest})
    return commit(tmp, out_dir / f"step_{step:07d}")
