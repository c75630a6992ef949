"""Tiny seeded checkpoints for evaluation tests: a folder, or a committed ``train`` artifact holding one."""

from __future__ import annotations

from pathlib import Path

from storage import Artifact, ArtifactStore, StageSpec
from vta_core.checkpoint import InferenceConfig, save_checkpoint
from vta_core.presets import build_model, get_preset
from vta_core.vae import save_vae


def save_tiny_checkpoint(folder: str | Path, *, seed: int = 0) -> Path:
    """An untrained tiny-preset checkpoint (pixels:4 frame features) with its VAE, as train writes it."""
    folder = Path(folder)
    save_checkpoint(folder, model=build_model("tiny", seed=seed, vision_dim=48), geometry=get_preset("tiny").geometry,
                    inference=InferenceConfig(conditioning={"vision": "pixels:4", "text": None, "flow": None},
                                              vae="vae"))
    save_vae(get_preset("tiny").build_vae(seed=0), folder / "vae")
    return folder


def tiny_train_artifact(store: ArtifactStore, *, seed: int) -> Artifact:
    """A committed ``train`` artifact whose ``checkpoint/`` is :func:`save_tiny_checkpoint` (no training)."""
    spec = StageSpec("train", {"preset": "tiny", "seed": seed, "test_double": True}, {}, "1")
    with store.writer(spec) as w:
        if w.committed:
            return w.artifact
        save_tiny_checkpoint(Path(w.dir) / "checkpoint", seed=seed)
        w.register_tree()
        return w.commit(counts={"ok": 1, "failed": 0, "filtered": 0}, extra={"checkpoint": "checkpoint"})
