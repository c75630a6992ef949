"""PAM (Deshmukh et al. 2024, "Prompting Audio-Language Models for Audio Quality Assessment").

Algorithm (the authors' ``PAM.py`` / ``dataset.py``): audio at 44.1 kHz cut into 7 s chunks (shorter
audio repeated up to 7 s; a remainder replaced by the last 7 s); per chunk, with MS-CLAP 2023 (HTSAT audio
encoder, GPT-2 text encoder) unit-normalised audio embedding ``a`` and the two prompt embeddings
``t+`` = "the sound is clear and clean." and ``t-`` = "the sound is noisy and with artifacts.",
``p = softmax(exp(logit_scale) * [a.t+, a.t-])[0]``; a clip's score is the mean over its chunks, the
metric the mean over clips. :func:`pam_from_embeddings` is that arithmetic, :func:`chunk_audio` the
chunking.

The network: MS-CLAP's PyPI package (``msclap``) imports torchaudio and pins librosa < 0.11, neither of
which fits this environment, and its constructor fetches GPT-2 from the hub. So :func:`load_pam` takes an
object with ``audio_embeddings(chunks) -> (K, D)``, ``prompt_embeddings() -> (2, D)`` and
``logit_scale``; none is built here, so PAM is ``null`` with that reason unless a caller supplies one.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.special

SAMPLE_RATE = 44100
CHUNK_S = 7
PROMPTS = ("the sound is clear and clean.", "the sound is noisy and with artifacts.")
UNAVAILABLE = ("PAM needs MS-CLAP 2023 (msclap requires torchaudio and librosa<0.11, not installable with this "
               "environment's pins; CLAP_weights_2023.pth and GPT-2 from the hub): no PAM model loaded")


class PamModel(Protocol):
    logit_scale: float

    def audio_embeddings(self, chunks: np.ndarray) -> np.ndarray: ...

    def prompt_embeddings(self) -> np.ndarray: ...


def chunk_audio(audio_44k: np.ndarray) -> np.ndarray:
    """(N,) at 44.1 kHz -> (K, 7 s) chunks as PAM's ``process_audio`` (non-repro mode)."""
    n = SAMPLE_RATE * CHUNK_S
    y = np.asarray(audio_44k, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise ValueError("PAM needs non-empty audio")
    if y.size <= n:
        y = np.tile(y, int(np.ceil(n / y.size)))[:n]
    elif y.size % n:
        y = np.concatenate([y[: (y.size // n) * n], y[-n:]])
    return y.reshape(-1, n)


def pam_from_embeddings(audio_emb: np.ndarray, prompt_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """(K, D) chunk embeddings, (2, D) prompt embeddings -> (K,) probability of the "clear" prompt."""
    a = np.asarray(audio_emb, dtype=np.float64)
    t = np.asarray(prompt_emb, dtype=np.float64)
    if a.ndim != 2 or t.shape != (2, a.shape[1]):
        raise ValueError(f"PAM needs (K, D) audio and (2, D) prompt embeddings, got {a.shape} and {t.shape}")
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return scipy.special.softmax(np.exp(logit_scale) * a @ t.T, axis=1)[:, 0]


class PamScore:
    def __init__(self, model: PamModel) -> None:
        self.model = model

    def __call__(self, audio: np.ndarray, sample_rate: int) -> float:
        from vta_core.librosa_import import librosa

        y = np.asarray(audio, dtype=np.float32)
        if sample_rate != SAMPLE_RATE:
            y = librosa.resample(y, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
        chunks = chunk_audio(y)
        scores = pam_from_embeddings(self.model.audio_embeddings(chunks), self.model.prompt_embeddings(),
                                     float(self.model.logit_scale))
        return float(scores.mean())


def load_pam(model: Any = None) -> tuple[PamScore | None, str | None]:
    """(scorer, None) for a :class:`PamModel`, else (None, reason)."""
    if model is None:
        return None, UNAVAILABLE
    return PamScore(model), None
