"""Training loop (accelerate): AdamW + warm-up, EMA, gradient clipping, bf16 autocast on GPU,
safetensors checkpoints with exact resume, TensorBoard scalars and a progress bar.

Modes (paper Sec. 3.4):
- ``audio``: audio-only pretraining — the vision path is never used; the condition is the label text
  (when the model has ``text_dim`` and the batch has ``text``) or ∅;
- ``video``: video-audio pretraining (vision + whatever auxiliaries the model has);
- ``finetune``: ``video`` starting from ``init_checkpoint`` (required).
Condition dropout (``ModelConfig.cond_dropout``) applies in every mode, and φ is in the optimizer.

Data: any iterable of batch dicts (``latents`` (B,C,T,F) scaled, ``vision`` (B,T,D), ...). It is re-iterated
when exhausted. On resume, the first ``data_position`` batches are skipped — via ``data.iter_from(k)``
when the iterable provides it, else by drawing and discarding them — so a deterministic iterable
resumes exactly. One process now; the same code runs under ``accelerate launch`` (DDP), where each
process should be handed its own shard.
"""

from __future__ import annotations

import itertools
import math
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from vta_core.checkpoint import (
    commit,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from vta_core.geometry import ClipGeometry
from vta_core.model import Batch, VTAModel

MODES = ("audio", "video", "finetune")
STEP_DIR = re.compile(r"^step_(\d{7})$")


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # per step of this run
    checkpoint: Path | None = None  # the last one written


class _Objective(nn.Module):
    """Wraps ``model.loss`` as ``forward`` so DDP sees the call (gradient sync) and accelerate autocasts it."""

    def __init__(self, model: VTAModel, geometry: ClipGeometry) -> None:
        super().__init__()
        self.model = model
        self.geometry = geometry

    def forward(self, batch: Batch, generator: torch.Generator, use_vision: bool) -> torch.Tensor:
        return self.model.loss(batch, geometry=self.geometry, generator=generator, use_vision=use_vision)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo on Linux):
    bf16 autocast is then faster than fp32 for training; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


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


def train(
    model: VTAModel,
    data: Iterable[Batch],
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
) -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps (counted from 0, so a resumed run continues to the
    same total). Checkpoints go to ``{out_dir}/step_NNNNNNN/`` every ``ckpt_every`` steps and at the end.

    precision: ``auto`` (bf16 autocast on CUDA, fp32 otherwise), ``bf16`` or ``fp32``.
    lr_schedule: a diffusers scheduler name (``constant_with_warmup``, ``linear``, ``cosine``, ...).
    feature_frames: training frame features (N, D) for a ``feature_norm`` model whose statistics are not
    set yet (video modes); a model that has them (e.g. from ``init_checkpoint``) keeps them.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "finetune" and init_checkpoint is None:
        raise ValueError("mode='finetune' needs init_checkpoint")
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if steps < 1 or ckpt_every < 1:
        raise ValueError(f"steps and ckpt_every must be >= 1, got {steps}/{ckpt_every}")
    if geometry.latent_channels != model.config.latent_channels:
        raise ValueError(f"geometry latent_channels={geometry.latent_channels} != model {model.config.latent_channels}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    use_bf16 = precision == "bf16" or (precision == "auto" and torch.cuda.is_available() and not cpu)
    accelerator = Accelerator(
        mixed_precision="bf16" if use_bf16 else "no", cpu=cpu, log_with="tensorboard", project_dir=str(out_dir)
    )
    set_seed(seed)
    if init_checkpoint is not None:  # pretrained weights (EMA when saved), architecture must match
        init = load_checkpoint(init_checkpoint)
        try:
            model.load_state_dict(init.model.state_dict())
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise ValueError(f"init_checkpoint {init_checkpoint} does not fit the model: {first}") from None
    if model.conditioner.needs_feature_stats and mode != "audio":
        if feature_frames is None:
            raise ValueError("the model standardises frame features (feature_norm=True) but has no statistics "
                             "yet: pass feature_frames (N, D)")
        model.conditioner.set_feature_stats(feature_frames)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]  # UNet and φ (and aux projections)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    lr_scheduler = get_scheduler(lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    objective, optimizer, lr_scheduler = accelerator.prepare(_Objective(model, geometry), optimizer, lr_scheduler)
    ema = EMAModel(params, decay=ema_decay)
    ema.to(accelerator.device)
    noise_gen = torch.Generator().manual_seed(seed * 1000 + accelerator.process_index)  # t, ε, dropout

    start = position = 0
    if resume_from is not None:
        resume_from = Path(resume_from)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        model.load_state_dict(load_file(str(resume_from / "model.safetensors")))
        ema_sd = load_file(str(resume_from / "ema.safetensors"), device=str(accelerator.device))
        restored = load_training_state(
            resume_from / "state", optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
            ema_weights=[ema_sd[n] for n in names], generators={"noise": noise_gen},
        )
        start, position = restored["step"], restored["data_position"]

    accelerator.init_trackers("train")
    batches = _batches(data, position)
    bar = tqdm(total=steps, initial=start, disable=not progress or not accelerator.is_local_main_process,
               desc=f"train[{mode}]")
    result = TrainResult(step=start)
    for step in range(start, steps):
        batch = _to(next(batches), accelerator.device)
        position += 1
        loss = objective(batch, noise_gen, mode != "audio")
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(params, grad_clip) if grad_clip else None
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(params)

        result.step = step + 1
        result.losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % log_every == 0 or step + 1 == steps:
            scalars = {"loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0]}
            if grad_norm is not None:
                scalars["grad_norm"] = float(grad_norm)
            accelerator.log(scalars, step=step + 1)
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                result.checkpoint = _save(
                    out_dir, model=model, geometry=geometry, ema=ema, optimizer=optimizer,
                    lr_scheduler=lr_scheduler, step=step + 1, position=position, generators={"noise": noise_gen},
                    training={"mode": mode, "step": step + 1, "lr": lr, "warmup": warmup,
                              "lr_schedule": lr_schedule, "seed": seed,
                              "init_checkpoint": str(init_checkpoint) if init_checkpoint else None},
                )
    bar.close()
    accelerator.end_training()
    return result


def _save(out_dir: Path, *, model, geometry, ema, optimizer, lr_scheduler, step, position, generators, training) -> Path:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    ema_weights = {**model.state_dict(), **dict(zip(names, ema.shadow_params, strict=True))}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_step_", dir=out_dir))
    save_checkpoint(tmp, model=model, geometry=geometry, ema_weights=ema_weights, training=training)
    save_training_state(tmp / "state", optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema, step=step,
                        data_position=position, generators=generators)
    return commit(tmp, out_dir / f"step_{step:07d}")
