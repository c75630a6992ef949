"""Speech detection for the data filter (paper App. E.3: "we filter out talking ... content"): Silero VAD.

The registry package ``silero-vad`` ships its model as TorchScript, ONNX and safetensors. This module runs
the released ONNX graph (``silero_vad/data/silero_vad.onnx``, the package's own default for ONNX: the
current v6 weights; its safetensors file holds older weights of the same network) with onnxruntime — no
pickle, no TorchScript — and never imports the package itself (its ``__init__`` calls
``torch.set_num_threads(1)`` for the whole process).

Per 32 ms chunk (512 samples at 16 kHz, with the previous chunk's last 64 samples as context) the network
gives P(speech): x (1, 576) -> learned STFT -> 4 conv blocks -> LSTM state carried over the clip's chunks
-> sigmoid. A clip's score is its speech share: the fraction of its chunks with P > 0.5 (the package's
default threshold). One thread per session: the numbers do not depend on the machine's core count.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from storage.hashing import file_sha256

SAMPLE_RATE = 16000
CHUNK = 512  # samples per decision (32 ms)
CONTEXT = 64  # samples of the previous chunk each decision also sees
SILERO_FILE = "silero_vad.onnx"
SPEECH_PROB = 0.5  # a chunk is speech above this probability (the package's default threshold)


def silero_weights() -> Path | None:
    """The ONNX model the installed ``silero-vad`` package ships, or None (package not installed)."""
    spec = importlib.util.find_spec("silero_vad")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SILERO_FILE
    return path if path.is_file() else None


def to_chunks(wave: np.ndarray) -> np.ndarray:
    """16 kHz mono (S,) -> (N, CONTEXT + CHUNK): zero-padded to whole chunks, zero context before the first."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    x = np.pad(x, (CONTEXT, -x.size % CHUNK))
    n = (x.size - CONTEXT) // CHUNK
    return np.stack([x[i * CHUNK : i * CHUNK + CONTEXT + CHUNK] for i in range(n)]) if n else np.zeros((0, 576), np.float32)


def resample_16k(wave: np.ndarray, sr: int) -> np.ndarray:
    """(S,) at ``sr`` -> float32 at 16 kHz (polyphase, deterministic)."""
    y = np.asarray(wave, dtype=np.float32).reshape(-1)
    if int(sr) == SAMPLE_RATE or y.size == 0:
        return y
    from scipy.signal import resample_poly

    g = np.gcd(int(sr), SAMPLE_RATE)
    return resample_poly(y, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)


class SpeechDetector:
    """Silero VAD on onnxruntime: speech probabilities and the speech share of a waveform at any rate."""

    def __init__(self, session: Any, *, weights: Path) -> None:
        self.session, self.weights = session, weights

    def probabilities(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """(S,) mono at ``sr`` -> (N,) P(speech) per 32 ms chunk of its 16 kHz version (N = ⌈S16 / 512⌉)."""
        state = np.zeros((2, 1, 128), np.float32)  # LSTM (h, c), carried chunk to chunk
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        out = []
        for chunk in to_chunks(resample_16k(wave, sr)):
            p, state = self.session.run(None, {"input": chunk[None], "state": state, "sr": rate})
            out.append(float(p.reshape(-1)[0]))
        return np.asarray(out, np.float32)

    def speech_share(self, wave: np.ndarray, sr: int) -> float:
        """The fraction of 32 ms chunks with P(speech) > 0.5 (0.0 for silence, 1.0 for talk throughout)."""
        p = self.probabilities(wave, sr)
        return float((p > SPEECH_PROB).mean()) if p.size else 0.0


def load_speech_detector(path: str | Path | None = None) -> SpeechDetector:
    """A :class:`SpeechDetector` on the ONNX file ``path`` (default: :func:`silero_weights`); one-line errors."""
    weights = Path(path) if path is not None else silero_weights()
    if weights is None:
        raise FileNotFoundError("no Silero VAD model: install the silero-vad package (pip install silero-vad)")
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # the released graph carries unused initializers: no warnings about them
        session = ort.InferenceSession(str(weights), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a missing runtime or a damaged file becomes one line naming it
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"cannot load Silero VAD from {weights}: {type(e).__name__}: {reason}") from e
    return SpeechDetector(session, weights=weights)


@functools.lru_cache(maxsize=2)
def speech_detector(path: str | None = None, sha256: str | None = None) -> SpeechDetector:
    """:func:`load_speech_detector`, once per process and model content (``sha256`` is the cache key)."""
    return load_speech_detector(path)


def speech_model_sha256() -> str | None:
    """Content hash of the installed Silero VAD model (a version parameter of align), None without it."""
    path = silero_weights()
    return file_sha256(path) if path is not None else None
