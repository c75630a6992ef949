"""The inference pipeline: frames -> sound (:class:`VTAPipeline`), and videos -> ``<name>.wav`` +
``<name>.mp4`` (:func:`generate_files`: the video stream copied, the generated audio muxed).

``VTAPipeline.from_checkpoint(...)`` loads the model, VAE, vocoder and frozen encoders once; a call then
runs, as numbered steps: 1. encode frames -> vision tokens; 2. optical-flow tokens (models that take
them); 3. sample latents with classifier-free guidance — one window for a clip of at most the geometry's
frames, else overlapping windows — clips of the same frame count together, one sampler call per
MAX_WINDOWS windows; 4. VAE decode + vocoder (windows joined with crossfades); 5. fit to the clip length.

Per video, :func:`generate_files` probes the file (a video stream is required; its own audio is ignored),
decodes floor(seconds · fps) frames at the checkpoint geometry's fps and frame size over the whole video (or
``duration_s``),
calls the pipeline, writes ``<name>.wav`` (int16 at the vocoder's rate, exactly the video's duration) and
muxes ``<name>.mp4`` with FFmpeg (``-c:v copy -c:a aac -shortest``). A bad file is one clear error line
naming it; the other files still run.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from storage import Artifact
from vta_core.accel import Acceleration, accelerate_denoiser, accelerate_vae
from vta_core.checkpoint import checkpoint_dir, load_checkpoint
from vta_core.geometry import ClipGeometry, frame_count
from vta_core.media import MediaError, ffmpeg_exe
from vta_core.model import VTAModel
from vta_core.opticalflow import flow_to_rgb, window_flow
from vta_core.samplers import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from vta_core.sampling import MAX_WINDOWS, generate_long
from vta_core.vae import AudioVAE, load_vae
from vta_core.video_features import decode_ahead, video_frames
from vta_core.vision import VisionEncoder, encode_clips, load_vision_encoder
from vta_core.vocoder import Vocoder, load_vocoder

log = logging.getLogger("vta.generate")


class VTAPipeline:
    """A checkpoint's inference pipeline, diffusers style: components loaded once by :meth:`from_checkpoint`,
    then ``pipe(frames, seconds, ...)`` -> waveforms at ``pipe.vocoder.sample_rate``.

    Components: the denoising ``model``, its clip ``geometry``, the audio ``vae`` and ``vocoder``, the frozen
    ``vision`` encoder, and for models that take optical-flow tokens the ``flow`` settings (``{"encoder",
    "method", "flow_size"}``) and ``flow_encoder``. ``accel`` (vta_core.accel): precision, channels-last,
    torch.compile of the denoiser (default: the eager fp32 reference path).
    """

    def __init__(self, *, model: VTAModel, geometry: ClipGeometry, vae: AudioVAE, vocoder: Vocoder,
                 vision: VisionEncoder, flow: dict[str, Any] | None = None, flow_encoder: VisionEncoder | None = None,
                 checkpoint: Path | None = None, accel: Acceleration | None = None) -> None:
        self.model, self.geometry, self.vocoder = model, geometry, vocoder
        self.vision, self.flow, self.flow_encoder, self.checkpoint = vision, flow, flow_encoder, checkpoint
        self.accel = accel or Acceleration()
        self.denoiser = accelerate_denoiser(model, self.accel)  # ``model`` itself, or torch.compile(model)
        self.vae = accelerate_vae(vae, self.accel)

    @classmethod
    def from_checkpoint(cls, checkpoint: Artifact | str | Path, *, vision: str | None = None,
                        vae: str | Path | None = None, vocoder: str | Path | None = None,
                        device: str = "cpu", accel: Acceleration | None = None) -> VTAPipeline:
        """Load a train artifact, a train artifact folder or a checkpoint folder, and the encoders its config
        names. ``vision`` / ``vae`` / ``vocoder`` override the config (e.g. for imported official checkpoints,
        which carry no VAE); ``vocoder`` None = the config's choice, else the geometry's default HiFi-GAN, else
        Griffin-Lim (named in the log). ``accel``: see the class."""
        folder = checkpoint_dir(checkpoint)
        ck = load_checkpoint(folder, device=device)
        cond = ck.config.get("conditioning") or {}
        vision = vision or cond.get("vision")
        if vision is None:
            raise ValueError(f"checkpoint {folder} does not name its vision encoder (config 'conditioning'); "
                             f"pass vision=")
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
        return cls(model=ck.model, geometry=ck.geometry, vae=load_vae(vae_dir).to(device).eval(), vocoder=voc,
                   vision=encoder, flow=flow, flow_encoder=flow_encoder, checkpoint=folder, accel=accel)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray], seconds: float | Sequence[float], *,
                 steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER, guidance: float = DEFAULT_GUIDANCE,
                 seed: int = 0, seeds: Sequence[int] | None = None,
                 unconditional: bool = False) -> np.ndarray | list[np.ndarray]:
        """Audio for one clip (uint8 frames (T, S, S, 3) at the geometry's fps -> float32 (N,)) or several
        (a list of frame arrays and of seconds -> a list of waveforms, in input order), N = round(seconds · rate).
        A clip of d seconds has floor(d · fps) frames (the geometry's frame rule).

        Clip i gets noise seed ``seeds[i]`` (default ``seed + i``), whatever else is in the batch.
        ``unconditional=True`` samples with the null condition ∅ alone (no guidance), with the same noise as
        the conditioned call. Clips with the same frame count (and latent length) are generated together,
        ``MAX_WINDOWS`` windows per sampler call; a clip longer than one window is generated in overlapping
        windows joined with crossfades.
        """
        single = isinstance(frames, np.ndarray) and frames.ndim == 4
        clips = [frames] if single else list(frames)
        lengths = [float(seconds)] if single else [float(s) for s in seconds]
        if len(clips) != len(lengths) or not clips:
            raise ValueError(f"{len(clips)} frame arrays for {len(lengths)} durations")
        seeds = [seed + i for i in range(len(clips))] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(clips):
            raise ValueError(f"{len(seeds)} seeds for {len(clips)} clips")
        g = self.geometry
        groups: dict[tuple[int, int], list[int]] = {}  # (frames, latent frames) -> clip indices
        for i, (f, s) in enumerate(zip(clips, lengths, strict=True)):
            if s <= 0:
                raise ValueError(f"clip {i}: seconds must be positive, got {s}")
            if len(f) != frame_count(s, g.fps):
                raise ValueError(f"clip {i}: {len(f)} frames, but {s:.3f} s at {g.fps:g} fps has "
                                 f"{frame_count(s, g.fps)} (floor(seconds · fps))")
            one_window = len(f) <= g.num_frames  # one window generates exactly its seconds: its latent length
            groups.setdefault((len(f), g.with_duration(s).latent_frames if one_window else 0), []).append(i)
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(clips)
        for idx in groups.values():
            waves = self._generate([clips[i] for i in idx], [lengths[i] for i in idx], seeds=[seeds[i] for i in idx],
                                   steps=steps, sampler=sampler, guidance=guidance, unconditional=unconditional)
            for i, w in zip(idx, waves, strict=True):
                out[i] = w
        return out[0] if single else out

    @torch.no_grad()
    def _generate(self, clips: list[np.ndarray], seconds: list[float], *, seeds: list[int], steps: int, sampler: str,
                  guidance: float, unconditional: bool) -> list[np.ndarray]:
        """Clips of T frames each (and, for T <= W, one latent length) -> one waveform per clip."""
        g = self.geometry
        T, W = len(clips[0]), self.geometry.num_frames
        # 1.-2. vision tokens (B, T, D) and, for flow models, flow tokens (B, T, D_flow)
        tokens = self.frame_tokens(clips)
        # 3. sample latents with CFG (or ∅ alone), one (J <= MAX_WINDOWS, C, T_lat, F_lat) batch per sampler call,
        # clip b's noise from seeds[b] (windows w > 0: window_seed), and
        # 4. VAE decode + vocoder -> (B, N'): one window of max(seconds) (the same latent length for all), or
        # windows of the geometry's clip joined with crossfades
        wave = generate_long(self.denoiser, tokens, vae=self.vae, vocoder=self.vocoder, geometry=g, seeds=seeds,
                             duration_s=max(seconds) if T <= W else None, max_batch=MAX_WINDOWS, sampler=sampler,
                             steps=steps, guidance=guidance, unconditional=unconditional,
                             precision=self.accel.precision)
        # 5. fit to the clip length: (B, N') -> B × (N,), N = round(seconds · rate)
        return [_fit(w, s, self.sample_rate) for w, s in zip(wave, seconds, strict=True)]

    @torch.no_grad()
    def frame_tokens(self, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """B clips of T frames each (uint8 (T, S, S, 3)) -> the model's per-frame inputs on its device."""
        g, device = self.geometry, self.device
        B, T, W = len(clips), len(clips[0]), self.geometry.num_frames
        # 1. encode frames -> (B, T, D) vision tokens: the B clips' frames in one encoder call (its batches span clips)
        emb = encode_clips(self.vision, clips)  # (B·T, D)
        tokens = {"vision": torch.from_numpy(emb.reshape(B, T, -1)).float().to(device)}
        # 2. flow tokens -> (B, T, D_flow): optical flow between frames, drawn as RGB, through its own encoder
        if self.flow is not None:
            if T > W:
                raise ValueError(f"this checkpoint takes optical-flow tokens, which are supported for videos up to "
                                 f"one window ({g.duration_s:.2f} s) only; pass duration_s <= {g.duration_s:.2f}")
            tokens["flow"] = torch.from_numpy(np.stack([self._flow_rgb_tokens(f) for f in clips])).float().to(device)
        return tokens

    def _flow_rgb_tokens(self, frames: np.ndarray) -> np.ndarray:
        """(T, S, S, 3) frames -> flow fields -> RGB pictures -> (T, D_flow) flow-encoder tokens."""
        _, fields = window_flow(frames, len(frames), method=self.flow["method"], flow_size=self.flow["flow_size"])
        return self.flow_encoder.encode_frames(flow_to_rgb(fields))


def _fit(wave: torch.Tensor, seconds: float, sample_rate: int) -> np.ndarray:
    """(N',) -> float32 (N,), N = round(seconds · rate): zero-padded or cut."""
    n = round(seconds * sample_rate)
    w = wave.float().cpu().numpy()
    return np.pad(w, (0, max(0, n - len(w))))[:n]


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
    checkpoint: Artifact | str | Path,
    out_dir: str | Path,
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    duration_s: float | None = None,
    vision: str | None = None,
    vae: str | Path | None = None,
    vocoder: str | Path | None = None,
    device: str = "cpu",
    accel: Acceleration | str = "auto",
    decode_workers: int = 2,
    echo: Callable[[str], None] = print,
) -> list[GenerateResult]:
    """Generate ``out_dir/<name>.wav`` and ``out_dir/<name>.mp4`` for each video (``<name>`` = file stem).

    Checkpoint problems and bad arguments raise (nothing can run); a bad video is a failed result with a
    one-line error and the others still run. ``echo`` gets the vocoder used and one line per file.
    ``accel``: an Acceleration or ``auto`` | ``eager`` | ``fast`` (vta_core.accel; ``auto`` = bf16 +
    channels-last on CUDA, fp32 on CPU). The next videos are decoded on ``decode_workers`` threads while one
    is generated.
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
    if isinstance(accel, str):
        accel = Acceleration.named(accel, device)
    pipe = VTAPipeline.from_checkpoint(checkpoint, vision=vision, vae=vae, vocoder=vocoder, device=device, accel=accel)
    note = " (Griffin-Lim phase reconstruction: low quality, no HiFi-GAN for this geometry)" \
        if pipe.vocoder.name == "griffin-lim" else ""
    echo(f"vocoder: {pipe.vocoder.name} at {pipe.sample_rate} Hz{note}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []

    def read(path: Path) -> tuple[np.ndarray, float]:
        if path.resolve() in ((out / f"{path.stem}.wav").resolve(), (out / f"{path.stem}.mp4").resolve()):
            raise ValueError(f"{path}: the output would overwrite the input; choose another --out")
        return video_frames(path, geometry=pipe.geometry, duration_s=duration_s)

    for path, decoded in decode_ahead(paths, read, workers=decode_workers):
        res = GenerateResult(path)
        wav, mp4 = out / f"{path.stem}.wav", out / f"{path.stem}.mp4"
        try:
            if isinstance(decoded, Exception):
                raise decoded
            frames, seconds = decoded
            audio = pipe(frames, seconds, steps=steps, sampler=sampler, guidance=guidance, seed=seed)
            sf.write(wav, audio, pipe.sample_rate, subtype="PCM_16")
            mux(path, wav, mp4)
            res.wav, res.mp4, res.seconds = wav, mp4, seconds
            echo(f"{path}: {seconds:.2f} s -> {wav} + {mp4}")
        except (MediaError, ValueError, OSError, subprocess.TimeoutExpired) as e:
            res.error = f"{path}: {e}" if str(path) not in str(e) and path.name not in str(e) else str(e)
            echo(f"failed: {res.error}")
        results.append(res)
    return results
