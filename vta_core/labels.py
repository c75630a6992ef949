"""Labels CSV in VGGSound layout: ``ytid,start_seconds,label,split`` (header optional).

A row without a split is an error naming the clip unless the reader is given a ``split_default``
(``--split-default`` on the CLI): an unlabelled held-out clip must never become training data by accident.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("ytid", "start_seconds", "label", "split")


@dataclass(frozen=True)
class Label:
    ytid: str
    start_seconds: float
    label: str
    split: str


def read_labels(path: str | Path, *, split_default: str | None = None) -> dict[str, Label]:
    """ytid -> Label. Raises ValueError naming the file and line for malformed rows, and for a row
    without a split (empty or missing 4th column) unless ``split_default`` names the split to give it."""
    if split_default is not None and not split_default.strip():
        raise ValueError(f"split_default must be a split name, got {split_default!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels CSV not found: {path}")
    out: dict[str, Label] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (lineno == 1 and tuple(c.strip().lower() for c in row[:4]) == COLUMNS):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: expected ytid,start_seconds,label[,split], got {row!r}")
            try:
                start = float(row[1])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: start_seconds {row[1]!r} is not a number") from None
            ytid = row[0].strip()
            split = (row[3].strip() if len(row) > 3 else "") or split_default
            if split is None:
                raise ValueError(f"{path}:{lineno}: clip {ytid} has no split (give one, or --split-default)")
            out[ytid] = Label(ytid, start, row[2].strip(), split.strip())
    return out


def sample_split(split: str | None, *, labelled: bool) -> str | None:
    """The split a decoded window trains or tests in: its labels row's split; ``"train"`` when the ingest had
    no labels CSV at all (every video is training data); None for a video missing from a given labels CSV —
    such a window is never training data (the shards stage lists it as filtered)."""
    if split:
        return split
    return None if labelled else "train"


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def clip_id_for(stem: str) -> str:
    """A clip id usable as a file name and WebDataset key: letters, digits, '_' and '-' only."""
    return _UNSAFE.sub("_", stem).strip("_") or "clip"
