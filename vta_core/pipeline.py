"""generate: videos -> ``<name>.wav`` + ``<name>.mp4`` (the video stream copied, the generated audio muxed).

Per video, as numbered steps (DESIGN.md "generate path"):
1. probe the file (a video stream is required; its own audio is ignored);
2. decode frames at the checkpoint geometry's fps and frame size over the whole video (or ``duration_s``);
3. encode them with the checkpoint's frozen vision encoder (+ optical-flow tokens when the model uses them);
4. sample latents with guidance, decode with the VAE, vocode — one window, or overlapping windows joined
   with crossfades for videos longer than one clip (``vta_core.sampling.generate_long``);
5. write ``<name>.wav`` (int16 at the vocoder's rate, exactly the video's duration) and mux ``<name>.mp4``
   with FFmpeg (``-c:v copy -c:a aac -shortest``).
A bad file is one clear error line naming it; the other files still run.
"""

from __future__ import annotations

import logging
import math
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from vta_core.checkpoint import checkpoint_dir, load_checkpoint
from vta_core.geometry import ClipGeometry
from vta_core.media import MediaError, ffmpeg_exe, probe, read_frames
from vta_core.model import VTAModel
from vta_core.opticalflow import flow_to_rgb, window_flow
from vta_core.sampling import SAMPLERS, generate, generate_long
from vta_core.vae import AudioVAE, load_vae
from vta_core.vision import VisionEncoder, load_vision_encoder
from vta_core.vocoder import Vocoder, load_vocoder

log = logging.getLogger("vta.generate")


@dataclass
class Generator:
    """Everything a checkpoint needs to turn frames into sound, loaded once for all videos."""

    model: VTAModel
    geometry: ClipGeometry
    vae: AudioVAE
    vocoder: Vocoder
    vision: VisionEncoder
    flow: dict[str, Any] | None  # {"encoder", "method", "flow_size"} when the model takes flow tokens
    flow_encoder: VisionEncoder | None
    checkpoint: Path


def load_generator(checkpoint: str | Path, *, vision: str | None = None, vae: str | Path | None = None,
                   vocoder: str | Path | None = None, device: str = "cpu") -> Generator:
    """Load a checkpoint folder (or a train artifact folder) and the encoders its config names.

    ``vision`` / ``vae`` / ``vocoder`` override the config (e.g. for imported official checkpoints, which
    carry no VAE); ``vocoder`` None = the config's choice, else the geometry's default HiFi-GAN, else
    Griffin-Lim (named in the log).
    """
    folder = checkpoint_dir(checkpoint)
    ck = load_checkpoint(folder, device=device)
    cond = ck.config.get("conditioning") or {}
    vision = vision or cond.get("vision")
    if vision is None:
        raise ValueError(f"checkpoint {folder} does not name its vision encoder (config 'conditioning'); pass vision=")
    vae_dir = Path(vae) if vae is not None else (folder / ck.config["vae"] if ck.config.get("vae") else None)
    if vae_dir is None:
        raise ValueError(f"checkpoint {folder} has no VAE (config 'vae'); pass vae= a diffusers VAE folder")
    flow = cond.get("flow") if ck.model.config.flow_dim > 0 else None
    if ck.model.config.flow_dim > 0 and flow is None:
        raise ValueError(f"checkpoint {folder} takes flow tokens but its config names no flow encoder")
    if ck.model.config.text_dim > 0:
        log.warning("checkpoint %s also takes label text; generating from the video alone", folder)
    voc = load_vocoder(vocoder if vocoder is not None else ck.config.get("vocoder"), geometry=ck.geometry,
                       griffin_lim_fallback=True)
    if isinstance(voc, torch.nn.Module):
        voc = voc.to(device)
    encoder = load_vision_encoder(vision, device=device)
    if encoder.dim != ck.model.config.vision_dim:
        raise ValueError(f"vision encoder {vision} gives {encoder.dim}-d features, the model takes "
                         f"{ck.model.config.vision_dim}")
    flow_encoder = load_vision_encoder(flow["encoder"], device=device) if flow else None
    return Generator(ck.model, ck.geometry, load_vae(vae_dir).to(device).eval(), voc, encoder, flow, flow_encoder,
                     folder)


