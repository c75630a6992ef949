"""Conditioning: frozen per-frame features -> cross-attention tokens (+ an optional time-aligned path).

VTA-LDM conditions the UNet on φ(f_V): frozen CLIP frame embeddings (B, T, D) through a trained linear
projection φ to the cross-attention width C. Optional auxiliary embeddings (paper Sec. 3.3):

- a sinusoidal position embedding over frames, added to the features before φ (as the release does);
- label text embeddings (B, L, Dt), projected and concatenated along the token sequence;
- optical-flow embeddings (B, T, Df), projected and concatenated along the token sequence.

Cross-attention is blind to token order, so timing can only come from what the tokens carry. The
time-aligned path (``aligned_channels > 0``) projects each frame to a few channels and interpolates them
onto the latent time axis by real timestamps (:func:`align_to_latents`: frame k shows t_k = k / fps,
latent frame j is centred at τ_j = (j + 0.5) / latent_frame_rate); the denoiser concatenates them to its
input channels (MMAudio-style aligned conditioning). The null condition ∅ (classifier-free guidance, eq. 2) is zero tokens and zero aligned
channels; :meth:`Conditioner.forward` replaces dropped rows with it so ∅ is trained.

Two options make the aligned path learn in CPU minutes (demo preset; the paper preset has both off):

- ``feature_norm``: frame features are standardised per dimension, f̂ = (f − μ) / σ, with μ, σ measured
  once on the training frames (:meth:`Conditioner.set_feature_stats`, saved with the weights as buffers).
  Raw pooled pixels or CLIP embeddings have a large common offset and dims of very different scale;
  standardised, a linear φ starts with inputs of unit scale.
- ``aligned_delta``: the aligned path sees [f̂_t, f̂_t − f̂_{t−1}] (B, T, 2D): a visual onset (something
  appears) is a large frame difference exactly where the sound starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Condition:
    """What the denoiser sees of the video (and text/flow).

    tokens: (B, S, C) cross-attention tokens; mask: (B, S) bool, True = attend;
    aligned: (B, A, T_lat) time-aligned channels, or None when the path is off.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    aligned: torch.Tensor | None

    def null(self) -> Condition:
        """∅ with the same shapes: zero tokens (all attended) and zero aligned channels."""
        aligned = None if self.aligned is None else torch.zeros_like(self.aligned)
        return Condition(torch.zeros_like(self.tokens), torch.ones_like(self.mask), aligned)

    def cat(self, other: Condition) -> Condition:
        """Stack two conditions along the batch (e.g. [∅, c] for one guided forward)."""
        if self.tokens.shape[1:] != other.tokens.shape[1:]:
            raise ValueError(f"cannot batch tokens {tuple(self.tokens.shape)} with {tuple(other.tokens.shape)}")
        aligned = None if self.aligned is None else torch.cat([self.aligned, other.aligned])
        return Condition(torch.cat([self.tokens, other.tokens]), torch.cat([self.mask, other.mask]), aligned)


