"""Clip geometry: the one place where rates, lengths and shapes are defined.

Every stage derives its sizes from a :class:`ClipGeometry` (MMAudio's ``sequence_config`` idea):
seconds -> audio samples -> mel frames -> latent frames, and seconds -> video frames. One rule for
decode, training and generation alike: the frames of a span of d seconds are floor(d·fps) (at least 1),
frame k shows k/fps; its audio is round(d·sr) samples; its latents are ``with_duration(d)``. The named
geometries (paper / demo / tiny) are part of the presets (vta_core/presets.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


# --- the rounding rules (every stage counts frames and samples through these) ------------------
def frame_count(duration_s: float, fps: float) -> int:
    """Video frames of a span: floor(duration * fps), at least 1 (10.24 s at 2 fps -> 20, as the release)."""
    return max(1, math.floor(duration_s * fps + 1e-9))


def sample_count(duration_s: float, sample_rate: int) -> int:
    """Audio samples in a clip window: round(duration * sample_rate)."""
    return round(duration_s * sample_rate)


@dataclass(frozen=True)
class ClipGeometry:
    """Audio/video geometry of one training clip.

    Audio follows AudioLDM: ``mel_frames = num_samples // hop_length`` (the STFT's extra centre
    frame is dropped), and the VAE halves time and frequency ``len(vae_channels) - 1`` times.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    duration_s: float = 10.24
    fps: float = 2.0  # video frames per second fed to the vision encoder
    frame_size: int = 224  # square frames after resize + centre crop
    latent_channels: int = 8
    vae_downsample: int = 4  # mel -> latent factor on both axes
    latent_multiple: int = 8  # latent time length must divide by this (UNet down-sampling)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "frame_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ClipGeometry.{name} must be positive, got {getattr(self, name)!r}")
        if self.duration_s <= 0 or self.fps <= 0:
            raise ValueError(f"ClipGeometry duration_s/fps must be positive, got {self.duration_s!r}/{self.fps!r}")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"ClipGeometry.fmax={self.fmax} exceeds Nyquist {self.sample_rate / 2}")
        if self.n_mels % self.vae_downsample:
            raise ValueError(f"ClipGeometry.n_mels={self.n_mels} not divisible by vae_downsample={self.vae_downsample}")
        if self.mel_frames % (self.vae_downsample * self.latent_multiple):
            raise ValueError(
                f"duration_s={self.duration_s} gives {self.mel_frames} mel frames, not a multiple of "
                f"{self.vae_downsample * self.latent_multiple}; use ClipGeometry.with_duration() to round it"
            )

    # --- derived audio sizes -------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return sample_count(self.duration_s, self.sample_rate)

    @property
    def mel_frames(self) -> int:
        return self.num_samples // self.hop_length

    @property
    def mel_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def latent_frame_rate(self) -> float:
        """Latent frames per second: sample_rate / (hop_length * vae_downsample); latent frame j covers
        [j, j + 1) / rate (its centre is (j + 0.5) / rate)."""
        return self.sample_rate / (self.hop_length * self.vae_downsample)

    @property
    def latent_frames(self) -> int:
        return self.mel_frames // self.vae_downsample

    @property
    def latent_mels(self) -> int:
        return self.n_mels // self.vae_downsample

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, T_latent, F_latent), e.g. (8, 256, 16) for the paper preset."""
        return (self.latent_channels, self.latent_frames, self.latent_mels)

    # --- derived video sizes -------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """Video frames per clip (one generation window): :func:`frame_count` of ``duration_s``."""
        return frame_count(self.duration_s, self.fps)

    # --- helpers -------------------------------------------------------------------------
    def with_duration(self, seconds: float) -> ClipGeometry:
        """Same geometry for another clip length, rounded up to a valid latent length."""
        step = self.vae_downsample * self.latent_multiple * self.hop_length  # samples per latent block
        samples = math.ceil(seconds * self.sample_rate / step) * step
        return dataclasses.replace(self, duration_s=samples / self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["derived"] = {
            "num_samples": self.num_samples,
            "mel_frames": self.mel_frames,
            "latent_shape": list(self.latent_shape),
            "num_frames": self.num_frames,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipGeometry:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields - {"derived"}
        if unknown:
            raise ValueError(f"unknown ClipGeometry keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in fields})

    def check_audio(self, num_samples: int, *, what: str = "audio") -> None:
        """Raise if a stored waveform does not have this geometry's length."""
        if num_samples != self.num_samples:
            raise ValueError(f"{what} has {num_samples} samples, geometry expects {self.num_samples}")

    def check_frames(self, num_frames: int, size: int, *, what: str = "frames") -> None:
        """Raise if stored frames do not match this geometry."""
        if num_frames != self.num_frames or size != self.frame_size:
            raise ValueError(
                f"{what} are {num_frames}x{size}px, geometry expects {self.num_frames}x{self.frame_size}px"
            )

