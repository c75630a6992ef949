"""Prefect flows: ``ingest`` (optional synth -> decode -> features -> flow -> align -> filter ->
augment -> [vae] -> latents -> shards); ``demo`` lives in flows/demo.py.

Flows only orchestrate: each task calls one stage callable with explicit arguments and returns a
small JSON-able summary; artifacts are passed between tasks as ``stage@version`` refs. Stage
results are cached by the artifact store (versions), so Prefect's own caching is off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.progress import progress_callback
from flows.retries import TASK_OPTIONS
from storage import Artifact, ArtifactStore
from vta_core.geometry import geometry_for


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest DAG needs; ``for_preset`` gives the defaults of a preset."""

    preset: str = "demo"
    max_windows: int | None = None
    vision: str = "pixels:8"  # frozen per-frame encoder spec (vta_core.vision)
    text: str | None = None  # label text encoder spec (None: no text tokens)
    flow_method: str = "farneback"  # bench/flow.py: DIS mistakes pixel noise for motion
    flow_size: int | None = 32  # half the decoded size: 4-6x faster, curve r >= 0.85 vs full size
    flow_encoder: str | None = "pixels:8"
    clap_checkpoint: str | None = None  # laion_clap checkpoint; None = filter on AV-Align alone (recorded)
    clap_threshold: float = 0.3
    av_align_threshold: float = 0.2
    filter: bool = True
    augment_train_ratio: float = 0.5
    augment_test_ratio: float = 1.0
    vae: str | None = None  # diffusers-format VAE folder; None = train one (vae stage)
    vae_steps: int = 300
    shard_size: int = 256
    decode_shard_size: int = 32  # inputs per decode shard (a killed decode resumes after the last one)
    decode_timeout_s: float = 300.0  # per input item; not part of any version
    seed: int = 0
    workers: int = 2
    device: str = "cpu"

    @classmethod
    def for_preset(cls, preset: str, **overrides: Any) -> IngestConfig:
        base: dict[str, Any] = {"preset": preset}
        if preset == "paper":  # the official release: CLIP ViT-L/14 (openai), [0,1] input quirk, 2 fps
            base.update(vision="open_clip:ViT-L-14:openai?unnormalized=1", text="open_clip:ViT-L-14:openai",
                        flow_encoder="open_clip:ViT-L-14:openai", vae_steps=20000)
        base["flow_size"] = geometry_for(preset).frame_size // 2
        if preset == "tiny":
            base.update(vae_steps=30, shard_size=8, decode_shard_size=4)
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def summary(art: Artifact) -> dict[str, Any]:
    return {"stage": art.stage, "version": art.version, "ref": art.ref, "path": art.path, "reused": art.reused,
            "counts": art.counts}


def _done(art: Artifact) -> dict[str, Any]:
    logger = get_run_logger()
    if art.reused:
        logger.info("%s: reused the committed artifact, nothing recomputed (%s)", art.ref, art.counts)
    else:
        logger.info("%s: computed and committed (%s)", art.ref, art.counts)
    return summary(art)


def _get(root: str, ref: str | None) -> Artifact | None:
    return None if ref is None else ArtifactStore(root).resolve(ref)


@task(name="synth", **TASK_OPTIONS)
def synth_task(root: str, clips: int, seed: int) -> dict[str, Any]:
    from stages.synth import synth_paths, synth_stage

    art = synth_stage(ArtifactStore(root), clips=clips, seed=seed)
    return {**_done(art), **synth_paths(art)}


@task(name="decode", **TASK_OPTIONS)
def decode_task(root: str, videos_dir: str, labels_csv: str | None, cfg: IngestConfig,
                lineage: dict[str, str] | None = None) -> dict[str, Any]:
    from stages.decode import DecodeParams, decode_stage

    g = geometry_for(cfg.preset)
    params = DecodeParams(fps=g.fps, size=g.frame_size, sample_rate=g.sample_rate, duration_s=g.duration_s,
                          max_windows=cfg.max_windows, shard_size=cfg.decode_shard_size)
    art = decode_stage(ArtifactStore(root), videos_dir=videos_dir, labels_csv=labels_csv, params=params,
                       workers=cfg.workers, timeout_s=cfg.decode_timeout_s, progress=progress_callback("decode", logger=get_run_logger()),
                       lineage=lineage)
    return _done(art)


@task(name="features", **TASK_OPTIONS)
def features_task(root: str, decode: str, cfg: IngestConfig) -> dict[str, Any]:
    from stages.features import features_stage

    art = features_stage(ArtifactStore(root), source=_get(root, decode), vision=cfg.vision, text=cfg.text,
                         device=cfg.device, progress=progress_callback("features", logger=get_run_logger()))
    return _done(art)


@task(name="flow", **TASK_OPTIONS)
def flow_task(root: str, decode: str, cfg: IngestConfig) -> dict[str, Any]:
    from stages.flow import flow_stage

    art = flow_stage(ArtifactStore(root), source=_get(root, decode), method=cfg.flow_method, flow_size=cfg.flow_size,
                     encoder=cfg.flow_encoder, device=cfg.device,
                     progress=progress_callback("flow", logger=get_run_logger()))
    return _done(art)


