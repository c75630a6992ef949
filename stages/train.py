"""train: audio-only / video-audio pretraining or full fine-tuning on shards (a versioned stage).

Artifact ``train/{version}/``:
  checkpoint/            the final checkpoint, self-contained: config.json (model, geometry, ``conditioning``:
                         the encoder specs the features/flow stages used, ``vae``, ``vocoder``) +
                         model.safetensors + ema.safetensors + vae/ (the diffusers VAE folder)
  run/step_NNNNNNN/      intermediate checkpoints with training state (optimizer, EMA, RNG, data position)
  run/train/             TensorBoard event files (``tensorboard --logdir train/{version}/run``)
  history.json, loss.png per-step loss and learning rate, and the loss curve

The version hashes the shards version, the VAE identity, the init checkpoint (fine-tuning) and every
result-relevant parameter (the full model config included; the LR schedule and ``objective`` only when
they differ from the default, so earlier versions keep their hash). Resumable: on a local root training
writes straight into the uncommitted version directory; on an object store it writes into a local staging
folder and uploads each step checkpoint as soon as it is made (files first, then its marker
``_shards/step_NNNNNNN.json``), so a rerun after a kill fetches the latest marked step checkpoint (and the
TensorBoard events) from the bucket. Either way it resumes from its latest step checkpoint and, the data
stream being deterministic, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.shards import shard_urls
from storage import Artifact, ArtifactStore, ArtifactWriter, StageSpec, local_copy
from storage.hashing import folder_identity
from storage.lineage import shards_conditioning, shards_vae, source_identity
from vta_core.checkpoint import (
    CHECKPOINT,
    InferenceConfig,
    checkpoint_config,
    checkpoint_dir,
    read_config,
    write_config,
)
from vta_core.data import iter_webdataset
from vta_core.distributed import SINGLE, LaunchError, World, init_world, launch_local, launched_world_size
from vta_core.evaluation.plots import loss_plot
from vta_core.geometry import ClipGeometry
from vta_core.model import ModelConfig
from vta_core.presets import Preset
from vta_core.train import MODES, STEP_DIR, latest_checkpoint
from vta_core.train_launch import PROGRESS, lead, run_job
from vta_core.vae import load_vae

log = logging.getLogger("vta.train")

STAGE = "train"
CODE_VERSION = "3"  # 2: aligned conditioning by real timestamps (frame k at k/fps), not resampled T -> T_lat;
# 3: global batch k of a seeded permutation stream, every random draw per sample (the same recipe for any N)
RUN = "run"  # step checkpoints + TensorBoard logs
DEFAULT_LR_SCHEDULE = "constant_with_warmup"
# explicit objective variants: overrides of the preset's model config (everything else stays the preset's)
OBJECTIVES: dict[str, dict[str, Any]] = {
    "eq1": {"prediction_type": "epsilon", "snr_gamma": None, "snr_weighting": None},  # the paper's eq. 1
}


def _token_dims(urls: list[str]) -> dict[str, Any]:
    """Token widths and the latent shape of the first sample: vision D, text Dt, flow Df (0 = absent)."""
    s = next(iter_webdataset(urls), None)
    if s is None:
        raise ValueError(f"no samples in shards {urls[:1]}")
    return {"vision": s["vision"].shape[-1], "text": s["text"].shape[-1] if "text" in s else 0,
            "flow": s["flow"].shape[-1] if "flow" in s else 0, "latent_shape": tuple(s["latent_mean"].shape)}


# --- the stage --------------------------------------------------------------------------------------
def train_stage(
    store: ArtifactStore,
    *,
    shards: Artifact,
    preset: Preset,
    vae: Artifact | str | Path | None = None,
    mode: str = "video",
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    warmup: int | None = None,
    lr_schedule: str | None = None,
    ckpt_every: int | None = None,
    seed: int = 0,
    init: Artifact | str | Path | None = None,
    text: bool = False,
    flow: bool = False,
    vision: bool = True,
    aligned_channels: int | None = None,
    aligned_delta: bool | None = None,
    position_embedding: bool | None = None,
    objective: str | None = None,
    vocoder: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    nproc: int | None = None,
    grad_accum: int = 1,
    grad_checkpointing: bool = False,
    loader_workers: int | None = None,
    channels_last: bool = False,
    compile: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Train (or reuse, or resume) a VTA-LDM model of ``preset`` size and geometry on the ``train`` split of
    ``shards`` (the version records the preset by name).

    mode: ``video`` (video-audio pretraining), ``audio`` (audio-only pretraining), ``finetune`` (needs
    ``init``). ``init``: a train artifact or checkpoint folder to start from; its model config is used
    (the overrides below still apply). ``vae``: default the one the shards' latents were made with.
    ``text``/``flow``: condition on the shards' label-text / optical-flow tokens too; ``vision=False``: not on
    the frames (with ``text``: the paper's text-only model; flow tokens need the frames). ``vocoder``: what
    generation should use (None = the geometry's default). ``None`` numbers (and ``lr_schedule``, a
    diffusers scheduler name) take ``preset.train``. ``objective``: None = the preset's; ``"eq1"`` = the
    paper's eq. 1 (ε target, unweighted loss; schedule, optimizer and the rest as the preset).
    ``precision``: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` (autocast, also on CPUs with
    native bf16 such as AVX512-BF16/AMX: ~1.5× faster there) or ``fp32``.

    Processes: ``nproc`` N > 1 trains with N DDP processes on this machine (torchrun; gloo on CPU, NCCL on
    CUDA); under an outside launcher (``torchrun ... vta train``) this process is rank 0 and the world is
    the launcher's (``nproc``, when given, must equal it). ``batch_size`` is the global batch whatever N:
    each rank takes its share, ``grad_accum`` micro-batches each. N, ``grad_accum``, ``grad_checkpointing``,
    ``loader_workers`` (None: 2 on CUDA, 0 on CPU), ``channels_last`` and ``compile`` (torch.compile of the
    UNet; vta_core.train) are not part of the version (the recipe is the same; with another N a result
    differs only by float rounding), so a run killed with N processes resumes with any N.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "finetune" and init is None:
        raise ValueError("mode 'finetune' needs init (a train artifact or checkpoint folder)")
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective must be None or one of {sorted(OBJECTIVES)}, got {objective!r}")
    d = preset.train
    steps, batch_size, lr = steps or d.steps, batch_size or d.batch_size, d.lr if lr is None else lr
    warmup, ckpt_every = d.warmup if warmup is None else warmup, min(ckpt_every or d.ckpt_every, steps)
    lr_schedule = lr_schedule or d.lr_schedule
    geometry = preset.geometry
    world = init_world(expected=nproc) if launched_world_size() > 1 else SINGLE
    nproc = world.size if world.distributed else (nproc or 1)
    if nproc < 1 or grad_accum < 1 or (loader_workers is not None and loader_workers < 0):
        raise ValueError(f"nproc and grad_accum must be >= 1 and loader_workers >= 0, got {nproc}/{grad_accum}/"
                         f"{loader_workers}")
    if batch_size < nproc * grad_accum:
        raise ValueError(f"global batch {batch_size} is smaller than {nproc} processes x {grad_accum} accumulation steps")
    urls = shard_urls(local_copy(shards), "train")  # the loader reads local tars (a cached copy of a bucket's)
    if not urls:
        raise ValueError(f"{shards.ref} has no train split (splits: {shards.record.get('splits')})")
    dims = _token_dims(urls)
    if dims["latent_shape"] != geometry.latent_shape:
        raise ValueError(f"{shards.ref} holds latents {dims['latent_shape']}, preset {preset.name!r} needs "
                         f"{geometry.latent_shape}")
    for name, wanted in (("text", text), ("flow", flow)):
        if wanted and not dims[name]:
            raise ValueError(f"{name}=True but the samples of {shards.ref} have no {name}.npy")
    vae = shards_vae(store, shards) if vae is None else vae
    vae_dir = Path(local_copy(vae, only=["vae"]).file("vae") if isinstance(vae, Artifact) else vae)
    init_dir = checkpoint_dir(init) if init is not None else None

    base = read_config(init_dir)["model"] if init_dir is not None else preset.model.to_dict()
    overrides: dict[str, Any] = {"vision_dim": dims["vision"], "text_dim": dims["text"] if text else 0,
                                 "flow_dim": dims["flow"] if flow else 0}
    if not vision:
        if flow or not text:
            raise ValueError("vision=False needs text=True and flow=False (a text-only model)")
        overrides.update(vision_tokens=False, aligned_channels=0, feature_norm=False)  # nothing of the frames
    if aligned_channels is not None:
        overrides["aligned_channels"] = aligned_channels
    if position_embedding is not None:
        overrides["position_embedding"] = position_embedding
    if aligned_delta is not None:
        overrides["aligned_delta"] = aligned_delta
    if objective is not None:
        overrides.update(OBJECTIVES[objective])
    config = preset.model_config(**{**base, **overrides})
    cond = shards_conditioning(store, shards)

    params = {"preset": preset.name, "mode": mode, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
              "ckpt_every": ckpt_every, "seed": seed, "model": config.to_dict(), "vocoder": vocoder}
    if precision != "auto":  # bf16/fp32 change the weights; "auto" keeps the versions of earlier runs
        params["precision"] = precision
    if lr_schedule != DEFAULT_LR_SCHEDULE:  # recorded only when not the default (demo/tiny versions unchanged)
        params["lr_schedule"] = lr_schedule
    if objective is not None:
        params["objective"] = objective
    inputs = {"shards": shards.version, "vae": source_identity(vae)}
    if init is not None:
        inputs["init"] = init.ref if isinstance(init, Artifact) else folder_identity(init_dir)
    spec = StageSpec(STAGE, params, inputs, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact", w.artifact.ref)
            return w.artifact
        with w.staging() as work:  # the version folder on a local root; a local folder uploaded at the end otherwise
            run_dir = work / RUN
            for tmp in run_dir.glob(".tmp_step_*"):  # half-written checkpoint of a killed run
                shutil.rmtree(tmp)
            uploader = _StepUploader(w, run_dir) if w.object_store else None
            resume = latest_checkpoint(run_dir)
            if resume is not None:
                log.info("train@%s: resuming from %s", w.version, resume.name)
            job = {"urls": urls, "root": store.root, "shards": shards.ref, "batch_size": batch_size,
                   "scaling_factor": load_vae(vae_dir).scaling_factor, "seed": seed, "model": config.to_dict(),
                   "geometry": geometry.to_dict(), "run_dir": str(run_dir), "steps": steps, "lr": lr,
                   "warmup": warmup, "lr_schedule": lr_schedule, "ckpt_every": ckpt_every, "mode": mode,
                   "init_checkpoint": str(init_dir) if init_dir else None,
                   "resume_from": str(resume) if resume else None, "precision": precision, "cpu": device == "cpu",
                   "nproc": nproc, "grad_accum": grad_accum, "grad_checkpointing": grad_checkpointing,
                   "loader_workers": loader_workers, "channels_last": channels_last, "compile": compile,
                   "progress_bar": sys.stderr.isatty()}

            def on_step(done: int, total: int, loss: float) -> None:
                if uploader is not None:
                    uploader(done)
                if progress is not None:
                    progress(done, total)

            try:
                _run(job, world=world, on_step=on_step)
                final = run_dir / f"step_{steps:07d}"
                _final_checkpoint(final, work / CHECKPOINT, vae_dir=vae_dir, inference=InferenceConfig(
                    conditioning=cond, vae="vae", vae_scaling_factor=job["scaling_factor"], vocoder=vocoder,
                    lineage={**inputs, "shards": shards.ref}))
                if uploader is not None:
                    uploader(steps + 1)  # the last step checkpoint, marked like the others
            except _Superseded:  # another writer committed this version meanwhile: its artifact is the result
                return w.commit()
            history = read_history(run_dir)
            w.write_json("history.json", history)
            w.write_bytes("loss.png", loss_plot(history["loss"], title=f"diffusion loss ({preset.name}, {mode})"))
        k = max(1, min(20, len(history["loss"]) // 4))
        return w.commit(counts={"ok": shards.record["splits"]["train"], "failed": 0, "filtered": 0},
                        extra={"checkpoint": CHECKPOINT, "resumed_from_step": int(resume.name[5:]) if resume else None,
                               "world_size": nproc, "grad_accum": grad_accum,
                               "loss_first": sum(history["loss"][:k]) / k, "loss_last": sum(history["loss"][-k:]) / k})


def _run(job: dict[str, Any], *, world: World, on_step: Callable[[int, int, float], None]) -> None:
    """Train ``job``: in this process (one process, or rank 0 of an outside launcher's group), or on
    ``job["nproc"]`` local processes through torchrun, with rank 0's progress lines fed to ``on_step``."""
    if world.distributed:
        lead(job, world=world, on_step=on_step)
        return
    if job["nproc"] == 1:
        run_job(job, world=world, on_step=on_step)
        return
    tail: list[str] = []

    def on_line(line: str) -> None:
        if PROGRESS in line:
            p = json.loads(line.split(PROGRESS, 1)[1])
            on_step(p["done"], p["steps"], p["loss"])
        elif line.strip():  # torchrun's banner has blank lines: neither logged nor kept for the error
            log.info("%s", line)
            tail[:] = [*tail[-19:], line]

    log.info("train: %d processes (torchrun --standalone), global batch %d", job["nproc"], job["batch_size"])
    with tempfile.TemporaryDirectory(prefix="vta-train-") as tmp:  # outside the artifact: it holds local paths
        path = Path(tmp) / "job.json"
        path.write_text(json.dumps({**job, "progress_bar": False}, indent=1))
        code = launch_local(job["nproc"], ["-m", "vta_core.train_launch", str(path)], on_line=on_line)
    if code != 0:
        errors = [t for t in tail if t.startswith("rank ")] or tail[-1:]
        raise LaunchError(f"training with {job['nproc']} processes failed (exit {code}): "
                           f"{errors[0] if errors else 'no output'}")


class _Superseded(Exception):
    """Another writer committed the train version while this one was training."""


class _StepUploader:
    """Object stores: uploads each finished step checkpoint (``run/step_NNNNNNN/``, then the TensorBoard
    events so far) and marks it (``_shards/step_NNNNNNN.json``: its files' checksums); at start, fetches the
    latest marked step checkpoint and the events into ``run_dir`` so that training resumes from the bucket."""

    def __init__(self, w: ArtifactWriter, run_dir: Path) -> None:
        self.w, self.run_dir = w, run_dir
        marked = [m for m in w.shard_markers() if STEP_DIR.match(m)]
        for name in marked:  # earlier step checkpoints belong to the artifact: register their checksums
            w.shard_done(name)
        self.done = set(marked)
        if marked:
            latest = max(marked, key=lambda m: int(m[5:]))
            record = w.shard_done(latest)
            w.fetch(record["files"], run_dir.parent)
            w.fetch(dict.fromkeys(w.listing(f"{RUN}/train")), run_dir.parent)  # events as they are in the bucket
            log.info("train@%s: fetched %s from %s", w.version, latest, w.store.root)

    def __call__(self, k: int) -> None:
        """Upload the finished step checkpoints up to step ``k`` (the step rank 0 reported: with several
        processes, rank 0 may already have written later ones; they wait for their own report)."""
        for step_dir in sorted(self.run_dir.glob("step_*")):
            name = step_dir.name
            if name in self.done or not STEP_DIR.match(name) or int(name[5:]) > k \
                    or not (step_dir / "state" / "state.json").is_file():
                continue
            self.w.upload_tree(step_dir, prefix=f"{RUN}/{name}")
            if (self.run_dir / "train").is_dir():
                self.w.upload_tree(self.run_dir / "train", prefix=f"{RUN}/train")
            files = {rel: d for rel, d in self.w.files.items() if rel.startswith(f"{RUN}/{name}/")}
            self.w.commit_shard(name, rows=[], files=files)
            self.done.add(name)
        if self.w.superseded:
            raise _Superseded


def _final_checkpoint(step_dir: Path, out: Path, *, vae_dir: Path, inference: InferenceConfig) -> None:
    """A self-contained inference checkpoint: the last step's model, geometry, training record and weights,
    what generation needs (``inference``), and the VAE."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    step = read_config(step_dir)
    write_config(out, checkpoint_config(model=ModelConfig.from_dict(step["model"]),
                                        geometry=ClipGeometry.from_dict(step["geometry"]),
                                        training=step["training"], inference=inference))
    for name in ("model.safetensors", "ema.safetensors"):
        shutil.copyfile(step_dir / name, out / name)
    shutil.copytree(vae_dir, out / "vae")


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """Per-step ``loss`` and ``lr`` from the TensorBoard events of every (resumed) run; a step logged
    twice (before a kill and again after the resume) keeps its latest value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {"loss": {}, "lr": {}}
    for events in sorted((run_dir / "train").rglob("events.out.tfevents*"), key=lambda p: p.stat().st_mtime_ns):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag, values in series.items():
            if tag in acc.Tags()["scalars"]:
                values.update({e.step: e.value for e in acc.Scalars(tag)})
    return {tag: [v for _, v in sorted(values.items())] for tag, values in series.items()}
