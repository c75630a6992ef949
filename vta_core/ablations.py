"""The paper's ablation tables as data: each row is a named variant — overrides of the ingest and train
parameters — and the direction the paper reports for it against the table's baseline row.

A :class:`Variant` changes only what its row is about; every row of a table trains with the same budget
and seed(s) on the same synthetic world and is evaluated on the same test clips and noise
(``flows/ablate.py``), so a row's paired difference to the baseline (``vta_core.evaluation.intervals.paired``)
is the effect of that one change. ``paper``: the paper's own value for the row where this project has it
(VGGSound, so a value to read beside ours, not to compare with); ``expect``: metric -> +1 / -1, the
direction the paper's conclusion implies on the synthetic scores (text helps semantics -> event-class
accuracy; a position embedding, optical flow and concat augment help timing -> onset F1; the alignment
filter helps alignment -> AV-Align).

Encoders of Table 2 other than the weight-free pixel encoders (ImageBind, LanguageBind, CAVP, ViViT,
V-JEPA, CLIP) have no weights reachable offline here; the ``encoders`` table names them as unavailable (CLIP,
ViViT and V-JEPA 2 have loading paths: ``open_clip:...`` and ``transformers:vivit|vjepa2:FOLDER``; ImageBind,
LanguageBind and CAVP have none, each with the reason in ``unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRICS = ("onset_f1", "event_class_accuracy", "av_align")  # the scores with intervals (evaluation/intervals)
TEXT = "sentence_transformers:all-MiniLM-L6-v2"  # label text for every row of a table that has a text row


@dataclass(frozen=True)
class Variant:
    """One row: ``ingest`` (``flows.dag.IngestConfig`` fields) and ``train`` (``stages.train.train_stage``
    keywords) overrides; ``pretrain``: a first stage's mode (``video``/``audio``) taking half the steps before
    fine-tuning (the paper's pretraining rows)."""

    name: str
    ingest: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    pretrain: str | None = None
    expect: dict[str, int] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class AblationTable:
    name: str
    title: str
    baseline: str  # the row the others are paired with
    rows: tuple[Variant, ...]
    ingest: dict[str, Any] = field(default_factory=dict)  # overrides common to every row
    noisy_share: float = 0.0  # the synthetic world's share of noisy train pairs (vta_core/synth_world.py)
    world: str = "default synthetic world (vta_core/synth_world.py, no noisy pairs)"
    unavailable: dict[str, str] = field(default_factory=dict)  # row name -> why it cannot run here

    def row(self, name: str) -> Variant:
        return next(r for r in self.rows if r.name == name)


_NO_PE = {"position_embedding": False}
_PE = {"position_embedding": True}
_NO_AUG = {"augment_train_ratio": 0.0}
NOISY_SHARE = 0.3  # the data table's world: what web video is like, so the alignment filter has work to do

TABLES: dict[str, AblationTable] = {t.name: t for t in (
    AblationTable(
        name="aux", title="Table 3: auxiliary embeddings", baseline="vision",
        ingest={"text": TEXT},
        rows=(
            Variant("vision", train=_NO_PE),
            Variant("text", train={**_NO_PE, "text": True, "vision": False}, expect={"event_class_accuracy": +1},
                    note="label text only: semantics without timing"),
            Variant("vision + text", train={**_NO_PE, "text": True}, expect={"event_class_accuracy": +1},
                    paper={"fd": 21.13}),
            Variant("vision + PE", train=_PE, expect={"onset_f1": +1}),
            Variant("vision + text + PE", train={**_PE, "text": True},
                    expect={"onset_f1": +1, "event_class_accuracy": +1}),
            Variant("vision + optical flow", train={**_NO_PE, "flow": True}, expect={"onset_f1": +1}),
        ),
    ),
    AblationTable(
        name="augment", title="Table 4: data", baseline="none", noisy_share=NOISY_SHARE,
        world=f"noisy synthetic world: ~{NOISY_SHARE:.0%} of train clips have shifted, swapped or off-screen audio "
              "(vta_core/synth_world.py; test clips clean)",
        rows=(
            Variant("none", ingest={"filter": False, **_NO_AUG}),
            Variant("alignment filter", ingest={"filter": True, "av_align_threshold": 0.1, **_NO_AUG},
                    expect={"av_align": +1}, paper={"kl": 0.95, "av_align": 0.281},
                    note="AV-Align > 0.1 (synthetic clips score 0.04-0.26; the paper's 0.2 drops most)"),
            Variant("concat augment", ingest={"filter": False, "augment_train_ratio": 0.5}, expect={"onset_f1": +1}),
            Variant("pretrain-video", ingest={"filter": False, **_NO_AUG}, pretrain="video",
                    expect={"event_class_accuracy": +1}),
            Variant("pretrain-audio", ingest={"filter": False, **_NO_AUG}, pretrain="audio",
                    expect={"event_class_accuracy": +1}, paper={"is": 12.23}),
        ),
    ),
    AblationTable(
        name="conditioning", title="ours: how the frames reach the UNet", baseline="cross-attention only",
        rows=(
            Variant("cross-attention only", train={"aligned_channels": 0}, note="the paper's design"),
            Variant("+ time-aligned path", train={"aligned_delta": False}, expect={"onset_f1": +1}),
            Variant("+ time-aligned path + frame differences", train={"aligned_delta": True},
                    expect={"onset_f1": +1}),
        ),
    ),
    AblationTable(
        name="encoders", title="Table 2: vision encoders (weight-free pixel encoders only)", baseline="pixels:8",
        rows=(
            Variant("pixels:8", ingest={"vision": "pixels:8"}),
            Variant("pixels:4", ingest={"vision": "pixels:4"}, note="coarser frames"),
            Variant("pixels:16", ingest={"vision": "pixels:16"}, note="finer frames"),
        ),
        unavailable={
            **{name: f"no pretrained weights reachable offline here (loading path: {path})" for name, path in (
                ("CLIP ViT-L/14", "open_clip:ViT-L-14:openai"), ("ViViT", "transformers:vivit:FOLDER_OR_HUB_ID"),
                ("V-JEPA", "transformers:vjepa2:FOLDER_OR_HUB_ID"))},
            "ImageBind": "not built: its package (imagebind-unofficial) needs torchaudio, whose newest release pins "
                         "an older torch than ours, plus pytorchvideo and decord",
            "LanguageBind": "not built: its package (languagebind) pins transformers<5; ours is 5.x",
            "CAVP": "not built: no package and no transformers model (Diff-Foley's repository code only)"},
    ),
)}


def get_table(name: str) -> AblationTable:
    if name not in TABLES:
        raise ValueError(f"unknown ablation table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]


def direction(diff: dict[str, float | None], sign: int) -> str:
    """Does a paired difference (row − baseline, with its 95% interval) move the way the paper says?
    ``yes`` (the interval excludes 0 on the paper's side), ``no`` (it excludes 0 on the other side),
    ``unclear`` (the interval covers 0), ``n/a`` (undefined)."""
    d, lo, hi = diff.get("diff"), diff.get("lo"), diff.get("hi")
    if d is None or lo is None or hi is None:
        return "n/a"
    lo, hi = sign * lo, sign * hi
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return "yes"
    if hi < 0:
        return "no"
    return "unclear"
