"""VGGish frame embeddings for FAD (Fréchet Audio Distance, Kilgour et al. 2019), as audioldm_eval's
``FrechetAudioDistance(use_pca=False, use_activation=False)``.

Architecture and input features come from ``torchvggish`` (PyPI, Apache-2.0; the PyTorch port that
audioldm_eval and frechet_audio_distance load through torch.hub): ``waveform_to_examples`` resamples
to 16 kHz with resampy and cuts 0.96 s log-mel patches (96 x 64, Google's ``mel_features``); the network
gives one 128-d embedding per patch. No PCA / quantisation post-processing, and the final ReLU of the
embedding stack is dropped (``use_activation=False``). Every patch of every clip is one row of the
FAD statistics. Released weights: ``vggish-10086976.pth`` (a plain state dict), read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vta_core.metrics.weights import resolve_weights

SAMPLE_RATE = 16000
PATCH_S = 0.96


def build_vggish() -> nn.Module:
    """torchvggish's VGG without post-processing (weights not loaded)."""
    from torchvggish.torchvggish import VGG, make_layers

    return VGG(make_layers(), postprocess=False)


class VggishEmbedder:
    """VGGish weights -> (n_patches, 128) frame embeddings of a clip."""

    def __init__(self, model: nn.Module, *, device: str = "cpu", source: str = "") -> None:
        model.embeddings = nn.Sequential(*list(model.embeddings.children())[:-1])  # drop the last ReLU
        self.model = model.to(device).eval()
        self.device = device
        self.source = source

    @torch.no_grad()
    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono ``(N,)`` at ``sample_rate`` -> (n_patches, 128) float64; (0, 128) for audio under 0.96 s."""
        from torchvggish.vggish_input import waveform_to_examples

        y = np.asarray(audio, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"VGGish needs mono audio (N,), got shape {y.shape}")
        examples = waveform_to_examples(y, sample_rate, return_tensor=True)  # (n, 1, 96, 64)
        if examples.ndim != 4 or examples.shape[0] == 0:
            return np.zeros((0, 128))
        return self.model(examples.float().to(self.device)).double().cpu().numpy()


def load_vggish(weights: str | Path | None, *, device: str = "cpu") -> tuple[VggishEmbedder | None, str | None]:
    """(embedder, None) or (None, reason) for ``vggish-10086976.pth`` (path or ``hf:OWNER/REPO/FILE``)."""
    path, reason = resolve_weights(weights, what="VGGish")
    if path is None:
        return None, reason
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model = build_vggish()
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - unpickling / shape errors: one line for the report
        return None, f"VGGish weights {path} do not load: {type(e).__name__}: {str(e).splitlines()[0]}"
    return VggishEmbedder(model, device=device, source=str(path)), None
