"""PANNs Cnn14 (Kong et al. 2020) at 16 kHz: the 2048-d embedding (FD) and the 527 AudioSet logits (IS, KL).

Architecture and front-end as ``audioset_tagging_cnn``'s ``Cnn14`` and audioldm_eval's copy of it
(16 kHz, window 512, hop 160, 64 mels, 50-8000 Hz, log-mel from torchlibrosa, ``bn0`` over mel bins,
six conv blocks of two 3x3 conv + BN + ReLU with 2x2 average pooling, mean over frequency, max + mean over
time, ``embedding = relu(fc1(x))``, ``logits = fc_audioset(embedding)``). The released weights are
``Cnn14_16k_mAP=0.438.pth`` (Zenodo 3987831): a torch pickle ``{"model": state_dict, ...}``; the state-dict
keys are the attribute names below, so that file loads strictly.

Why a re-implementation: the PyPI packages that carry Cnn14 run ``wget`` while they import
(panns-inference's ``config.py``) or in the constructor (audioldm-eval, which also loads with
``weights_only=False`` and pulls torchaudio); the front-end comes from torchlibrosa, PANNs' own package.
Checkpoints are read with ``torch.load(weights_only=True)``; numpy arrays in the training-state entries
(``sampler``) are allowed through torch's safe-globals list, nothing else.

Input as audioldm_eval prepares it: the clip's mean is subtracted (DC removal) before it is resampled
to 16 kHz with librosa (soxr_hq), and a clip shorter than :data:`MIN_SECONDS` (2 s, 32000 samples) is
zero-padded at the end to that length; each clip is one forward pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vta_core.metrics.weights import resolve_weights

SAMPLE_RATE = 16000
WINDOW, HOP, MELS, FMIN, FMAX, CLASSES = 512, 160, 64, 50, 8000, 527
CHANNELS = (64, 128, 256, 512, 1024, 2048)
MIN_SECONDS = 2.0  # shorter input is zero-padded to this (audioldm_eval: 32000 samples)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    """Cnn14 (inference only). ``channels`` other than :data:`CHANNELS` exist for small test models."""

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, window: int = WINDOW, hop: int = HOP, mels: int = MELS,
                 fmin: int = FMIN, fmax: int = FMAX, classes: int = CLASSES,
                 channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        self.sample_rate = sample_rate
        self.spectrogram_extractor = Spectrogram(n_fft=window, hop_length=hop, win_length=window, window="hann",
                                                 center=True, pad_mode="reflect", freeze_parameters=True)
        self.logmel_extractor = LogmelFilterBank(sr=sample_rate, n_fft=window, n_mels=mels, fmin=fmin, fmax=fmax,
                                                 ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True)
        self.bn0 = nn.BatchNorm2d(mels)
        ins = (1, *channels[:-1])
        for i, (cin, cout) in enumerate(zip(ins, channels, strict=True)):
            setattr(self, f"conv_block{i + 1}", ConvBlock(cin, cout))
        self.n_blocks = len(channels)
        self.fc1 = nn.Linear(channels[-1], channels[-1])
        self.fc_audioset = nn.Linear(channels[-1], classes)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N) at ``sample_rate`` -> {"embedding": (B, D), "logits": (B, classes)}."""
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))  # (B, 1, T, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(self.n_blocks):
            last = i == self.n_blocks - 1
            x = getattr(self, f"conv_block{i + 1}")(x, (1, 1) if last else (2, 2))  # (B, C, T', F')
        x = x.mean(dim=3)  # (B, C, T')
        x = x.max(dim=2).values + x.mean(dim=2)  # (B, C)
        emb = F.relu(self.fc1(x))
        return {"embedding": emb, "logits": self.fc_audioset(emb)}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of a PANNs checkpoint (weights_only; numpy arrays allowed in other entries)."""
    safe = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float64)),
            type(np.dtype(np.int64)), type(np.dtype(np.uint32)), type(np.dtype(np.bool_))]
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types: name the file, one line
        raise ValueError(f"cannot read PANNs checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"PANNs checkpoint {path} has no 'model' state dict")
    return state


def build_from_state(state: dict[str, torch.Tensor], **kwargs: Any) -> Cnn14:
    """A Cnn14 whose widths and class count are read from ``state`` (the released file: the paper sizes)."""
    channels = tuple(state[f"conv_block{i}.conv1.weight"].shape[0] for i in range(1, 7)
                     if f"conv_block{i}.conv1.weight" in state)
    model = Cnn14(channels=channels, classes=state["fc_audioset.weight"].shape[0], **kwargs)
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(audio: np.ndarray, sample_rate: int, *, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """audioldm_eval's PANNs input: ``y - mean(y)``, resampled to ``target_rate``, zero-padded to
    :data:`MIN_SECONDS`; float32 (N',)."""
    from vta_core.librosa_import import librosa

    y = np.asarray(audio, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"PANNs needs mono audio (N,) with N > 0, got shape {y.shape}")
    y = (y - y.mean()).astype(np.float32)
    if sample_rate != target_rate:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=target_rate, res_type="soxr_hq")
    need = round(MIN_SECONDS * target_rate)
    return np.pad(y, (0, need - y.size)) if y.size < need else y


class PannsEmbedder:
    """Cnn14 weights -> per-clip 2048-d embeddings and 527 logits."""

    def __init__(self, model: Cnn14, *, device: str = "cpu", source: str = "") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.source = source

    @torch.no_grad()
    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Mono ``(N,)`` at ``sample_rate`` -> {"embedding": (D,), "logits": (C,)} float64."""
        y = preprocess(audio, sample_rate, target_rate=self.model.sample_rate)  # (max(N', 2 s),)
        out = self.model(torch.from_numpy(y)[None].to(self.device))
        return {k: v[0].double().cpu().numpy() for k, v in out.items()}


def load_panns(weights: str | Path | None, *, device: str = "cpu") -> tuple[PannsEmbedder | None, str | None]:
    """(embedder, None) or (None, reason) for a checkpoint path or ``hf:OWNER/REPO/FILE``."""
    path, reason = resolve_weights(weights, what="PANNs Cnn14")
    if path is None:
        return None, reason
    try:
        model = build_from_state(read_checkpoint(path))
    except (ValueError, KeyError, RuntimeError) as e:
        return None, f"PANNs checkpoint {path} does not load: {str(e).splitlines()[0]}"
    return PannsEmbedder(model, device=device, source=str(path)), None
