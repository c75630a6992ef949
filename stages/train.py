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

import itertools
import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

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
from vta_core.data import iter_webdataset, shard_loader
from vta_core.evaluation.plots import loss_plot
from vta_core.geometry import ClipGeometry
from vta_core.model import Batch, ModelConfig, VTAModel
from vta_core.presets import Preset
from vta_core.train import MODES, STEP_DIR, latest_checkpoint, train
from vta_core.vae import load_vae

log = logging.getLogger("vta.train")

STAGE = "train"
CODE_VERSION = "2"  # 2: aligned conditioning by real timestamps (frame k at k/fps), not resampled T -> T_lat
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


# --- data -------------------------------------------------------------------------------------------
class _ShardBatches:
    """Deterministic batches from shards, resumable at any position; calls ``on_draw(k)`` then
    ``progress(k, steps)`` as batch k is drawn (a callback that raises simulates a kill at that step). When
    batch k is drawn, every step checkpoint of a step < k is complete (vta_core.train saves after the step)."""

    def __init__(self, urls: list[str], *, batch_size: int, scaling_factor: float, seed: int, steps: int,
                 progress: Callable[[int, int], None] | None, on_draw: Callable[[int], None] | None = None) -> None:
        self.urls, self.batch_size, self.scaling_factor, self.seed = urls, batch_size, scaling_factor, seed
        self.steps, self.progress, self.on_draw = steps, progress, on_draw

    def _stream(self) -> Iterator[Batch]:
        # resampled=False: a fixed shard order and a seeded shuffle buffer, so the stream is a pure
        # function of the seed (webdataset's resampled mode seeds from the clock and pid).
        loader = shard_loader(self.urls, batch_size=self.batch_size, scaling_factor=self.scaling_factor,
                              seed=self.seed, resampled=False)
        while True:  # epochs: the loader's shuffle and ε generators carry on from one epoch to the next
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ValueError(f"shards {self.urls[:1]} yielded no batches")

    def iter_from(self, start: int) -> Iterator[Batch]:
        for k, batch in enumerate(itertools.islice(self._stream(), start, None), start=start + 1):
            if self.on_draw:
                self.on_draw(k)
            if self.progress:
                self.progress(min(k, self.steps), self.steps)
            yield batch

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)


def training_frames(urls: list[str]) -> torch.Tensor:
    """Every real frame feature of the samples (padding past ``n_frames`` excluded): (N, D) float32, for
    the feature standardisation statistics."""
    rows = []
    for s in iter_webdataset(urls):
        v = s["vision"]
        rows.append(torch.from_numpy(v[: s.get("meta", {}).get("n_frames", len(v))].astype("float32")))
    return torch.cat(rows)


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
    aligned_channels: int | None = None,
    position_embedding: bool | None = None,
    objective: str | None = None,
    vocoder: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Train (or reuse, or resume) a VTA-LDM model of ``preset`` size and geometry on the ``train`` split of
    ``shards`` (the version records the preset by name).

    mode: ``video`` (video-audio pretraining), ``audio`` (audio-only pretraining), ``finetune`` (needs
    ``init``). ``init``: a train artifact or checkpoint folder to start from; its model config is used
    (the overrides below still apply). ``vae``: default the one the shards' latents were made with.
    ``text``/``flow``: condition on the shards' label-text / optical-flow tokens too. ``vocoder``: what
    generation should use (None = the geometry's default). ``None`` numbers (and ``lr_schedule``, a
    diffusers scheduler name) take ``preset.train``. ``objective``: None = the preset's; ``"eq1"`` = the
    paper's eq. 1 (ε target, unweighted loss; schedule, optimizer and the rest as the preset).
    ``precision``: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` (autocast, also on CPUs with
    native bf16 such as AVX512-BF16/AMX: ~1.5× faster there) or ``fp32``.
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
    if aligned_channels is not None:
        overrides["aligned_channels"] = aligned_channels
    if position_embedding is not None:
        overrides["position_embedding"] = position_embedding
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
            scaling_factor = load_vae(vae_dir).scaling_factor
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = VTAModel(config)
            data = _ShardBatches(urls, batch_size=batch_size, scaling_factor=scaling_factor, seed=seed, steps=steps,
                                 progress=progress, on_draw=uploader)
            frames = training_frames(urls) if config.feature_norm and mode != "audio" else None
            try:
                train(model, data, geometry=geometry, out_dir=run_dir, steps=steps, lr=lr, warmup=warmup,
                      lr_schedule=lr_schedule, ckpt_every=ckpt_every, seed=seed, mode=mode, init_checkpoint=init_dir,
                      resume_from=resume, cpu=device == "cpu", log_every=1, progress=sys.stderr.isatty(),
                      feature_frames=frames, precision=precision)
                final = run_dir / f"step_{steps:07d}"
                _final_checkpoint(final, work / CHECKPOINT, vae_dir=vae_dir, inference=InferenceConfig(
                    conditioning=cond, vae="vae", vae_scaling_factor=scaling_factor, vocoder=vocoder,
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
                               "loss_first": sum(history["loss"][:k]) / k, "loss_last": sum(history["loss"][-k:]) / k})


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
        for step_dir in sorted(self.run_dir.glob("step_*")):
            name = step_dir.name
            if name in self.done or not STEP_DIR.match(name) or not (step_dir / "state" / "state.json").is_file():
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
