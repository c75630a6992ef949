"""CLAP text-audio score (LAION-CLAP, HTSAT audio encoder): cosine of audio and text embeddings.

Loading follows laion_clap's own path - ``laion_clap.CLAP_Module(enable_fusion=False, amodel=...)`` then
the checkpoint - with one change: ``CLAP_Module.load_ckpt`` reads with ``torch.load(weights_only=False)``;
:func:`read_clap_checkpoint` reads the same released format (``630k-audioset-best.pt``: a dict with
``"state_dict"``, keys prefixed ``module.``, plus ``text_branch.embeddings.position_ids``) with
``weights_only=True`` and applies load_ckpt's key handling, then loads strictly.

Offline trap: importing laion_clap loads the ``bert-base-uncased``, ``roberta-base`` and
``facebook/bart-base`` tokenizers, and ``CLAP_Module`` loads the ``roberta-base`` model, all through the
Hugging Face hub. Offline (``HF_HUB_OFFLINE=1``) they must already be in the HF cache; :class:`ClapScorer`
checks that first and fails with one line instead of a hub error (online, laion_clap downloads them).

Audio is resampled to 48 kHz (librosa soxr_hq, as laion_clap's ``librosa.load(sr=48000)``), quantised
to int16 and back as laion_clap does, and cut to the first 10 s (480,000 samples) so the score is
deterministic (laion_clap would crop longer audio at a random offset); shorter audio is repeat-padded by
laion_clap.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vta_core.librosa_import import import_librosa, librosa

log = logging.getLogger("vta.clap")

SAMPLE_RATE = 48000
MAX_SAMPLES = 480000  # HTSAT's 10 s input (audio_cfg.clip_samples)
HF_REPOS = ("roberta-base", "bert-base-uncased", "facebook/bart-base")  # loaded while laion_clap imports / builds
POSITION_IDS = "text_branch.embeddings.position_ids"  # in released checkpoints, not a parameter of new models


class ClapUnavailable(RuntimeError):
    """laion_clap cannot be built here (missing hub files offline, or the package fails to import)."""


def missing_hf_repos() -> list[str]:
    """Hub repos laion_clap needs that are not in the Hugging Face cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    missing = []
    for repo in HF_REPOS:
        try:
            snapshot_download(repo, local_files_only=True)
        except LocalEntryNotFoundError:
            missing.append(repo)
    return missing


def read_clap_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A LAION-CLAP checkpoint as released -> state dict for ``CLAP_Module.model`` (weights_only read)."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types; name the file, one line
        raise ValueError(f"cannot read CLAP checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"CLAP checkpoint {path} holds no state dict")
    if next(iter(state)).startswith("module"):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    state.pop(POSITION_IDS, None)  # a non-persistent buffer in transformers >= 4.31
    return state


class ClapScorer:
    """LAION-CLAP loaded from a local checkpoint; ``score`` gives audio-text cosines."""

    def __init__(self, checkpoint: str | Path, *, amodel: str = "HTSAT-tiny", device: str = "cpu") -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"CLAP checkpoint not found: {path}")
        from huggingface_hub import constants

        missing = missing_hf_repos()
        if missing and constants.HF_HUB_OFFLINE:
            raise ClapUnavailable(
                f"laion_clap needs {', '.join(missing)} in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                "and HF_HUB_OFFLINE is set; copy them there or unset HF_HUB_OFFLINE"
            )
        import_librosa()  # laion_clap uses librosa too: load its numba cache under our lock first
        try:
            import laion_clap
        except Exception as e:  # noqa: BLE001 - its import loads hub files: report any failure in one line
            raise ClapUnavailable(f"laion_clap failed to import: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        self.checkpoint = path
        try:
            self.module = laion_clap.CLAP_Module(enable_fusion=False, amodel=amodel, device=device)
        except Exception as e:  # noqa: BLE001 - it loads roberta-base from the hub: one line, not a traceback
            raise ClapUnavailable(f"laion_clap cannot build {amodel}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        state = read_clap_checkpoint(path)
        try:
            missing, unexpected = self.module.model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ValueError(f"CLAP checkpoint {path} does not fit laion_clap {amodel}: {str(e).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise ValueError(
                f"CLAP checkpoint {path} does not fit laion_clap {amodel} (fusion model?): {len(missing)} missing "
                f"keys, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]!r}"
            )
        self.module.eval()

    @torch.no_grad()
    def score(self, audio: np.ndarray, sample_rate: int, texts: list[str]) -> np.ndarray:
        """Cosine between the embedding of ``audio`` (mono (N,) at ``sample_rate``) and each text: (len(texts),)."""
        y = np.asarray(audio, dtype=np.float32)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"CLAP needs mono audio (N,) with N > 0, got shape {y.shape}")
        if not texts:
            raise ValueError("CLAP needs at least one text")
        if sample_rate != SAMPLE_RATE:
            y = librosa.resample(y, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
        a = self.module.get_audio_embedding_from_data(y[None, :MAX_SAMPLES], use_tensor=False)  # (1, D)
        t = self.module.get_text_embedding(list(texts), use_tensor=False)  # (K, D)
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        t = t / np.linalg.norm(t, axis=-1, keepdims=True)
        return (t @ a[0]).astype(np.float64)  # (K,)


def load_clap(checkpoint: str | Path | None, *, amodel: str = "HTSAT-tiny", device: str = "cpu") -> ClapScorer | None:
    """A scorer for ``checkpoint``; None when no checkpoint is configured."""
    if checkpoint is None or str(checkpoint) == "":
        return None
    return ClapScorer(checkpoint, amodel=amodel, device=device)