def sinusoidal_embedding(length: int, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    """Transformer position embedding (Vaswani et al.): PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(.).

    Returns (length, dim); ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (d/2,)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


def align_to_latents(x: torch.Tensor, *, fps: float, latent_frame_rate: float, latent_frames: int) -> torch.Tensor:
    """Per-frame values (B, T, A) -> (B, A, T_lat) on the latent time axis, by real timestamps.

    Frame k shows time t_k = k / fps; latent frame j is centred at τ_j = (j + 0.5) / latent_frame_rate.
    Each latent frame takes the linear interpolation in time between the two frames around τ_j, clamped
    to the first/last frame outside [t_0, t_{T-1}] (so T frames of a clip of d seconds, T = ⌊d·fps⌋, do
    not drift against the d seconds of latents).
    """
    if fps <= 0 or latent_frame_rate <= 0:
        raise ValueError(f"fps and latent_frame_rate must be positive, got {fps}/{latent_frame_rate}")
    T = x.shape[1]
    tau = (torch.arange(latent_frames, dtype=torch.float64) + 0.5) / latent_frame_rate  # (T_lat,) seconds
    pos = (tau * fps).clamp(0, T - 1)  # fractional frame index of each latent frame
    i0 = pos.floor().long().clamp(max=T - 1)
    i1 = (i0 + 1).clamp(max=T - 1)
    w = (pos - i0).to(x.device, x.dtype)[None, :, None]  # (1, T_lat, 1)
    i0, i1 = i0.to(x.device), i1.to(x.device)
    out = x[:, i0] * (1 - w) + x[:, i1] * w  # (B, T_lat, A)
    return out.transpose(1, 2)


class Conditioner(nn.Module):
    """φ and the auxiliary projections; turns a batch of frozen features into a :class:`Condition`."""

    def __init__(
        self,
        *,
        vision_dim: int,
        cross_attention_dim: int,
        text_dim: int = 0,
        flow_dim: int = 0,
        position_embedding: bool = False,
        aligned_channels: int = 0,
        aligned_delta: bool = False,
        feature_norm: bool = False,
    ) -> None:
        super().__init__()
        if vision_dim <= 0 or cross_attention_dim <= 0:
            raise ValueError(f"vision_dim/cross_attention_dim must be positive, got {vision_dim}/{cross_attention_dim}")
        if position_embedding and vision_dim % 2:
            raise ValueError(f"position_embedding needs an even vision_dim, got {vision_dim}")
        self.vision_dim = vision_dim
        self.position_embedding = position_embedding
        self.aligned_channels = aligned_channels
        self.vision_proj = nn.Linear(vision_dim, cross_attention_dim)  # φ
        self.text_proj = nn.Linear(text_dim, cross_attention_dim) if text_dim > 0 else None
        self.flow_proj = nn.Linear(flow_dim, cross_attention_dim) if flow_dim > 0 else None
        self.aligned_delta = aligned_delta
        aligned_in = vision_dim * (2 if aligned_delta else 1)
        self.aligned_proj = nn.Linear(aligned_in, aligned_channels) if aligned_channels > 0 else None
        self.feature_norm = feature_norm
        if feature_norm:  # identity until set_feature_stats; saved with the weights
            self.register_buffer("vision_mean", torch.zeros(vision_dim))
            self.register_buffer("vision_std", torch.ones(vision_dim))
            self.register_buffer("vision_stats_frames", torch.zeros((), dtype=torch.long))

    @property
    def needs_feature_stats(self) -> bool:
        """True when ``feature_norm`` is on and no statistics have been set yet."""
        return self.feature_norm and int(self.vision_stats_frames) == 0

    def set_feature_stats(self, frames: torch.Tensor, *, min_std: float = 1e-3) -> None:
        """μ, σ per dimension from training frames (N, D); σ is floored at ``min_std`` (constant dims)."""
        if not self.feature_norm:
            raise ValueError("set_feature_stats needs a Conditioner built with feature_norm=True")
        if frames.ndim != 2 or frames.shape[1] != self.vision_dim or frames.shape[0] < 2:
            raise ValueError(f"feature stats need frames (N >= 2, {self.vision_dim}), got {tuple(frames.shape)}")
        x = frames.double()
        self.vision_mean.copy_(x.mean(0).float())
        self.vision_std.copy_(x.std(0).clamp(min=min_std).float())
        self.vision_stats_frames.fill_(frames.shape[0])

    def null(self, batch_size: int, *, latent_frames: int, device: torch.device | str = "cpu") -> Condition:
        """∅ for a batch without any condition input: one zero token per row (audio-only pretraining)."""
        width = self.vision_proj.out_features
        aligned = None
        if self.aligned_proj is not None:
            aligned = torch.zeros(batch_size, self.aligned_channels, latent_frames, device=device)
        return Condition(
            torch.zeros(batch_size, 1, width, device=device), torch.ones(batch_size, 1, dtype=torch.bool, device=device),
            aligned,
        )

    def forward(
        self,
        vision: torch.Tensor | None,
        *,
        latent_frames: int,
        fps: float,
        latent_frame_rate: float,
        vision_mask: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        flow: torch.Tensor | None = None,
        flow_mask: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> Condition:
        """vision (B, T, D) or None (audio-only) -> Condition; ``drop`` (B,) bool rows become ∅.

        ``fps`` (frame k at k / fps) and ``latent_frame_rate`` place the frames on the latent time axis
        (the aligned path; :class:`~vta_core.geometry.ClipGeometry` has both).
        Token order: [text (L), vision (T), flow (T)], each part only when given.
        """
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tokens (B, n, C), mask (B, n))
        given = [x for x in (vision, text, flow) if x is not None]
        if not given:
            raise ValueError("a condition needs at least one of vision, text or flow")
        B, device = given[0].shape[0], given[0].device

        if text is not None:
            if self.text_proj is None:
                raise ValueError(f"got text of shape {tuple(text.shape)} but the model was built with text_dim=0")
            m = text_mask if text_mask is not None else torch.ones(text.shape[:2], dtype=torch.bool, device=device)
            parts.append((self.text_proj(text), m.bool()))

        aligned = None
        if vision is not None:
            if vision.ndim != 3 or vision.shape[-1] != self.vision_dim:
                raise ValueError(f"vision features must be (B, T, {self.vision_dim}), got {tuple(vision.shape)}")
            T = vision.shape[1]
            m = vision_mask.bool() if vision_mask is not None else torch.ones(B, T, dtype=torch.bool, device=device)
            if self.feature_norm:
                vision = (vision - self.vision_mean) / self.vision_std
            feats = vision
            if self.position_embedding:  # PE over frames, added before φ (paper's "+PE")
                feats = feats + sinusoidal_embedding(T, self.vision_dim).to(feats)
            parts.append((self.vision_proj(feats), m))
            if self.aligned_proj is not None:
                x = vision
                if self.aligned_delta:  # [f_t, f_t - f_{t-1}] (B, T, 2D); the first frame's difference is 0
                    x = torch.cat([x, torch.diff(x, dim=1, prepend=x[:, :1])], dim=-1)
                a = self.aligned_proj(x) * m[..., None]  # (B, T, A), padded frames -> 0
                aligned = align_to_latents(a, fps=fps, latent_frame_rate=latent_frame_rate,
                                           latent_frames=latent_frames)  # (B, A, T_lat)

        if flow is not None:
            if self.flow_proj is None:
                raise ValueError(f"got flow of shape {tuple(flow.shape)} but the model was built with flow_dim=0")
            m = flow_mask if flow_mask is not None else torch.ones(flow.shape[:2], dtype=torch.bool, device=device)
            parts.append((self.flow_proj(flow), m.bool()))

        if self.aligned_proj is not None and aligned is None:  # text/flow only: aligned path is ∅
            dtype = parts[0][0].dtype
            aligned = torch.zeros(B, self.aligned_channels, latent_frames, device=device, dtype=dtype)

        cond = Condition(torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1), aligned)
        if drop is not None:
            cond = _drop_rows(cond, drop.to(device).bool())
        return cond


def _drop_rows(cond: Condition, drop: torch.Tensor) -> Condition:
    """Rows where drop (B,) is True become ∅ (condition dropout, so CFG's null condition is trained)."""
    keep = ~drop
    tokens = cond.tokens * keep[:, None, None].to(cond.tokens.dtype)  # ∅ tokens are zeros...
    mask = cond.mask | drop[:, None]  # ...all attended, as in Condition.null()
    aligned = None if cond.aligned is None else cond.aligned * keep[:, None, None].to(cond.aligned.dtype)
    return Condition(tokens, mask, aligned)
