"""CLAP score: cosine of LAION-CLAP (HTSAT) audio and label-text embeddings per clip, mean over clips
(docs/algorithms.md#clap-score). The model and audio handling are :mod:`vta_core.clap` (48 kHz, first 10 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vta_core.metrics.weights import resolve_weights


class ClapScore:
    """Per-clip CLAP(audio, label) with a loaded :class:`vta_core.clap.ClapScorer`."""

    def __init__(self, scorer) -> None:  # noqa: ANN001 - vta_core.clap.ClapScorer (imported lazily)
        self.scorer = scorer

    def __call__(self, audio: np.ndarray, sample_rate: int, label: str) -> float:
        if not label:
            raise ValueError("CLAP score needs the clip's label text")
        return float(self.scorer.score(audio, sample_rate, [label])[0])


def load_clap_score(weights: str | Path | None, *, device: str = "cpu") -> tuple[ClapScore | None, str | None]:
    """(scorer, None) or (None, reason): missing checkpoint, laion_clap's hub files offline, a bad file."""
    path, reason = resolve_weights(weights, what="LAION-CLAP")
    if path is None:
        return None, reason
    from vta_core.clap import ClapScorer, ClapUnavailable

    try:
        return ClapScore(ClapScorer(path, device=device)), None
    except (ClapUnavailable, ValueError, FileNotFoundError) as e:
        return None, str(e).splitlines()[0]
