"""Saliency maps (paper Fig. 2/3/6): which pixels of the frames the model's sound depends on.

For a clip's frames X (T, S, S, 3) and an audio latent z₀ (C, T_lat, F_lat) — by default the latent the model
samples for X (:func:`generated_latent`: the pipeline's sampler, steps, guidance and seed) —

    s(X) = Σ_k mean‖ f_θ(z_k, t_k, c(X)) − f_θ(z_k, t_k, ∅) ‖²,   z_k = √ᾱ_k z₀ + √(1 − ᾱ_k) ε_k

is the size of the conditional part of the denoiser's prediction (what classifier-free guidance amplifies)
at :data:`TIMESTEPS` (fractions of the training schedule) with fixed noise ε_k (seeded). The map is
``|∂s/∂X|`` summed over RGB -> (T, S, S): the gradient flows through the frozen encoder's differentiable
``features`` (pixels:N and open_clip towers have one) and the trained projection φ, the aligned path and
the UNet. The ∅ branch does not depend on X. A flow model's optical-flow tokens are computed from X but
held fixed (OpenCV's flow is not differentiable): the map shows what the model reads through the frames.

Measured against the synthetic world's boxes (``boxes.parquet``: per frame the ball and each visible
object), :func:`box_shares` gives per kind (``sounding`` object, ``silent`` decoy, distractor ``ball``) the
share of the saliency mass inside its boxes on the frames where it shows, the share its area would get
(uniform saliency), and their ratio, the *lift* (1 = no preference). Each frame's map is normalised to sum
1 first, so every frame weighs the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from vta_core.evaluation.intervals import LEVEL, RESAMPLES, percentile_bounds, resample_indices
from vta_core.pipeline import VTAPipeline
from vta_core.sampling import sample_latents, window_seed

TIMESTEPS = (0.25, 0.5, 0.75)  # t_k as fractions of num_train_timesteps
KINDS = ("sounding", "silent", "ball")  # what boxes.parquet outlines


def unavailable_reason(pipe: VTAPipeline) -> str | None:
    """Why ``pipe`` cannot give saliency maps (None when it can)."""
    if not pipe.model.config.vision_tokens:
        return "the model does not read frames (vision_tokens=False)"
    if not callable(getattr(pipe.vision, "features", None)):
        return f"vision encoder {pipe.vision.spec} has no differentiable features()"
    return None


def generated_latent(pipe: VTAPipeline, frames: np.ndarray, seconds: float, *, seed: int, steps: int,
                     sampler: str, guidance: float) -> torch.Tensor:
    """The scaled latent (1, C, T_lat, F_lat) the pipeline samples for one single-window clip with ``seed``."""
    if len(frames) > pipe.geometry.num_frames:
        raise ValueError(f"saliency takes clips of at most one window ({pipe.geometry.num_frames} frames), "
                         f"got {len(frames)}")
    tokens = pipe.frame_tokens([frames])
    return sample_latents(pipe.model, tokens, geometry=pipe.geometry.with_duration(seconds),
                          seeds=[window_seed(seed, 0)], sampler=sampler, steps=steps, guidance=guidance)


def saliency_score(pipe: VTAPipeline, x: torch.Tensor, seconds: float, *, latent: torch.Tensor, seed: int,
                   fixed: Mapping[str, torch.Tensor] | None = None, timesteps: Sequence[float] = TIMESTEPS) -> torch.Tensor:
    """s(X) (module docstring) for pixels ``x`` (T, 3, S, S) float in [0, 1], differentiable in ``x``;
    ``fixed``: per-frame tokens held constant (a flow model's (1, T, D_flow) flow tokens)."""
    model, device = pipe.model, pipe.device
    clip = pipe.geometry.with_duration(seconds)
    if tuple(latent.shape[1:]) != tuple(clip.latent_shape):
        raise ValueError(f"latent {tuple(latent.shape)} does not fit a {seconds:.3f} s clip {clip.latent_shape}")
    # c(X): frozen encoder (T, D) -> (1, T, D) -> φ / aligned path; ∅ with the same shapes
    cond = model.condition({"vision": pipe.vision.features(x)[None], **(fixed or {})},
                           latent_frames=clip.latent_frames, geometry=clip)
    null = cond.null()
    n = model.scheduler.config.num_train_timesteps
    gen = torch.Generator().manual_seed(int(seed))
    z0 = latent.to(device).float()
    score = torch.zeros((), device=device)
    for frac in timesteps:  # Σ_k mean ‖f(z_k, t_k, c) − f(z_k, t_k, ∅)‖², z_k = add_noise(z₀, ε_k, t_k)
        t = torch.tensor([min(n - 1, round(frac * n))], device=device)
        z_t = model.scheduler.add_noise(z0, torch.randn(z0.shape, generator=gen).to(device), t)
        with torch.no_grad():
            base = model(z_t, t, null).float()
        score = score + (model(z_t, t, cond).float() - base).pow(2).mean()
    return score


def saliency_map(pipe: VTAPipeline, frames: np.ndarray, seconds: float, *, latent: torch.Tensor, seed: int,
                 timesteps: Sequence[float] = TIMESTEPS) -> np.ndarray:
    """``|∂s/∂X|`` summed over RGB: float32 (T, S, S) for uint8 frames (T, S, S, 3) (module docstring)."""
    why = unavailable_reason(pipe)
    if why is not None:
        raise ValueError(f"no saliency for this checkpoint: {why}")
    # 1. per-frame tokens that carry no gradient (flow), computed from the frames as generation does
    fixed = {"flow": pipe.frame_tokens([frames])["flow"]} if pipe.flow is not None else {}
    # 2. pixels as a leaf: (T, 3, S, S) in [0, 1]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255.0).to(pipe.device)
    x.requires_grad_(True)
    # 3. s(X), then |∂s/∂X| summed over RGB -> (T, S, S)
    with torch.enable_grad():
        score = saliency_score(pipe, x, seconds, latent=latent, seed=seed, fixed=fixed, timesteps=timesteps)
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs().sum(1).cpu().numpy().astype(np.float32)


# --- the synthetic world's boxes ----------------------------------------------------------------
def fps_filter_sources(n_out: int, *, fps_out: float, n_in: int, fps_in: float) -> list[int]:
    """Input frame index behind each of ``n_out`` frames that FFmpeg's ``fps`` filter (round=near) makes
    from ``n_in`` frames: input j lands in slot round(j · fps_out / fps_in), the last one in a slot is kept,
    an empty slot repeats the previous frame."""
    last: dict[int, int] = {}
    for j in range(n_in):
        last[int(np.floor(j * fps_out / fps_in + 0.5))] = j
    out, prev = [], 0
    for k in range(n_out):
        prev = last.get(k, prev)
        out.append(min(prev, n_in - 1))
    return out


Box = tuple[str, float, float, float, float]  # (kind, x0, y0, x1, y1) in pixels of the decoded frame


def clip_boxes(synth_dir: str | Path, clip_id: str, *, n_frames: int, fps: float, frame_size: int) -> list[list[Box]]:
    """Per decoded frame (``n_frames`` at ``fps``, ``frame_size`` square) the boxes of ``clip_id`` from the
    synth folder's ``boxes.parquet`` (at the synth fps and size: square frames scale without a crop)."""
    synth_dir = Path(synth_dir)
    meta = json.loads((synth_dir / "synth.json").read_text())["params"]
    rows = pq.read_table(synth_dir / "boxes.parquet", filters=[("clip_id", "=", clip_id)]).to_pylist()
    by_frame: dict[int, list[Box]] = {}
    scale = frame_size / float(meta["size"])
    for r in rows:
        by_frame.setdefault(r["frame"], []).append(
            (r["kind"], r["x0"] * scale, r["y0"] * scale, r["x1"] * scale, r["y1"] * scale))
    src = fps_filter_sources(n_frames, fps_out=fps, n_in=int(meta["n_frames"]), fps_in=float(meta["fps"]))
    return [by_frame.get(j, []) for j in src]


def _mask(boxes: Sequence[Box], kind: str, size: int) -> np.ndarray:
    """(S, S) float coverage of the pixels by the union of ``kind``'s boxes (partial pixels count partly)."""
    cover = np.zeros((size, size))
    grid = np.arange(size, dtype=np.float64)
    for k, x0, y0, x1, y1 in boxes:
        if k != kind:
            continue
        cx = np.clip(np.minimum(grid + 1, x1) - np.maximum(grid, x0), 0, 1)  # (S,) overlap of each column
        cy = np.clip(np.minimum(grid + 1, y1) - np.maximum(grid, y0), 0, 1)
        cover = np.maximum(cover, cy[:, None] * cx[None, :])
    return cover


def box_shares(maps: np.ndarray, boxes: Sequence[Sequence[Box]]) -> dict[str, dict[str, float]]:
    """Per kind: ``inside`` (Σ over the frames where it shows of the frame-normalised saliency inside its
    boxes), ``area`` (Σ of its area fractions on those frames), ``frames``; and ``share`` = inside / frames,
    ``area_share`` = area / frames, ``lift`` = inside / area (kinds that never show: frames 0, None values)."""
    T, S, _ = maps.shape
    if len(boxes) != T:
        raise ValueError(f"{len(boxes)} frames of boxes for {T} saliency maps")
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        inside = area = 0.0
        frames = 0
        for m, frame_boxes in zip(maps, boxes, strict=True):
            cover = _mask(frame_boxes, kind, S)
            total = float(m.sum())
            if not cover.any() or total <= 0:
                continue
            frames += 1
            inside += float((m * cover).sum()) / total
            area += float(cover.sum()) / (S * S)
        out[kind] = {"inside": inside, "area": area, "frames": frames,
                     "share": inside / frames if frames else None, "area_share": area / frames if frames else None,
                     "lift": inside / area if area > 0 else None}
    return out


def _pooled(per_clip: Sequence[Mapping[str, Mapping[str, float]]], idx: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """share and lift of ``kind`` pooled over the clip rows ``idx`` (R, n) -> (R,) each (NaN = never shows)."""
    inside = np.array([c[kind]["inside"] for c in per_clip])[idx].sum(axis=1)
    area = np.array([c[kind]["area"] for c in per_clip])[idx].sum(axis=1)
    frames = np.array([c[kind]["frames"] for c in per_clip], dtype=np.float64)[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"share": np.where(frames > 0, inside / np.maximum(frames, 1), np.nan),
                "lift": np.where(area > 0, inside / np.where(area > 0, area, 1), np.nan),
                "area_share": np.where(frames > 0, area / np.maximum(frames, 1), np.nan)}


def summarise(per_clip: Mapping[str, Sequence[Mapping[str, Mapping[str, float]] | None]], *,
              reference: str = "generated", resamples: int = RESAMPLES, seed: int = 0,
              level: float = LEVEL) -> dict[str, Any]:
    """Per track and kind: pooled ``share``, ``area_share`` and ``lift`` with bootstrap intervals over clips
    (``share_lo``/``share_hi``, ``lift_lo``/``lift_hi``), and per other track the paired difference of the
    lift ``reference − track`` on the clips both have (``paired``: {track: {kind: {diff, lo, hi}}})."""
    out: dict[str, Any] = {}
    for track, clips in per_clip.items():
        have = [c for c in clips if c is not None]
        out[track] = {"n_clips": len(have)}
        if not have:
            continue
        whole, idx = np.arange(len(have))[None], resample_indices(len(have), resamples=resamples, seed=seed)
        for kind in KINDS:
            pt, boot = _pooled(have, whole, kind), _pooled(have, idx, kind)
            block = {k: None if np.isnan(v[0]) else float(v[0]) for k, v in pt.items()}
            for k in ("share", "lift"):
                lo, hi = percentile_bounds(boot[k], level) or (None, None)
                block.update({f"{k}_lo": lo, f"{k}_hi": hi})
            out[track][kind] = block
    ref = per_clip.get(reference)
    if ref is not None:
        out.setdefault(reference, {})["paired"] = {}
        for track, clips in per_clip.items():
            if track == reference:
                continue
            both = [(r, c) for r, c in zip(ref, clips, strict=True) if r is not None and c is not None]
            if not both:
                continue
            a, b = [r for r, _ in both], [c for _, c in both]
            whole, idx = np.arange(len(both))[None], resample_indices(len(both), resamples=resamples, seed=seed)
            diffs = {}
            for kind in KINDS:
                d = _pooled(a, whole, kind)["lift"][0] - _pooled(b, whole, kind)["lift"][0]
                lo, hi = percentile_bounds(_pooled(a, idx, kind)["lift"] - _pooled(b, idx, kind)["lift"], level) \
                    or (None, None)
                diffs[kind] = {"diff": None if np.isnan(d) else float(d), "lo": lo, "hi": hi, "n_clips": len(both)}
            out[reference]["paired"][track] = diffs
    return out


def overlay_png(frames: np.ndarray, maps: np.ndarray, out: str | Path, *, boxes: Sequence[Sequence[Box]] | None = None,
                fps: float, max_frames: int = 10, title: str = "") -> Path:
    """A row of up to ``max_frames`` evenly spaced frames with the saliency map over each (per-frame
    normalised, ``inferno``) and, when given, the boxes: sounding object green, silent decoy yellow, ball
    white. Returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    colours = {"sounding": "#3f3", "silent": "#ff3", "ball": "#fff"}
    pick = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    fig, axes = plt.subplots(1, len(pick), figsize=(1.6 * len(pick), 1.9), squeeze=False)
    for ax, j in zip(axes[0], pick, strict=True):
        m = maps[j] / max(float(maps[j].max()), 1e-12)
        ax.imshow(frames[j])
        ax.imshow(m, cmap="inferno", alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
        for kind, x0, y0, x1, y1 in (boxes[j] if boxes is not None else []):
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.0, ec=colours[kind]))
        ax.set_title(f"{j / fps:.1f} s", fontsize=7)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return Path(out)


def saliency_files(video: str | Path, *, checkpoint: Any, out_dir: str | Path, synth_dir: str | Path | None = None,
                   steps: int, sampler: str, guidance: float, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """``vta saliency``: the map of ``video``'s first window for the audio the checkpoint generates for it
    (seed ``seed``), as ``<name>_saliency.png`` (overlays) and ``<name>_saliency.npy`` (T, S, S) float32 in
    ``out_dir``; with the video's synth folder (``synth_dir``, or the folder above ``videos/`` when it has
    ``boxes.parquet``) the box shares too. Returns what it wrote and measured (also ``<name>_saliency.json``)."""
    from vta_core.video_features import video_frames

    video, out = Path(video), Path(out_dir)
    pipe = VTAPipeline.from_checkpoint(checkpoint, device=device)
    why = unavailable_reason(pipe)
    if why is not None:
        raise ValueError(f"{checkpoint}: no saliency: {why}")
    g = pipe.geometry
    frames, seconds = video_frames(video, geometry=g, duration_s=g.duration_s)
    latent = generated_latent(pipe, frames, seconds, seed=seed, steps=steps, sampler=sampler, guidance=guidance)
    maps = saliency_map(pipe, frames, seconds, latent=latent, seed=seed)
    if synth_dir is None and (video.parent.parent / "boxes.parquet").is_file():
        synth_dir = video.parent.parent
    boxes = clip_boxes(synth_dir, video.stem, n_frames=len(frames), fps=g.fps, frame_size=g.frame_size) \
        if synth_dir is not None else None
    if boxes is not None and not any(boxes):
        raise ValueError(f"{synth_dir}/boxes.parquet has no boxes for {video.stem}")
    out.mkdir(parents=True, exist_ok=True)
    png = overlay_png(frames, maps, out / f"{video.stem}_saliency.png", boxes=boxes, fps=g.fps,
                      title=f"{video.name}: saliency for the generated audio")
    np.save(out / f"{video.stem}_saliency.npy", maps)
    result = {"video": str(video), "checkpoint": str(pipe.checkpoint), "seconds": seconds, "frames": len(frames),
              "seed": seed, "sampler": sampler, "steps": steps, "guidance": guidance, "timesteps": list(TIMESTEPS),
              "png": str(png), "npy": str(out / f"{video.stem}_saliency.npy"),
              "shares": box_shares(maps, boxes) if boxes is not None else None}
    (out / f"{video.stem}_saliency.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