def video_frames(path: str | Path, *, geometry: ClipGeometry, duration_s: float | None = None) -> tuple[np.ndarray, float]:
    """uint8 (T, S, S, 3) frames at the geometry's fps covering ``seconds`` (the video's duration, or
    ``duration_s`` when shorter), T = ceil(seconds · fps); raises MediaError for unusable files."""
    name = Path(path).name
    info = probe(path)
    if not info.has_video:
        raise MediaError("no_video_stream", f"{name} has no video stream")
    seconds = info.duration_s if duration_s is None else min(duration_s, info.duration_s or duration_s)
    if seconds <= 0:
        raise MediaError("unreadable", f"{name}: duration is {seconds} s")
    frames = read_frames(path, fps=geometry.fps, size=geometry.frame_size, duration_s=seconds)
    if len(frames) == 0:
        raise MediaError("undecodable_video", f"{name}: FFmpeg produced no video frames")
    need = max(1, math.ceil(seconds * geometry.fps - 1e-6))  # T / fps >= seconds: the audio covers the video
    if len(frames) < need:  # FFmpeg's fps filter rounds: repeat the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], need - len(frames), axis=0)])
    return np.array(frames[:need]), seconds  # a writable copy (FFmpeg's buffer is read-only)


@torch.no_grad()
def generate_audio(gen: Generator, frames: np.ndarray, seconds: float, *, steps: int, sampler: str,
                   guidance: float, seed: int) -> np.ndarray:
    """float32 (N,) waveform at ``gen.vocoder.sample_rate``, N = round(seconds · rate)."""
    g = gen.geometry
    device = next(gen.model.parameters()).device
    vision = torch.from_numpy(gen.vision.encode_frames(frames)).float()[None].to(device)  # (1, T, D)
    kwargs = dict(vae=gen.vae, vocoder=gen.vocoder, geometry=g, sampler=sampler, steps=steps, guidance=guidance,
                  seed=seed)
    if gen.flow is None:
        wave = generate_long(gen.model, vision, **kwargs)  # windows + crossfade past one clip
    else:
        if len(frames) > g.num_frames:
            raise ValueError(f"this checkpoint takes optical-flow tokens, which are supported for videos up to one "
                             f"window ({g.duration_s:.2f} s) only; pass duration_s <= {g.duration_s:.2f}")
        _, fields = window_flow(frames, len(frames), method=gen.flow["method"], flow_size=gen.flow["flow_size"])
        flow = torch.from_numpy(gen.flow_encoder.encode_frames(flow_to_rgb(fields))).float()[None].to(device)
        wave = generate(gen.model, {"vision": vision, "flow": flow}, duration_s=len(frames) / g.fps, **kwargs)
    return _fit(wave[0], seconds, gen.vocoder.sample_rate)


def _fit(wave: torch.Tensor, seconds: float, sample_rate: int) -> np.ndarray:
    """(N',) -> float32 (N,), N = round(seconds · rate): zero-padded or cut."""
    n = round(seconds * sample_rate)
    w = wave.float().cpu().numpy()
    return np.pad(w, (0, max(0, n - len(w))))[:n]


