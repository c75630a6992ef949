"""A small log-mel CNN audio classifier for the synthetic world: the stand-in for PANNs / VGGish there.

Trained by ``stages/audio_classifier.py`` on the ground-truth audio of ``vta synth`` clips (classes: the
sounding event classes + ``none``), it gives what the paper's metrics take from pretrained networks,
so FD, FAD, IS and KL get *synthetic-world* values (``fd_synth``, ``fad_synth``, ``is_synth``,
``kl_synth``, ``kl_synth_sigmoid``) where no real weights exist. They are comparable only with each other, never with the
paper's numbers.

Front-end as PANNs Cnn14 at 16 kHz (torchlibrosa: window 512, hop 160, 64 mels, 50-8000 Hz, ``bn0``),
three conv blocks (two 3x3 conv + BN + ReLU, 2x2 average pooling), mean over frequency, max + mean over
time, ``embedding = relu(fc1)`` (D = ``channels[-1]``), ``logits = fc_out(embedding)``. Saved as
``model.safetensors`` + ``config.json``.

It is applied at the scale it was trained on: ``audio_classifier`` trains on 0.5 s windows starting
0.05 s before one event's onset (:data:`WINDOW_S`, :data:`PRE_S`, shared with that stage). So
:meth:`SynthEmbedder.windows` cuts one window ``[onset - PRE_S, onset - PRE_S + WINDOW_S)`` per true
onset (:func:`event_windows`, at 16 kHz, zero-padded where it leaves the clip) and gives one
embedding / logit row per event (FD, IS, KL of the ``*_synth`` columns); :meth:`SynthEmbedder.frames`
gives the embeddings of the clip's consecutive 0.5 s chunks (:data:`FRAME_S`, the FAD-like statistics:
every stretch of the clip, events or not). ``__call__`` still gives all three for the whole clip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vta_core.metrics.panns import ConvBlock

SAMPLE_RATE = 16000
WINDOW_S = 0.5  # the training window: one event, starting PRE_S before its onset
PRE_S = 0.05
FRAME_S = WINDOW_S  # chunk length of the FAD-like frame embeddings: the training window's length


class SynthAudioClassifier(nn.Module):
    def __init__(self, *, classes: list[str], channels: tuple[int, ...] = (16, 32, 64), mels: int = 64) -> None:
        super().__init__()
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        self.classes = list(classes)
        self.channels = tuple(channels)
        self.spectrogram = Spectrogram(n_fft=512, hop_length=160, win_length=512, window="hann", center=True,
                                       pad_mode="reflect", freeze_parameters=True)
        self.logmel = LogmelFilterBank(sr=SAMPLE_RATE, n_fft=512, n_mels=mels, fmin=50, fmax=8000, ref=1.0,
                                       amin=1e-10, top_db=None, freeze_parameters=True)
        self.bn0 = nn.BatchNorm2d(mels)
        self.blocks = nn.ModuleList(ConvBlock(cin, cout) for cin, cout in zip((1, *channels[:-1]), channels, strict=True))
        self.fc1 = nn.Linear(channels[-1], channels[-1])
        self.fc_out = nn.Linear(channels[-1], len(self.classes))

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N) at 16 kHz -> {"embedding": (B, D), "logits": (B, C)}."""
        x = self.logmel(self.spectrogram(waveform))  # (B, 1, T, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = F.dropout(block(x, (2, 2)), p=0.1, training=self.training)  # (B, C, T', F')
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)  # (B, C)
        emb = F.relu(self.fc1(x))
        return {"embedding": emb, "logits": self.fc_out(emb)}

    def config(self) -> dict[str, Any]:
        return {"classes": self.classes, "channels": list(self.channels), "sample_rate": SAMPLE_RATE,
                "frame_s": FRAME_S, "kind": "synth_audio_classifier"}

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> SynthAudioClassifier:
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"synthetic audio classifier: no {name} in {folder}")
        cfg = json.loads((folder / "config.json").read_text())
        model = cls(classes=cfg["classes"], channels=tuple(cfg["channels"]))
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        return model.eval()


def to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    from vta_core.librosa_import import librosa

    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"audio must be mono (N,) with N > 0, got shape {y.shape}")
    if sample_rate != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return y


def event_windows(audio: np.ndarray, onsets_s: Sequence[float]) -> np.ndarray:
    """(E, WINDOW_S * 16000) windows of 16 kHz mono ``audio``, one per onset, starting at sample
    ``round((onset - PRE_S) * 16000)``; samples outside the clip are zeros."""
    y = np.asarray(audio, dtype=np.float32)
    win = round(WINDOW_S * SAMPLE_RATE)
    out = np.zeros((len(onsets_s), win), dtype=np.float32)
    for i, t in enumerate(onsets_s):
        start = round((float(t) - PRE_S) * SAMPLE_RATE)
        lo, hi = max(start, 0), min(start + win, y.size)
        if hi > lo:
            out[i, lo - start : hi - start] = y[lo:hi]
    return out


class SynthEmbedder:
    """A trained classifier -> event-window rows (:meth:`windows`), 0.5 s chunk frames (:meth:`frames`),
    or the whole clip (``__call__``)."""

    def __init__(self, model: SynthAudioClassifier, *, source: str = "") -> None:
        self.model = model.eval()
        self.source = source

    @property
    def dim(self) -> int:
        return self.model.channels[-1]

    @torch.no_grad()
    def _rows(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """(B, N) 16 kHz -> {"embedding": (B, D), "logits": (B, C)} float64 (B may be 0)."""
        if len(x) == 0:
            return {"embedding": np.zeros((0, self.dim)), "logits": np.zeros((0, len(self.model.classes)))}
        out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return {k: v.double().numpy() for k, v in out.items()}

    def windows(self, audio: np.ndarray, sample_rate: int, onsets_s: Sequence[float]) -> dict[str, np.ndarray]:
        """One row per onset: {"embedding": (E, D), "logits": (E, C)} of :func:`event_windows`."""
        return self._rows(event_windows(to_16k(audio, sample_rate), onsets_s))

    def frames(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(n, D) embeddings of the consecutive FRAME_S chunks (a partial last chunk is dropped)."""
        y = to_16k(audio, sample_rate)
        n = round(FRAME_S * SAMPLE_RATE)
        k = y.size // n
        return self._rows(y[: k * n].reshape(k, n))["embedding"]

    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """The whole clip: {"embedding": (D,), "logits": (C,), "frames": (n, D)}."""
        whole = self._rows(to_16k(audio, sample_rate)[None])
        return {"embedding": whole["embedding"][0], "logits": whole["logits"][0],
                "frames": self.frames(audio, sample_rate)}


def load_synth_classifier(folder: str | Path | None) -> tuple[SynthEmbedder | None, str | None]:
    """(embedder, None) or (None, reason) for an ``audio_classifier`` artifact's ``model/`` folder."""
    if folder is None or str(folder) == "":
        return None, "no synthetic audio classifier given (train one with the audio_classifier stage)"
    try:
        return SynthEmbedder(SynthAudioClassifier.load(folder), source=str(folder)), None
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        return None, str(e).splitlines()[0]
