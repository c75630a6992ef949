"""A local listening test (the paper's appendix B) over muxed clips of evaluation folders (``vta listen``).

Each evaluation folder (a ``vta evaluate`` report folder or an ``evaluation`` artifact: ``clips/<id>/
generated.mp4``) is one *system*; ``--ground-truth`` adds the clips' own videos as the system
``ground_truth``. Every rater gets all items in a seeded random order of their own; the page shows
"clip k of n" and plays the item from an opaque URL, so nothing reveals the system. A rating is four
integers 1–100 (audio quality, semantic alignment, temporal alignment, overall quality) appended to a
Parquet file (one row per rating; the file is rewritten through a temporary file + rename under a lock, so
a reader never sees half a file). ``vta listen --summary`` prints mean ± std per system;
:func:`rating_scores` gives each system's means with bootstrap intervals and paired differences to a baseline
system (the ablation table's subjective columns, stages/ablation.py).

The server is the standard library's ``http.server`` bound to 127.0.0.1 (no framework needed).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from vta_core.evaluation.intervals import percentile_bounds, resample_indices

CRITERIA = ("audio_quality", "semantic_alignment", "temporal_alignment", "overall_quality")
SCHEMA = pa.schema([("rater", pa.string()), ("item_id", pa.string()), ("system", pa.string()),
                    ("clip_id", pa.string()), *((c, pa.int16()) for c in CRITERIA), ("position", pa.int32()),
                    ("seed", pa.int64()), ("created", pa.string())])


@dataclass(frozen=True)
class Item:
    item_id: str  # opaque: what the page and its URLs show
    system: str
    clip_id: str
    path: Path


def collect_items(systems: dict[str, Path], *, ground_truth: bool = False, seed: int = 0) -> list[Item]:
    """One item per (system, clip) from ``{system: evaluation folder}``; ids are salted with ``seed``."""
    if not systems:
        raise ValueError("give at least one evaluation folder")
    found: dict[str, dict[str, Path]] = {}
    for name, folder in systems.items():
        clips = {p.parent.name: p for p in sorted(Path(folder).glob("clips/*/generated.mp4"))}
        if not clips:
            raise FileNotFoundError(f"no clips/<id>/generated.mp4 in evaluation folder {folder}")
        found[name] = clips
    if ground_truth:
        if "ground_truth" in found:
            raise ValueError("a system is already called 'ground_truth'; rename it (NAME=DIR)")
        first = Path(next(iter(systems.values())))
        found["ground_truth"] = {p.parent.name: p for p in sorted(first.glob("clips/*/ground_truth.mp4"))}
    items = []
    for system, clips in found.items():
        for clip_id, path in clips.items():
            digest = hashlib.sha256(f"{seed}\0{system}\0{clip_id}".encode()).hexdigest()[:16]
            items.append(Item(digest, system, clip_id, path))
    return items


def parse_systems(folders: Sequence[str]) -> dict[str, Path]:
    """``["DIR", "NAME=DIR"]`` -> ``{name: Path}`` (a bare DIR is named after its folder); names are unique."""
    out: dict[str, Path] = {}
    for spec in folders:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).resolve().name, spec
        if not Path(path).is_dir():
            raise FileNotFoundError(f"evaluation folder not found: {path}")
        if name in out:
            raise ValueError(f"system name {name!r} given twice; name them NAME=DIR")
        out[name] = Path(path)
    return out


class Ratings:
    """The ratings Parquet file: atomic appends (temp file + rename) under a file lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> pa.Table:
        return pq.read_table(self.path, schema=SCHEMA) if self.path.exists() else SCHEMA.empty_table()

    def append(self, rows: list[dict[str, Any]]) -> None:
        new = pa.Table.from_pylist(rows, schema=SCHEMA)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, FileLock(str(self.path) + ".lock"):
            table = pa.concat_tables([self.read(), new])
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp)
            os.replace(tmp, self.path)

    def rated(self, rater: str) -> set[str]:
        t = self.read()
        return {i for r, i in zip(t["rater"].to_pylist(), t["item_id"].to_pylist(), strict=True) if r == rater}