@torch.no_grad()
def generate_audio_batch(gen: Generator, frames: Sequence[np.ndarray], seconds: Sequence[float], *, steps: int,
                         sampler: str, guidance: float, seed: int) -> list[np.ndarray]:
    """:func:`generate_audio` for several clips, clip i with noise seed ``seed + i``: one batched sampler run
    when they have the same number of frames, at most one window, and the model takes no flow tokens
    (e.g. a test split); otherwise clip by clip."""
    g = gen.geometry
    kw = dict(steps=steps, sampler=sampler, guidance=guidance)
    if len({len(f) for f in frames}) != 1 or len(frames[0]) > g.num_frames or gen.flow is not None:
        return [generate_audio(gen, f, s, seed=seed + i, **kw) for i, (f, s) in enumerate(zip(frames, seconds, strict=True))]
    device = next(gen.model.parameters()).device
    vision = torch.from_numpy(np.stack([gen.vision.encode_frames(f) for f in frames])).float().to(device)  # (B, T, D)
    waves = generate(gen.model, {"vision": vision}, vae=gen.vae, vocoder=gen.vocoder, geometry=g,
                     duration_s=len(frames[0]) / g.fps, seed=seed, **kw)
    return [_fit(w, s, gen.vocoder.sample_rate) for w, s in zip(waves, seconds, strict=True)]


def mux(video: Path, wav: Path, out: Path, *, timeout_s: float = 300.0) -> None:
    """``out`` = the video's first video stream (copied) + ``wav`` as AAC, cut to the shorter one."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(wav),
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError("mux_error", f"{video.name}: FFmpeg mux failed: {err[-1] if err else proc.returncode}")


@dataclass
class GenerateResult:
    video: Path
    wav: Path | None = None
    mp4: Path | None = None
    seconds: float | None = None
    error: str | None = None  # one line naming the file

    @property
    def ok(self) -> bool:
        return self.error is None


def generate_files(
    videos: Sequence[str | Path],
    *,
    checkpoint: str | Path,
    out_dir: str | Path,
    steps: int = 25,
    sampler: str = "dpmsolver++",
    guidance: float = 3.0,
    seed: int = 0,
    duration_s: float | None = None,
    vision: str | None = None,
    vae: str | Path | None = None,
    vocoder: str | Path | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
) -> list[GenerateResult]:
    """Generate ``out_dir/<name>.wav`` and ``out_dir/<name>.mp4`` for each video (``<name>`` = file stem).

    Checkpoint problems and bad arguments raise (nothing can run); a bad video is a failed result with a
    one-line error and the others still run. ``echo`` gets the vocoder used and one line per file.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    paths = [Path(v) for v in videos]
    if not paths:
        raise ValueError("no videos given")
    stems = [p.stem for p in paths]
    if dup := sorted({s for s in stems if stems.count(s) > 1}):
        raise ValueError(f"several inputs share the name {dup[0]!r}; outputs are named <name>.wav/.mp4")
    gen = load_generator(checkpoint, vision=vision, vae=vae, vocoder=vocoder, device=device)
    note = " (Griffin-Lim phase reconstruction: low quality, no HiFi-GAN for this geometry)" \
        if gen.vocoder.name == "griffin-lim" else ""
    echo(f"vocoder: {gen.vocoder.name} at {gen.vocoder.sample_rate} Hz{note}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in paths:
        res = GenerateResult(path)
        wav, mp4 = out / f"{path.stem}.wav", out / f"{path.stem}.mp4"
        try:
            if path.resolve() in (wav.resolve(), mp4.resolve()):
                raise ValueError(f"{path}: the output would overwrite the input; choose another --out")
            frames, seconds = video_frames(path, geometry=gen.geometry, duration_s=duration_s)
            audio = generate_audio(gen, frames, seconds, steps=steps, sampler=sampler, guidance=guidance, seed=seed)
            sf.write(wav, audio, gen.vocoder.sample_rate, subtype="PCM_16")
            mux(path, wav, mp4)
            res.wav, res.mp4, res.seconds = wav, mp4, seconds
            echo(f"{path}: {seconds:.2f} s -> {wav} + {mp4}")
        except (MediaError, ValueError, OSError, subprocess.TimeoutExpired) as e:
            res.error = f"{path}: {e}" if str(path) not in str(e) and path.name not in str(e) else str(e)
            echo(f"failed: {res.error}")
        results.append(res)
    return results