@task(name="align", **TASK_OPTIONS)
def align_task(root: str, decode: str, cfg: IngestConfig) -> dict[str, Any]:
    from stages.align import align_stage

    art = align_stage(ArtifactStore(root), source=_get(root, decode), clap_checkpoint=cfg.clap_checkpoint,
                      progress=progress_callback("align", logger=get_run_logger()))
    return _done(art)


@task(name="filter", **TASK_OPTIONS)
def filter_task(root: str, align: str, cfg: IngestConfig) -> dict[str, Any]:
    from stages.filter import filter_stage

    art = filter_stage(ArtifactStore(root), align=_get(root, align), clap_threshold=cfg.clap_threshold,
                       av_align_threshold=cfg.av_align_threshold)
    return _done(art)


@task(name="augment", **TASK_OPTIONS)
def augment_task(root: str, decode: str, features: str, flow_ref: str, filter_ref: str | None,
                 cfg: IngestConfig) -> dict[str, Any]:
    from stages.augment import augment_stage

    art = augment_stage(ArtifactStore(root), decode=_get(root, decode), features=_get(root, features),
                        flow=_get(root, flow_ref), filter_art=_get(root, filter_ref),
                        train_ratio=cfg.augment_train_ratio, test_ratio=cfg.augment_test_ratio, seed=cfg.seed,
                        progress=progress_callback("augment", logger=get_run_logger()))
    return _done(art)


@task(name="vae", **TASK_OPTIONS)
def vae_task(root: str, decode: str, filter_ref: str | None, cfg: IngestConfig) -> dict[str, Any]:
    from stages.vae import vae_stage

    art = vae_stage(ArtifactStore(root), decode=_get(root, decode), geometry=geometry_for(cfg.preset),
                    preset=cfg.preset, filter_art=_get(root, filter_ref), steps=cfg.vae_steps, seed=cfg.seed)
    return _done(art)


@task(name="latents", **TASK_OPTIONS)
def latents_task(root: str, decode: str, vae: str, augment: str | None, filter_ref: str | None,
                 cfg: IngestConfig) -> dict[str, Any]:
    from stages.latents import latents_stage

    vae_source = _get(root, vae) if "@" in vae else vae
    art = latents_stage(ArtifactStore(root), decode=_get(root, decode), vae=vae_source,
                        geometry=geometry_for(cfg.preset), augment=_get(root, augment), filter_art=_get(root, filter_ref),
                        device=cfg.device, progress=progress_callback("latents", logger=get_run_logger()))
    return _done(art)


@task(name="shards", **TASK_OPTIONS)
def shards_task(root: str, decode: str, features: str, latents: str, flow_ref: str, augment: str | None,
                cfg: IngestConfig) -> dict[str, Any]:
    from stages.shards import shards_stage

    art = shards_stage(ArtifactStore(root), decode=_get(root, decode), features=_get(root, features),
                       latents=_get(root, latents), flow=_get(root, flow_ref), augment=_get(root, augment),
                       shard_size=cfg.shard_size, progress=progress_callback("shards", logger=get_run_logger()))
    return _done(art)


def ingest_dataset(root: str, videos_dir: str, labels_csv: str | None, cfg: IngestConfig,
                   lineage: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The data DAG for one input folder; returns the stage summaries in order."""
    dec = decode_task(root, videos_dir, labels_csv, cfg, lineage)
    feats = features_task(root, dec["ref"], cfg)
    flo = flow_task(root, dec["ref"], cfg)
    ali = align_task(root, dec["ref"], cfg)
    fil = filter_task(root, ali["ref"], cfg) if cfg.filter else None
    fil_ref = fil["ref"] if fil else None
    aug = augment_task(root, dec["ref"], feats["ref"], flo["ref"], fil_ref, cfg)
    vae_sum = None if cfg.vae else vae_task(root, dec["ref"], fil_ref, cfg)
    vae_ref = cfg.vae or vae_sum["ref"]
    lat = latents_task(root, dec["ref"], vae_ref, aug["ref"], fil_ref, cfg)
    sh = shards_task(root, dec["ref"], feats["ref"], lat["ref"], flo["ref"], aug["ref"], cfg)
    return [dec, feats, flo, ali, *([fil] if fil else []), aug, *([vae_sum] if vae_sum else []), lat, sh]


@flow(name="ingest", log_prints=True)
def ingest_flow(
    videos_dir: str | None = None,
    labels_csv: str | None = None,
    root: str | None = None,
    preset: str = "demo",
    synth_clips: int = 0,
    synth_seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Videos (and/or generated synthetic clips) -> training shards, every stage a committed artifact."""
    store = ArtifactStore(root)
    cfg = IngestConfig.for_preset(preset, **(overrides or {}))
    results: dict[str, Any] = {"root": store.root, "config": dataclasses.asdict(cfg), "stages": []}
    if synth_clips > 0:
        syn = synth_task(store.root, synth_clips, synth_seed)
        results["stages"].append(syn)
        results["stages"] += ingest_dataset(store.root, syn["videos_dir"], syn["labels_csv"], cfg,
                                            lineage={"synth": syn["ref"]})
    if videos_dir is not None:
        results["stages"] += ingest_dataset(store.root, str(Path(videos_dir).resolve()),
                                            str(Path(labels_csv).resolve()) if labels_csv else None, cfg)
    if not results["stages"]:
        raise ValueError("ingest needs videos_dir or synth_clips > 0")
    return results
