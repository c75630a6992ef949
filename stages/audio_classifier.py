"""audio_classifier: train the synthetic-world audio classifier (a versioned stage).

Trains :class:`vta_core.metrics.synth_classifier.SynthAudioClassifier` on the ground-truth audio of a
``vta synth`` dataset so FD, FAD, IS and KL have synthetic-world values (``*_synth`` columns of
``vta_core.metrics.suite``). Examples are 0.5 s windows of the clips' own audio tracks (decoded at
16 kHz): one starting 0.05 s before each sounding event's onset, labelled with its class, and one
``none`` window per clip where no sound starts (pink background noise and tails only). Training crops
jitter the window start by up to ±0.03 s; evaluation uses the exact window. Train split -> training;
test split -> held-out accuracy. In a noisy world (``pairs.parquet``) the noisy pairs' audio does not
match their events, so they are left out (``filtered`` manifest rows): the scorer learns ground truth.

Artifact: ``model/`` (``model.safetensors`` + ``config.json``), ``metrics.json`` (train / held-out
accuracy, per-class held-out accuracy, confusion matrix), ``history.json`` (loss per step) and
``manifest.parquet`` (one row per clip: split, examples, or the failure).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from storage import Artifact, ArtifactStore, StageSpec
from storage.hashing import folder_identity
from vta_core.labels import read_labels
from vta_core.media import read_audio
from vta_core.metrics.synth_classifier import PRE_S, SAMPLE_RATE, WINDOW_S, SynthAudioClassifier
from vta_core.synth_metrics import read_events
from vta_core.synth_world import SOUNDING_CLASSES

log = logging.getLogger("vta.audio_classifier")

STAGE = "audio_classifier"
CODE_VERSION = "1"
CLASSES = (*SOUNDING_CLASSES, "none")
JITTER_S = 0.03  # WINDOW_S, PRE_S: the window the metrics apply the classifier to (vta_core.metrics.synth_classifier)
QUIET_S = 0.3  # a "none" window starts at least this long after an onset and holds none


def synth_folder(synth: Artifact | str | Path) -> tuple[Path, str]:
    """The local folder of a synth artifact or ``vta synth`` folder, and its identity for the version."""
    if isinstance(synth, Artifact):
        if synth.stage != "synth":
            raise ValueError(f"{synth.ref} is not a synth artifact")
        return Path(synth.path), synth.ref
    folder = Path(synth)
    for name in ("labels.csv", "events.parquet"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"not a vta synth folder (no {name}): {folder}")
    extra = ["pairs.parquet"] if (folder / "pairs.parquet").is_file() else []
    return folder, folder_identity(folder, ["labels.csv", "events.parquet", *extra])


def clip_examples(audio: np.ndarray, events: list[tuple[float, str]], rng: np.random.Generator
                  ) -> list[tuple[int, str]]:
    """(start sample, class) of the windows of one 16 kHz clip (start = window start minus the jitter margin)."""
    n, win, margin = audio.size, round(WINDOW_S * SAMPLE_RATE), round(JITTER_S * SAMPLE_RATE)
    out = [(round((t - PRE_S) * SAMPLE_RATE) - margin, c) for t, c in events]
    onsets = np.array([t for t, _ in events])
    starts = [s for s in np.arange(0.0, n / SAMPLE_RATE - WINDOW_S - 2 * JITTER_S, 0.05)
              if not np.any((onsets > s - QUIET_S) & (onsets < s + WINDOW_S + 2 * JITTER_S))]
    if starts:
        out.append((round(float(rng.choice(starts)) * SAMPLE_RATE), "none"))
    return [(s, c) for s, c in out if 0 <= s and s + win + 2 * margin <= n]


def noisy_pairs(folder: Path) -> dict[str, str]:
    """clip id -> kind (shifted / swapped / offscreen) of a noisy world's noisy pairs; {} for a clean world."""
    path = folder / "pairs.parquet"
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    return {r["clip_id"]: r["pair"] for r in pq.read_table(path).to_pylist() if r["pair"] != "clean"}