def parse_rating(form: dict[str, list[str]], items: dict[str, Item]) -> tuple[str, Item, dict[str, int]]:
    """``(rater, item, {criterion: 1..100})`` from a posted form, or ValueError naming the bad value."""
    rater = (form.get("rater") or [""])[0].strip()
    if not rater or len(rater) > 64:
        raise ValueError(f"rater name must be 1-64 characters, got {rater!r}")
    item_id = (form.get("item") or [""])[0]
    if item_id not in items:
        raise ValueError(f"unknown item {item_id!r}")
    scores = {}
    for c in CRITERIA:
        raw = (form.get(c) or [""])[0].strip()
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{c} must be an integer 1-100, got {raw!r}") from None
        if not 1 <= value <= 100:
            raise ValueError(f"{c} must be 1-100, got {value}")
        scores[c] = value
    return rater, items[item_id], scores


_STYLE = ("<link rel='icon' href='data:,'><style>body{font-family:sans-serif;max-width:44em;margin:2em auto}"
          "label{display:block;margin:.4em 0}input[type=number]{width:5em}</style>")
_LABELS = {"audio_quality": "Audio quality: how natural and clean the sound is",
           "semantic_alignment": "Semantic alignment: does the sound fit what is seen",
           "temporal_alignment": "Temporal alignment: do sounds happen when the visible events happen",
           "overall_quality": "Overall quality"}


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}"
            f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n").encode()


