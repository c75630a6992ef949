"""vae: train a mel VAE from scratch on the ingested audio, when none is given (a versioned stage).

The artifact holds a diffusers-format VAE folder (``vae/config.json`` +
``vae/diffusion_pytorch_model.safetensors``, the layout of AudioLDM's ``vae/``), the loss history
and a loss-curve PNG.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.decode import DecodeParams
from storage import Artifact, ArtifactStore, StageSpec, local_copy
from storage.lineage import kept_keys, recorded_input
from storage.shardmap import iter_samples
from vta_core.audio import LogMel
from vta_core.evaluation.plots import loss_plot
from vta_core.geometry import ClipGeometry
from vta_core.labels import sample_split
from vta_core.presets import Preset, get_preset
from vta_core.vae import load_vae, train_vae

log = logging.getLogger("vta.vae")

STAGE = "vae"
CODE_VERSION = "2"  # 2: windows of videos missing from the labels CSV are not training data


def training_mels(decode: Artifact, *, geometry: ClipGeometry, keep: set[str] | None, max_clips: int) -> torch.Tensor:
    """(N, T, F) log-mels of up to ``max_clips`` kept train windows (sorted keys: deterministic)."""
    mel = LogMel.from_geometry(geometry)
    out = []
    labelled = decode.record.get("labels_csv") is not None
    for s in iter_samples(decode):
        if sample_split(s.meta.get("split"), labelled=labelled) != "train" or (keep is not None and s.key not in keep):
            continue
        if s.meta.get("n_samples", 1) == 0:
            continue  # no audio at all
        audio = torch.from_numpy(s.array("audio.npy"))
        geometry.check_audio(len(audio), what=f"decode window {s.key}")
        with torch.no_grad():
            out.append(mel(audio[None])[0])
        if len(out) >= max_clips:
            break
    if not out:
        raise ValueError(f"vae: no train windows with audio in {decode.ref}")
    return torch.stack(out)


def vae_stage(
    store: ArtifactStore,
    *,
    decode: Artifact,
    preset: Preset,
    filter_art: Artifact | None = None,
    steps: int = 300,
    lr: float = 2e-3,
    batch_size: int = 8,
    crop_frames: int | None = 128,
    seed: int = 0,
    max_clips: int = 1000,
    delta_weight: float = 3.0,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Train (or reuse) a VAE of ``preset`` size and geometry on the decode artifact's train windows.

    Defaults follow the recipe measured for the demo VAE (vta_core/vae.py): random 128-frame crops
    (the VAE is fully convolutional), lr 2e-3, 300 steps, and the attack term ``delta_weight`` 3 (L1 of the
    mel's frame-to-frame differences, vta_core.vae.train_vae): with plain L1 the demo VAE smeared onsets and
    lost 9 of 34 test onsets of ground truth; at 300 steps the reconstruction's onset F1 is 0.85 with plain L1,
    0.94 with weight 1 and 0.95 with weight 3 (weight 1 reaches 1.00 at 600 steps; bench/ceiling.py).
    """
    geometry = preset.geometry
    DecodeParams.recorded(decode).check_geometry(geometry, what=decode.ref)
    crop_frames = None if crop_frames is None or crop_frames >= geometry.mel_frames else crop_frames
    params = {"preset": preset.name, "steps": steps, "lr": lr, "batch_size": batch_size, "crop_frames": crop_frames,
              "seed": seed, "max_clips": max_clips, "geometry": geometry.to_dict()}
    if delta_weight:  # recorded only when used: VAEs trained without it keep their versions
        params["delta_weight"] = delta_weight
    inputs = {"decode": decode.version, **({"filter": filter_art.version} if filter_art else {})}
    spec = StageSpec(STAGE, params, inputs, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact", w.artifact.ref)
            return w.artifact
        mels = training_mels(decode, geometry=geometry, keep=kept_keys(filter_art), max_clips=max_clips)
        torch.manual_seed(seed)
        vae = preset.build_vae(seed=seed)
        log.info("vae: training %s VAE on %d clips for %d steps", preset.name, len(mels), steps)
        history = train_vae(vae, mels, steps=steps, lr=lr, batch_size=batch_size, crop_frames=crop_frames, seed=seed,
                            delta_weight=delta_weight, progress=sys.stderr.isatty())
        with tempfile.TemporaryDirectory() as tmp:
            vae.autoencoder.save_pretrained(tmp, safe_serialization=True)
            for f in sorted(Path(tmp).iterdir()):
                w.write_bytes(f"vae/{f.name}", f.read_bytes())
        w.write_json("history.json", history)
        w.write_bytes("loss.png", loss_plot(history["recon_l1"], title=f"VAE reconstruction L1 ({preset.name})"))
        k = max(1, min(20, len(history["recon_l1"]) // 4))  # mean of the first / last k steps
        first, last = np.mean(history["recon_l1"][:k]), np.mean(history["recon_l1"][-k:])
        return w.commit(counts={"ok": len(mels), "failed": 0, "filtered": 0},
                        extra={"recon_l1_first": float(first), "recon_l1_last": float(last),
                               "scaling_factor": history["scaling_factor"]})


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``): the recorded
    preset's VAE at the recorded geometry."""
    params = dict(art.params)
    params.setdefault("delta_weight", 0.0)  # recorded only when used (older VAEs: plain L1)
    geometry = ClipGeometry.from_dict(params.pop("geometry"))
    preset = dataclasses.replace(get_preset(params.pop("preset")), geometry=geometry)
    return vae_stage(out, decode=recorded_input(store, art, "decode"), preset=preset,
                     filter_art=recorded_input(store, art, "filter"), **params)


def open_vae(source: str | Path | Artifact):  # noqa: ANN201 - vta_core.vae.AudioVAE
    """A VAE from a vae artifact or a local diffusers-format folder."""
    if isinstance(source, Artifact):
        if source.stage != STAGE:
            raise ValueError(f"{source.ref} is not a vae artifact")
        return load_vae(local_copy(source, only=["vae"]).file("vae"))  # a cached copy of an object store's
    return load_vae(source)