def load_examples(folder: Path, *, seed: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[dict[str, Any]]]:
    """Windows (with jitter margins) and labels per split, and one manifest row per clip."""
    labels = read_labels(folder / "labels.csv")
    events = read_events(folder / "events.parquet")
    noisy = noisy_pairs(folder)
    rng = np.random.default_rng(seed)
    data: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    rows = []
    span = round((WINDOW_S + 2 * JITTER_S) * SAMPLE_RATE)
    for clip_id in sorted(labels):
        split = labels[clip_id].split
        row = {"clip_id": clip_id, "split": split, "status": "ok", "error_type": None, "error_message": None,
               "examples": 0}
        try:
            if split not in data:
                raise ValueError(f"split {split!r} is neither train nor test")
            if clip_id in noisy:
                row.update(status="filtered", error_message=f"noisy pair ({noisy[clip_id]}): audio does not match its events")
                rows.append(row)
                continue
            audio = read_audio(folder / "videos" / f"{clip_id}.mp4", sample_rate=SAMPLE_RATE)
            if audio.size < span:
                raise ValueError(f"audio too short ({audio.size / SAMPLE_RATE:.2f} s)")
            for start, cls in clip_examples(audio, events.get(clip_id, []), rng):
                data[split][0].append(audio[start : start + span])
                data[split][1].append(CLASSES.index(cls))
                row["examples"] += 1
        except Exception as e:  # noqa: BLE001 - one bad clip is a failed row, never a crashed batch
            row.update(status="failed", error_type=type(e).__name__, error_message=str(e).splitlines()[0] if str(e) else "")
        rows.append(row)
    out = {k: (np.stack(x).astype(np.float32), np.array(y)) for k, (x, y) in data.items() if x}
    if "train" not in out:
        raise ValueError(f"audio_classifier: no training windows in {folder}")
    return out, rows


def train_classifier(x: np.ndarray, y: np.ndarray, *, steps: int, lr: float, batch_size: int, seed: int,
                     channels: tuple[int, ...]) -> tuple[SynthAudioClassifier, list[float]]:
    """AdamW on random crops (start jitter ±JITTER_S) of the (N, span) windows ``x`` with labels ``y``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SynthAudioClassifier(classes=list(CLASSES), channels=channels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    win, margin = round(WINDOW_S * SAMPLE_RATE), round(JITTER_S * SAMPLE_RATE)
    history = []
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(x), size=batch_size)
        shift = rng.integers(0, 2 * margin + 1, size=batch_size)
        gain = rng.uniform(0.5, 1.5, size=(batch_size, 1)).astype(np.float32)
        batch = np.stack([x[i, s : s + win] for i, s in zip(idx, shift, strict=True)]) * gain
        loss = F.cross_entropy(model(torch.from_numpy(batch))["logits"], torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return model.eval(), history


@torch.no_grad()
def predict(model: SynthAudioClassifier, x: np.ndarray) -> np.ndarray:
    """Class index per (N, span) window, on the exact (centre) crop."""
    margin, win = round(JITTER_S * SAMPLE_RATE), round(WINDOW_S * SAMPLE_RATE)
    return model(torch.from_numpy(x[:, margin : margin + win]))["logits"].argmax(1).numpy()


def accuracy_report(model: SynthAudioClassifier, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pred = predict(model, x)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    per_class = {c: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None
                 for i, c in enumerate(CLASSES)}
    return {"accuracy": float((pred == y).mean()), "n": len(y), "per_class": per_class,
            "confusion": confusion.tolist(), "chance": float(np.bincount(y).max() / len(y))}


def audio_classifier_stage(store: ArtifactStore, *, synth: Artifact | str | Path, steps: int = 300,
                           lr: float = 3e-3, batch_size: int = 32, seed: int = 0,
                           channels: tuple[int, ...] = (16, 32, 64)) -> Artifact:
    """Train (or reuse) the synthetic-world classifier on ``synth``'s train clips; see the module docstring."""
    folder, identity = synth_folder(synth)
    params = {"steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed, "channels": list(channels),
              "window_s": WINDOW_S, "classes": list(CLASSES)}
    spec = StageSpec(STAGE, params, {"synth": identity}, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact", w.artifact.ref)
            return w.artifact
        data, rows = load_examples(folder, seed=seed)
        x, y = data["train"]
        log.info("audio_classifier: %d training windows, %d steps", len(x), steps)
        model, history = train_classifier(x, y, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                          channels=tuple(channels))
        metrics = {"train": accuracy_report(model, x, y),
                   "held_out": accuracy_report(model, *data["test"]) if "test" in data else None,
                   "classes": list(CLASSES), "note": "synthetic-world classifier: its FD/IS/KL are *_synth values"}
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            for f in sorted(Path(tmp).iterdir()):
                w.write_bytes(f"model/{f.name}", f.read_bytes())
        w.write_json("metrics.json", metrics)
        w.write_json("history.json", {"loss": history})
        held = metrics["held_out"]["accuracy"] if metrics["held_out"] else None
        return w.commit(rows=rows, extra={"train_accuracy": metrics["train"]["accuracy"], "held_out_accuracy": held})
