"""Labels CSV in VGGSound layout: ``ytid,start_seconds,label,split`` (header optional)."""

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


def read_labels(path: str | Path) -> dict[str, Label]:
    """ytid -> Label. Raises ValueError naming the file and line for malformed rows."""
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
            split = row[3].strip() if len(row) > 3 else "train"
            out[row[0].strip()] = Label(row[0].strip(), start, row[2].strip(), split)
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def clip_id_for(stem: str) -> str:
    """A clip id usable as a file name and WebDataset key: letters, digits, '_' and '-' only."""
    return _UNSAFE.sub("_", stem).strip("_") or "clip"