class ListenApp:
    """The listening test's state: items, each rater's order, the ratings file."""

    def __init__(self, items: list[Item], ratings: Ratings, *, seed: int = 0) -> None:
        if not items:
            raise ValueError("no items to rate")
        self.items = {i.item_id: i for i in items}
        self.ratings, self.seed = ratings, seed

    def order(self, rater: str) -> list[Item]:
        """This rater's seeded random order of every item (the same on every visit)."""
        items = sorted(self.items.values(), key=lambda i: i.item_id)
        random.Random(f"{self.seed}\0{rater}").shuffle(items)
        return items

    def next_page(self, rater: str | None) -> bytes:
        if not rater:
            return _page("Listening test", "<form method='get' action='/'><label>Your name or rater id "
                         "<input name='rater' required maxlength=64></label><button type='submit'>Start</button></form>")
        order, done = self.order(rater), self.ratings.rated(rater)
        todo = [(k, i) for k, i in enumerate(order) if i.item_id not in done]
        if not todo:
            return _page("Listening test", f"<p id='done'>All {len(order)} clips rated. Thank you!</p>")
        k, item = todo[0]
        fields = "".join(f"<label>{html.escape(_LABELS[c])} (1-100) <input type='number' name='{c}' min=1 max=100 "
                         f"step=1 required></label>" for c in CRITERIA)
        return _page("Listening test", f"<p>clip {k + 1} of {len(order)}</p>"
                     f"<video id='clip' controls width=384 preload='auto' src='/media/{item.item_id}.mp4'></video>"
                     f"<form method='post' action='/rate'><input type='hidden' name='rater' value='{html.escape(rater)}'>"
                     f"<input type='hidden' name='item' value='{item.item_id}'>{fields}"
                     "<button type='submit'>Save rating</button></form>")

    def rate(self, form: dict[str, list[str]]) -> str:
        """Store one posted rating; returns the rater (ValueError on bad input)."""
        rater, item, scores = parse_rating(form, self.items)
        position = next(k for k, i in enumerate(self.order(rater)) if i.item_id == item.item_id)
        self.ratings.append([{"rater": rater, "item_id": item.item_id, "system": item.system, "clip_id": item.clip_id,
                              **scores, "position": position, "seed": self.seed,
                              "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}])
        return rater


def make_server(app: ListenApp, *, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` (``port=0``: a free port; read it from ``server.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            pass

        def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            if url.path == "/":
                rater = (parse_qs(url.query).get("rater") or [""])[0].strip()[:64]
                return self._send(HTTPStatus.OK, app.next_page(rater or None))
            if url.path.startswith("/media/") and url.path.endswith(".mp4"):
                item = app.items.get(url.path[len("/media/"):-len(".mp4")])
                if item is not None:
                    return self._send(HTTPStatus.OK, item.path.read_bytes(), "video/mp4")
            self._send(HTTPStatus.NOT_FOUND, _page("Not found", f"<p>{html.escape(url.path)}</p>"))

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/rate":
                return self._send(HTTPStatus.NOT_FOUND, _page("Not found", ""))
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(min(length, 65536)).decode("utf-8", "replace"))
            try:
                rater = app.rate(form)
            except ValueError as e:
                return self._send(HTTPStatus.BAD_REQUEST, _page("Rating not saved", f"<p id='error'>{html.escape(str(e))}</p>"))
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", f"/?rater={quote(rater)}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return ThreadingHTTPServer((host, port), Handler)


def summarize(path: str | Path) -> list[dict[str, Any]]:
    """Per system: number of ratings and raters, and mean / std (population) of each criterion."""
    t = Ratings(path).read()
    if t.num_rows == 0:
        raise ValueError(f"no ratings in {path}")
    cols = t.to_pydict()
    out = []
    for system in sorted(set(cols["system"])):
        idx = [k for k, s in enumerate(cols["system"]) if s == system]
        row: dict[str, Any] = {"system": system, "n": len(idx), "raters": len({cols["rater"][k] for k in idx})}
        for c in CRITERIA:
            v = np.array([cols[c][k] for k in idx], dtype=float)
            row[f"{c}_mean"], row[f"{c}_std"] = float(v.mean()), float(v.std())
        out.append(row)
    return out


def rating_scores(table: pa.Table, *, baseline: str | None = None, resamples: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per system of a ratings table: ``n`` ratings, ``raters``, and per criterion the mean with a bootstrap
    ``level`` interval (ratings resampled with replacement); with ``baseline``, per other system the paired
    difference ``system − baseline`` over the (rater, clip) pairs both were rated on (a pair's ratings
    averaged), its interval from resampling those pairs: ``diff_<c>``, ``diff_<c>_lo`` / ``_hi``, ``n_paired``.
    A rater who is harsh on every system cancels out of the paired difference, not of the means."""
    cols = table.select(["rater", "system", "clip_id", *CRITERIA]).to_pydict()
    by_system: dict[str, dict[tuple[str, str], list[np.ndarray]]] = {}
    for k, system in enumerate(cols["system"]):
        scores = np.array([cols[c][k] for c in CRITERIA], dtype=np.float64)  # (4,)
        by_system.setdefault(system, {}).setdefault((cols["rater"][k], cols["clip_id"][k]), []).append(scores)
    out: dict[str, dict[str, Any]] = {}
    for i, (system, pairs) in enumerate(sorted(by_system.items())):
        values = np.stack([v for vs in pairs.values() for v in vs])  # (n, 4)
        boot = values[resample_indices(len(values), resamples=resamples, seed=seed + i)].mean(axis=1)  # (R, 4)
        row: dict[str, Any] = {"n": len(values), "raters": len({r for r, _ in pairs})}
        for j, c in enumerate(CRITERIA):
            lo, hi = percentile_bounds(boot[:, j], level) or (None, None)
            row.update({c: float(values[:, j].mean()), f"{c}_lo": lo, f"{c}_hi": hi})
        out[system] = row
    if baseline is None or baseline not in by_system:
        return out
    base = {key: np.mean(vs, axis=0) for key, vs in by_system[baseline].items()}
    for system, pairs in sorted(by_system.items()):
        common = sorted(set(pairs) & set(base))
        if system == baseline or not common:
            continue
        d = np.stack([np.mean(pairs[key], axis=0) - base[key] for key in common])  # (pairs, 4)
        boot = d[resample_indices(len(d), resamples=resamples, seed=seed)].mean(axis=1)
        out[system]["n_paired"] = len(common)
        for j, c in enumerate(CRITERIA):
            lo, hi = percentile_bounds(boot[:, j], level) or (None, None)
            out[system].update({f"diff_{c}": float(d[:, j].mean()), f"diff_{c}_lo": lo, f"diff_{c}_hi": hi})
    return out
