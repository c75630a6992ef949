"""CAVP score (Diff-Foley's Contrastive Audio-Visual Pretraining encoders): per clip, the cosine between
the CAVP video embedding of the clip's frames and the CAVP audio embedding of the (generated) audio,
averaged over clips (the paper reports 0.800 generated vs 0.813 ground truth).

:func:`cavp_from_embeddings` is that arithmetic. The encoders (a SlowOnly 3D ResNet-50 on 4 fps frames
and a PANNs-style audio encoder on 16 kHz mels, trained by Diff-Foley) are not packaged on PyPI and have
no weights reachable here, so :func:`load_cavp` takes an object with ``video_embedding(video_path)`` and
``audio_embedding(audio, sample_rate)``; without one the metric is ``null`` with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

UNAVAILABLE = ("CAVP needs Diff-Foley's CAVP video and audio encoders (not packaged on PyPI, no weights "
               "reachable offline): no CAVP model loaded")


class CavpModel(Protocol):
    def video_embedding(self, video: str | Path) -> np.ndarray: ...

    def audio_embedding(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


def cavp_from_embeddings(video_emb: np.ndarray, audio_emb: np.ndarray) -> float:
    """Cosine of two (D,) embeddings."""
    v, a = np.asarray(video_emb, dtype=np.float64).ravel(), np.asarray(audio_emb, dtype=np.float64).ravel()
    if v.shape != a.shape or v.size == 0:
        raise ValueError(f"CAVP embeddings must have the same size, got {v.shape} and {a.shape}")
    return float(v @ a / (np.linalg.norm(v) * np.linalg.norm(a)))


class CavpScore:
    def __init__(self, model: CavpModel) -> None:
        self.model = model

    def __call__(self, video: str | Path, audio: np.ndarray, sample_rate: int) -> float:
        return cavp_from_embeddings(self.model.video_embedding(video), self.model.audio_embedding(audio, sample_rate))


def load_cavp(model: Any = None) -> tuple[CavpScore | None, str | None]:
    """(scorer, None) for a :class:`CavpModel`, else (None, reason)."""
    if model is None:
        return None, UNAVAILABLE
    return CavpScore(model), None
