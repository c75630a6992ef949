"""Checkpoints: safetensors weights + JSON config; training state without pickle.

Folder layout::

    {dir}/config.json          :func:`checkpoint_config`: {"format", "model": ModelConfig, "geometry":
                               ClipGeometry, "training"?, + InferenceConfig's keys (inference checkpoints)}
    {dir}/model.safetensors    training weights
    {dir}/ema.safetensors      EMA weights (optional; preferred for inference)
    {dir}/state/tensors.safetensors + state/state.json
                               optimizer, LR scheduler, EMA counters, step, data position, RNG states
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from storage import Artifact, local_copy
from storage.hashing import folder_identity
from storage.store import artifact_at
from vta_core.geometry import ClipGeometry
from vta_core.model import ModelConfig, VTAModel

FORMAT = "vta-checkpoint/1"
CHECKPOINT = "checkpoint"  # the final checkpoint folder inside a train artifact


def checkpoint_dir(source: Artifact | str | Path) -> Path:
    """The checkpoint folder of a train artifact (on an object store: its verified local copy,
    :func:`storage.local_copy`), a train artifact folder, or a checkpoint folder."""
    if isinstance(source, Artifact):
        if source.stage != "train":
            raise ValueError(f"{source.ref} is not a train artifact")
        return Path(local_copy(source, only=[CHECKPOINT]).file(CHECKPOINT))
    folder = Path(source)
    if (folder / CHECKPOINT / "config.json").is_file():
        folder = folder / CHECKPOINT
    elif not (folder / "config.json").is_file():
        raise FileNotFoundError(f"not a checkpoint folder (no config.json): {folder}")
    return check_in_artifact(folder)


def check_in_artifact(folder: Path) -> Path:
    """``folder``; when it is the checkpoint of a committed train artifact, its files are first checked
    against the commit record (once per process: :func:`storage.local_copy`), so damage is an error."""
    if folder.name == CHECKPOINT and (art := artifact_at(folder.parent)) is not None:
        local_copy(art, only=[CHECKPOINT])
    return folder


def checkpoint_identity(checkpoint: Artifact | str | Path) -> tuple[Path, str]:
    """The checkpoint folder and its identity: ``train@VERSION`` when it belongs to a committed train
    artifact (however it is named), else ``dir:`` + a content hash of its top-level files."""
    folder = checkpoint_dir(checkpoint)
    if isinstance(checkpoint, Artifact):
        return folder, checkpoint.ref
    record = folder.parent / "_COMMITTED.json"
    if record.is_file():
        rec = json.loads(record.read_text())
        if rec.get("stage") == "train":
            return folder, f"train@{rec['version']}"
    return folder, folder_identity(folder)


@dataclass
class Checkpoint:
    model: VTAModel
    geometry: ClipGeometry
    config: dict[str, Any]  # the whole config.json
    path: Path


@dataclass(frozen=True)
class InferenceConfig:
    """What generation needs beside the model: the encoders its tokens came from (``conditioning``:
    ``{"vision", "text", "flow"}``), the VAE folder relative to the checkpoint and its latent scaling
    factor, the vocoder (None = the geometry's default) and the artifacts it was trained from."""

    conditioning: dict[str, Any]
    vae: str | None = None
    vae_scaling_factor: float | None = None
    vocoder: str | None = None
    lineage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_config(*, model: ModelConfig, geometry: ClipGeometry, training: dict[str, Any] | None = None,
                      inference: InferenceConfig | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json, built once at save time: ``format``, ``model``, ``geometry``, then ``training`` (how
    the weights were trained: mode, step, lr, ...), the inference keys and ``extra`` when given."""
    config: dict[str, Any] = {"format": FORMAT, "model": model.to_dict(), "geometry": geometry.to_dict()}
    if training is not None:
        config["training"] = training
    if inference is not None:
        config.update(inference.to_dict())
    return {**config, **(extra or {})}


def write_config(folder: str | Path, config: dict[str, Any]) -> Path:
    """``folder/config.json`` (sorted keys, indented)."""
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(
    folder: str | Path,
    *,
    model: VTAModel,
    geometry: ClipGeometry,
    ema_weights: dict[str, torch.Tensor] | None = None,
    training: dict[str, Any] | None = None,
    inference: InferenceConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write config.json (:func:`checkpoint_config`) + model.safetensors (+ ema.safetensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, checkpoint_config(model=model.config, geometry=geometry, training=training,
                                           inference=inference, extra=extra))
    save_file(_contiguous(model.state_dict()), str(folder / "model.safetensors"))
    if ema_weights is not None:
        save_file(_contiguous(ema_weights), str(folder / "ema.safetensors"))
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config at {path}")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_checkpoint(folder: str | Path, *, weights: str = "ema", device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from config.json and load its weights (``ema`` when present, else ``model``)."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    folder = check_in_artifact(Path(folder))
    config = read_config(folder)
    model = VTAModel(ModelConfig.from_dict(config["model"]), empty=True)  # weights are assigned below
    file = folder / "ema.safetensors"
    if weights == "model" or not file.is_file():
        file = folder / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"no weights at {file}")
    model.load_state_dict(load_file(str(file)), assign=True)
    model.to(device).eval()
    return Checkpoint(model, ClipGeometry.from_dict(config["geometry"]), config, folder)


def commit(tmp: Path, final: Path) -> Path:
    """Move a fully written checkpoint folder into place (a reader never sees a half-written one)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


# --- training state (exact resume) ----------------------------------------------------------------
def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state(generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU + CUDA), numpy, python and named generator states as tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    for name, g in generators.items():
        tensors[f"rng.gen.{name}"] = g.get_state()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_keys.astype(np.int64))
    version, py_state, gauss = random.getstate()
    meta = {"numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)], "python": [version, list(py_state), gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    for name, g in generators.items():
        g.set_state(tensors[f"rng.gen.{name}"])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = meta["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def rank_rng_state(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """This rank's torch RNG states (CPU, its CUDA device, named generators), as uint8 tensors."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    out.update({f"gen.{name}": g.get_state() for name, g in generators.items()})
    return out


def save_training_state(
    folder: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: Any,
    step: int,
    data_position: int,
    generators: dict[str, torch.Generator],
    world_size: int = 1,
    rank_rng: list[dict[str, torch.Tensor]] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Everything besides the weights that a resumed run needs to match an uninterrupted one: optimizer,
    LR schedule, EMA, step, data position (global batches drawn), the world size, every rank's RNG states
    (``rank_rng[r]``, from :func:`rank_rng_state`) and this process's numpy/python RNG."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state(generators)
    for r, states in enumerate(rank_rng or []):
        rng_tensors.update({f"rng.rank{r}.{name}": t for name, t in states.items()})
    ema_meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"} if ema is not None else None
    meta = {
        "step": step,
        "data_position": data_position,
        "world_size": world_size,
        "optimizer": opt_meta,
        "lr_scheduler": lr_scheduler.state_dict(),
        "ema": ema_meta,
        "rng": rng_meta,
        **(extra or {}),
    }
    save_file(_contiguous({**opt_tensors, **rng_tensors}), str(folder / "tensors.safetensors"))
    (folder / "state.json").write_text(json.dumps(meta))


def read_training_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON of :func:`save_training_state` (to apply here or send to other ranks)."""
    folder = Path(folder)
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"no training state at {folder}")
    return load_file(str(folder / "tensors.safetensors")), json.loads((folder / "state.json").read_text())


def apply_training_state(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: Any,
    ema_weights: list[torch.Tensor] | None,
    generators: dict[str, torch.Generator],
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Restore a saved training state on one rank; returns ``{"step", "data_position", "world_size",
    "exact"}``. The RNG states are this rank's when the saved world size is this one (``exact``); with
    another world size, ranks keep their fresh seeds (the schedule continues, the run is not bit-exact)."""
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    lr_scheduler.load_state_dict(meta["lr_scheduler"])
    if ema is not None and meta["ema"] is not None and ema_weights is not None:
        ema.load_state_dict({**meta["ema"], "shadow_params": ema_weights})
    saved_world = int(meta.get("world_size", 1))
    exact = saved_world == world_size
    if exact and rank == 0:
        set_rng_state(tensors, meta["rng"], generators)
    mine = {k.removeprefix(f"rng.rank{rank}."): v for k, v in tensors.items() if k.startswith(f"rng.rank{rank}.")}
    if exact and mine:
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda"])
        for name, g in generators.items():
            if f"gen.{name}" in mine:
                g.set_state(mine[f"gen.{name}"])
    return {"step": meta["step"], "data_position": meta["data_position"], "world_size": saved_world, "exact": exact}


def load_training_state(
    folder: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ema: Any,
    ema_weights: list[torch.Tensor] | None,
    generators: dict[str, torch.Generator],
) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote (one process); returns ``{"step", "data_position", ...}``."""
    tensors, meta = read_training_state(folder)
    return apply_training_state(tensors, meta, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
                                ema_weights=ema_weights, generators=generators)
