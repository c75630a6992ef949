"""The ingest DAG, written once and free of Prefect: for one input folder, decode -> features -> flow ->
align -> [filter] -> augment -> [vae] -> latents -> shards.

``run_ingest`` calls the stages in that order with explicit arguments; ``run_step(name, step)`` decides
how each one runs: directly by default (``bench/ingest.py`` wraps it in a timer), as a Prefect task
with retries and progress logging in ``flows/ingest.py``. A step is ``step(progress) -> Artifact``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import Artifact, ArtifactStore
from storage.lineage import resolve_source
from storage.sharded import ShardMap
from vta_core.presets import get_preset

Progress = Callable[[int, int], None]
Step = Callable[[Progress | None], Artifact]
StepRunner = Callable[[str, Step], Artifact]

_DEMO = get_preset("demo").ingest  # the class defaults; for_preset starts from the preset's own


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest DAG needs; ``for_preset`` gives the defaults of a preset (``Preset.ingest``)."""

    preset: str = "demo"
    max_windows: int | None = None
    vision: str = _DEMO.vision  # frozen per-frame encoder spec (vta_core.vision)
    text: str | None = _DEMO.text  # label text encoder spec (None: no text tokens)
    flow_method: str = "farneback"  # bench/flow.py: DIS mistakes pixel noise for motion
    flow_size: int | None = _DEMO.flow_size
    flow_encoder: str | None = _DEMO.flow_encoder
    clap_checkpoint: str | None = None  # laion_clap checkpoint; None = filter on AV-Align alone (recorded)
    clap_threshold: float = 0.3
    av_align_threshold: float = 0.2
    speech_threshold: float = 0.5  # filter: drop windows whose speech share (Silero VAD) exceeds it; >= 1 keeps all
    filter: bool = True
    augment_train_ratio: float = 0.5
    augment_test_ratio: float = 1.0
    vae: str | None = None  # diffusers-format VAE folder or vae@VERSION; None = train one (vae stage)
    vae_steps: int = _DEMO.vae_steps
    shard_size: int = _DEMO.shard_size
    decode_shard_size: int = _DEMO.decode_shard_size
    decode_timeout_s: float = 300.0  # per input item; not part of any version
    split_default: str | None = None  # split of labels rows without one; None = such a row is an error
    seed: int = 0
    workers: int = 2
    device: str = "cpu"

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> IngestConfig:
        """The preset's ingest defaults with ``overrides`` (None values are ignored)."""
        base = {"preset": preset, **dataclasses.asdict(get_preset(preset).ingest)}
        merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
        if str(merged.get("text")).lower() == "none":  # `--text none`: no label text tokens
            merged["text"] = None
        return cls(**merged)


def run_direct(name: str, step: Step) -> Artifact:
    """The default ``run_step``: call the step, without progress reports."""
    return step(None)


def run_ingest(
    store: ArtifactStore,
    *,
    videos_dir: str | Path,
    labels_csv: str | Path | None,
    config: IngestConfig,
    lineage: dict[str, str] | None = None,
    run_step: StepRunner = run_direct,
    shard_map: ShardMap | None = None,
) -> list[Artifact]:
    """Ingest one folder of videos into training shards; returns each stage's artifact, in order.

    ``shard_map``: where the sharded stages' per-shard tasks run (default: in this process, in order;
    flows/engine.py maps them onto a Dask cluster). It is not a parameter of any version.

    ``lineage``: where the inputs came from (e.g. ``{"synth": "synth@abc"}``), recorded by decode.
    Each step reads its inputs' commit records from ``store`` (as ``vta run`` does).
    """
    from stages.align import align_stage
    from stages.augment import augment_stage
    from stages.decode import DecodeParams, decode_stage
    from stages.features import features_stage
    from stages.filter import filter_stage
    from stages.flow import flow_stage
    from stages.latents import latents_stage
    from stages.shards import shards_stage
    from stages.vae import vae_stage

    cfg, preset = config, get_preset(config.preset)
    done: list[Artifact] = []

    def run(name: str, step: Step) -> Artifact:
        art = run_step(name, step)
        done.append(art)
        committed = store.get(art.stage, art.version)
        if committed is None:
            raise RuntimeError(f"{name}: {art.ref} is not committed under {store.root}")
        return committed

    params = DecodeParams.from_geometry(preset.geometry, max_windows=cfg.max_windows, shard_size=cfg.decode_shard_size)
    dec = run("decode", lambda progress: decode_stage(
        store, videos_dir=videos_dir, labels_csv=labels_csv, params=params, workers=cfg.workers,
        timeout_s=cfg.decode_timeout_s, progress=progress, lineage=lineage, split_default=cfg.split_default,
        shard_map=shard_map))
    feats = run("features", lambda progress: features_stage(
        store, source=dec, vision=cfg.vision, text=cfg.text, device=cfg.device, progress=progress, shard_map=shard_map))
    flo = run("flow", lambda progress: flow_stage(
        store, source=dec, method=cfg.flow_method, flow_size=cfg.flow_size, encoder=cfg.flow_encoder,
        device=cfg.device, progress=progress, shard_map=shard_map))
    ali = run("align", lambda progress: align_stage(
        store, source=dec, clap_checkpoint=cfg.clap_checkpoint, progress=progress, shard_map=shard_map))
    fil = run("filter", lambda _: filter_stage(
        store, align=ali, clap_threshold=cfg.clap_threshold, av_align_threshold=cfg.av_align_threshold,
        speech_threshold=cfg.speech_threshold,
    )) if cfg.filter else None
    aug = run("augment", lambda progress: augment_stage(
        store, decode=dec, features=feats, flow=flo, filter_art=fil, train_ratio=cfg.augment_train_ratio,
        test_ratio=cfg.augment_test_ratio, seed=cfg.seed, progress=progress, shard_map=shard_map))
    if cfg.vae:
        vae = resolve_source(store, cfg.vae, stage="vae")
    else:
        vae = run("vae", lambda _: vae_stage(
            store, decode=dec, preset=preset, filter_art=fil, steps=cfg.vae_steps, seed=cfg.seed))
    lat = run("latents", lambda progress: latents_stage(
        store, decode=dec, vae=vae, geometry=preset.geometry, augment=aug, filter_art=fil, device=cfg.device,
        progress=progress, shard_map=shard_map))
    run("shards", lambda progress: shards_stage(
        store, decode=dec, features=feats, latents=lat, flow=flo, augment=aug, shard_size=cfg.shard_size,
        progress=progress, shard_map=shard_map))
    return done
