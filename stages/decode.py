"""decode: videos -> fixed-fps square frames + mono audio per clip window, in tar shards.

Input: a folder of videos (any container FFmpeg reads) and an optional VGGSound-layout labels CSV.
Output artifact ``decode/{version}/``:
  shard-NNNNN.tar     per window ``{key}.frames.npy`` uint8 (T, S, S, 3), ``{key}.audio.npy`` float32 (N,),
                      ``{key}.json``; tar members sorted, mtime 0 (byte-identical reruns)
  windows.parquet     one row per window (key, clip_id, window, start_s, valid frames/samples, shard)
  manifest.parquet    one row per input file, failures included
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from storage import Artifact, ArtifactStore, ArtifactWriter, StageSpec, failed_row, ok_row
from storage.manifest import table_to_bytes
from storage.sharded import Record, ShardJob, ShardMap, ShardTask, run_sharded
from storage.tar import npy_bytes, write_tar
from vta_core.geometry import ClipGeometry, frame_count, sample_count
from vta_core.labels import Label, clip_id_for, read_labels
from vta_core.media import MediaError, peak_dbfs, probe, read_audio, read_frames

log = logging.getLogger("vta.decode")

STAGE = "decode"
CODE_VERSION = "2"  # 2: source_path relative to the videos folder (was absolute)
# files never treated as media inputs (labels, metadata); anything else becomes a manifest row
NON_MEDIA = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".md", ".yaml", ".yml", ".lock"}


@dataclass(frozen=True)
class DecodeParams:
    """Result-relevant decode parameters (all of them enter the artifact version)."""

    fps: float
    size: int
    sample_rate: int
    duration_s: float  # window length
    window_hop_s: float | None = None  # None = duration_s (non-overlapping windows)
    max_windows: int | None = None  # None = every full window (a short video still gives one, padded)
    start_s: float = 0.0
    min_duration_s: float = 0.5  # shorter inputs fail as too_short
    require_audio: bool = True
    silence_dbfs: float = -60.0  # peak below this -> flagged silent (kept)
    shard_size: int = 32  # inputs per tar shard

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.size <= 0 or self.sample_rate <= 0 or self.duration_s <= 0:
            raise ValueError(f"decode needs positive fps/size/sample_rate/duration_s, got {self}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    @property
    def hop_s(self) -> float:
        return self.window_hop_s or self.duration_s

    @property
    def num_frames(self) -> int:
        return frame_count(self.duration_s, self.fps)

    @property
    def num_samples(self) -> int:
        return sample_count(self.duration_s, self.sample_rate)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_geometry(cls, geometry: ClipGeometry, **options: Any) -> DecodeParams:
        """Windows of ``geometry`` (its fps, frame size, sample rate and duration); ``options``: the rest."""
        return cls(fps=geometry.fps, size=geometry.frame_size, sample_rate=geometry.sample_rate,
                   duration_s=geometry.duration_s, **options)

    @classmethod
    def recorded(cls, decode: Artifact) -> DecodeParams:
        """The parameters a decode artifact was made with (what downstream stages read its windows by)."""
        return cls(**decode.params)

    def check_geometry(self, geometry: ClipGeometry, *, what: str) -> None:
        """Raise if these windows do not have ``geometry``'s sample rate and duration (``what``: the decode ref)."""
        if self.sample_rate != geometry.sample_rate or abs(self.duration_s - geometry.duration_s) > 1e-6:
            raise ValueError(
                f"{what} was decoded at {self.sample_rate} Hz / {self.duration_s} s windows; "
                f"geometry needs {geometry.sample_rate} Hz / {geometry.duration_s} s"
            )


@dataclass
class Window:
    key: str
    index: int
    start_s: float
    frames: np.ndarray  # (T, S, S, 3) uint8, zero-padded past n_frames
    audio: np.ndarray  # (N,) float32, zero-padded past n_samples
    n_frames: int  # valid (decoded) frames
    n_samples: int  # valid (decoded) samples


@dataclass
class DecodedClip:
    clip_id: str
    windows: list[Window]
    info: dict[str, Any] = field(default_factory=dict)  # manifest columns


# --- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInput:
    clip_id: str
    path: Path
    label: Label | None
    rel: str = ""  # path under the videos folder (posix): what artifacts record, so bytes do not depend on where it is


def list_inputs(videos_dir: str | Path, labels: dict[str, Label] | None = None) -> list[VideoInput]:
    """Every file under ``videos_dir`` (sorted, recursive) except known metadata files."""
    root = Path(videos_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"videos directory not found: {root}")
    paths = sorted(p for p in root.rglob("*") if not p.is_dir() and p.suffix.lower() not in NON_MEDIA)
    ids: dict[str, int] = {}
    for p in paths:
        cid = clip_id_for(p.stem)
        ids[cid] = ids.get(cid, 0) + 1
    items = []
    for p in paths:
        cid = clip_id_for(p.stem)
        if ids[cid] > 1:  # same stem in two places / containers: make ids unique and stable
            rel = p.relative_to(root).as_posix()
            cid = f"{cid}-{hashlib.sha1(rel.encode()).hexdigest()[:6]}"
        items.append(VideoInput(cid, p, _match_label(p.stem, labels or {}), rel=p.relative_to(root).as_posix()))
    return items


def _match_label(stem: str, labels: dict[str, Label]) -> Label | None:
    """VGGSound files are named ``{ytid}.mp4`` or ``{ytid}_{start:06d}.mp4`` (and variants)."""
    if stem in labels:
        return labels[stem]
    base, _, tail = stem.rpartition("_")
    if base and tail.isdigit() and base in labels:
        return labels[base]
    return None


def fingerprint(items: Sequence[VideoInput], labels_csv: str | Path | None) -> str:
    """Cheap content identity of the inputs: names, sizes and the first/last MiB of each file."""
    h = hashlib.sha256()
    for it in items:
        try:
            st = it.path.stat()
            if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block forever
                raise OSError(f"not a regular file (mode {st.st_mode:o})")
            size = st.st_size
            with open(it.path, "rb") as f:
                head = f.read(1 << 20)
                if size > 2 << 20:
                    f.seek(-(1 << 20), 2)
                    head += f.read()
        except OSError as e:
            size, head = -1, repr(e).encode()
        h.update(f"{it.clip_id}\0{size}\0".encode())
        h.update(hashlib.sha256(head).digest())
    if labels_csv is not None:
        h.update(Path(labels_csv).read_bytes())
    return h.hexdigest()[:16]


# --- one clip ----------------------------------------------------------------------------------
def decode_clip(path: str | Path, *, clip_id: str, params: DecodeParams, timeout_s: float = 300.0) -> DecodedClip:
    """Decode one file into windows; raises MediaError with a manifest error_type.

    ``timeout_s`` bounds the whole item (probe + both FFmpeg passes): past it, the FFmpeg process
    is killed and the item fails as ``timeout``. It is not a result parameter (not in the version).
    """
    deadline = time.monotonic() + timeout_s
    too_slow = f"{Path(path).name}: decoding exceeded the per-item limit of {timeout_s:g} s"

    def left() -> float:
        if (remaining := deadline - time.monotonic()) <= 0:
            raise MediaError("timeout", too_slow)
        return remaining

    try:
        return _decode_clip(path, clip_id=clip_id, params=params, left=left)
    except MediaError as e:
        if e.error_type == "timeout":  # FFmpeg killed at the deadline
            raise MediaError("timeout", too_slow) from None
        raise


def _decode_clip(path: str | Path, *, clip_id: str, params: DecodeParams, left: Callable[[], float]) -> DecodedClip:
    info = probe(path)
    if not info.has_video:
        raise MediaError("no_video_stream", f"{Path(path).name} has no video stream")
    if params.require_audio and not info.has_audio:
        raise MediaError("no_audio_stream", f"{Path(path).name} has no audio stream")
    available = info.duration_s - params.start_s
    if available < params.min_duration_s:
        raise MediaError(
            "too_short", f"{Path(path).name} has {max(available, 0):.3f} s after start {params.start_s} s "
            f"(< min_duration_s {params.min_duration_s})"
        )
    n_windows = 1
    if available >= params.duration_s:
        n_windows = 1 + math.floor((available - params.duration_s) / params.hop_s + 1e-6)
    if params.max_windows is not None:
        n_windows = min(n_windows, params.max_windows)
    span = min((n_windows - 1) * params.hop_s + params.duration_s, available)

    frames = read_frames(path, fps=params.fps, size=params.size, start_s=params.start_s, duration_s=span, timeout_s=left())
    if len(frames) == 0:
        raise MediaError("undecodable_video", f"{Path(path).name}: FFmpeg produced no video frames")
    if info.has_audio:
        audio = read_audio(path, sample_rate=params.sample_rate, start_s=params.start_s, duration_s=span, timeout_s=left())
    else:
        audio = np.zeros(0, np.float32)
    level = peak_dbfs(audio)

    windows = []
    for k in range(n_windows):
        f0, a0 = round(k * params.hop_s * params.fps), round(k * params.hop_s * params.sample_rate)
        w_frames = frames[f0 : f0 + params.num_frames]
        w_audio = audio[a0 : a0 + params.num_samples]
        padded_frames = np.zeros((params.num_frames, params.size, params.size, 3), np.uint8)
        padded_frames[: len(w_frames)] = w_frames
        padded_audio = np.zeros(params.num_samples, np.float32)
        padded_audio[: len(w_audio)] = w_audio
        windows.append(Window(
            key=f"{clip_id}-w{k:03d}", index=k, start_s=params.start_s + k * params.hop_s,
            frames=padded_frames, audio=padded_audio, n_frames=len(w_frames), n_samples=len(w_audio),
        ))
    expected_frames = span * params.fps
    info_row = {
        "duration_s": info.duration_s, "video_codec": info.video_codec, "video_fps": info.fps,
        "width": info.width, "height": info.height, "rotation": info.rotation,
        "audio_codec": info.audio_codec, "audio_sample_rate": info.audio_sample_rate,
        "audio_channels": info.audio_channels, "has_audio": info.has_audio,
        "silent": bool(info.has_audio and level < params.silence_dbfs),
        "peak_dbfs": level if math.isfinite(level) else None,
        "n_windows": n_windows, "frames_decoded": int(len(frames)), "frames_expected": expected_frames,
        "pad_s": round(max(0.0, params.duration_s - available), 6) if n_windows == 1 else 0.0,
        "trim_s": round(max(0.0, available - span), 6),
    }
    return DecodedClip(clip_id, windows, info_row)


# --- the stage ---------------------------------------------------------------------------------
def decode_stage(
    store: ArtifactStore,
    *,
    videos_dir: str | Path,
    labels_csv: str | Path | None = None,
    params: DecodeParams,
    workers: int = 2,
    timeout_s: float = 300.0,  # per input item (not part of the version)
    progress: Callable[[int, int], None] | None = None,
    lineage: dict[str, str] | None = None,
    split_default: str | None = None,
    shard_map: ShardMap | None = None,
) -> Artifact:
    """Decode every input under ``videos_dir`` into a committed ``decode`` artifact (resumable, one task
    per shard of ``params.shard_size`` inputs; ``shard_map``: where the shards run, default here).

    ``progress(done, total)`` is called as shards finish; ``lineage`` records where the inputs
    came from (e.g. ``{"synth": "synth@abc"}``) in the version and the commit record.
    ``split_default``: the split of labels rows without one (None: such a row is an error naming the clip).
    """
    labels = read_labels(labels_csv, split_default=split_default) if labels_csv is not None else {}
    items = list_inputs(videos_dir, labels)
    inputs = {"videos": fingerprint(items, labels_csv), **({"split_default": split_default} if split_default else {}),
              **(lineage or {})}
    spec = StageSpec(STAGE, params.as_dict(), inputs, CODE_VERSION)

    def plan() -> list[ShardJob]:  # inputs in sorted order, shard_size per shard
        return [ShardJob(store.root, spec, f"shard-{s:05d}", tuple(items[i : i + params.shard_size]))
                for s, i in enumerate(range(0, len(items), params.shard_size))]

    def finalize(w: ArtifactWriter, records: list[Record]) -> Artifact:
        windows = [win for rec in records for win in rec["windows"]]
        w.write_bytes("windows.parquet", _table_bytes(windows))
        return w.commit(rows=[r for rec in records for r in rec["rows"]],
                        extra={"n_windows": len(windows), "source": str(videos_dir),
                               "labels_csv": str(labels_csv) if labels_csv else None})

    task = DecodeShard(params=params, timeout_s=timeout_s, workers=workers)
    return run_sharded(store, spec=spec, plan=plan, task=task, finalize=finalize, shard_map=shard_map,
                       progress=progress)


@dataclass(frozen=True)
class DecodeShard(ShardTask):
    """One shard's input files, decoded ``workers`` at a time (FFmpeg runs in subprocesses); payload:
    the shard's :class:`VideoInput` s."""

    params: DecodeParams
    timeout_s: float = 300.0
    workers: int = 2

    def compute(self, job: ShardJob, loaded: Any, writer: ArtifactWriter) -> Record:
        items: Sequence[VideoInput] = job.payload
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            results = list(pool.map(lambda it: _decode_item(it, self.params, self.timeout_s), items))
        return _shard_payload(writer, job.shard, items, results)


def _decode_item(item: VideoInput, params: DecodeParams, timeout_s: float) -> DecodedClip | MediaError:
    try:
        return decode_clip(item.path, clip_id=item.clip_id, params=params, timeout_s=timeout_s)
    except MediaError as e:
        return e
    except Exception as e:  # noqa: BLE001 - one bad input is a failed row, never a crashed batch
        return MediaError("internal_error", f"{type(e).__name__}: {e}")


def _shard_payload(w: ArtifactWriter, name: str, items: Sequence[VideoInput],
                   results: Sequence[DecodedClip | MediaError]) -> Record:
    """Write one shard's tar; its marker record (rows, files, windows)."""
    members: list[tuple[str, bytes]] = []
    rows, windows = [], []
    for item, res in zip(items, results, strict=True):
        base = {
            "source_path": item.rel or str(item.path),  # relative to the record's "source" folder
            "label": item.label.label if item.label else None,
            "split": item.label.split if item.label else None,
        }
        if isinstance(res, MediaError):
            rows.append(failed_row(item.clip_id, res.error_type, str(res), **base))
            log.warning("%s: %s: %s", item.clip_id, res.error_type, res)
            continue
        rows.append(ok_row(item.clip_id, **base, **res.info, shard=name))
        for win in res.windows:
            meta = {
                "key": win.key, "clip_id": item.clip_id, "window": win.index, "start_s": win.start_s,
                "n_frames": win.n_frames, "n_samples": win.n_samples, **base,
            }
            members += [
                (f"{win.key}.frames.npy", npy_bytes(win.frames)),
                (f"{win.key}.audio.npy", npy_bytes(win.audio)),
                (f"{win.key}.json", json.dumps(meta, sort_keys=True).encode()),
            ]
            windows.append({**meta, "shard": name, "silent": res.info["silent"]})
    files = {}
    if members:
        files[f"{name}.tar"] = w.write_bytes(f"{name}.tar", write_tar(members))
    return {"rows": rows, "files": files, "windows": windows}


def _table_bytes(rows: list[dict[str, Any]]) -> bytes:
    cols = list(rows[0]) if rows else ["key", "clip_id", "window", "start_s", "n_frames", "n_samples", "shard"]
    return table_to_bytes(pa.table({c: [r.get(c) for r in rows] for c in cols}))


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    lineage = {k: v for k, v in art.record["inputs"].items() if k not in ("videos", "split_default")}
    return decode_stage(out, videos_dir=art.record["source"], labels_csv=art.record.get("labels_csv"),
                        params=DecodeParams.recorded(art), lineage=lineage or None,
                        split_default=art.record["inputs"].get("split_default"), shard_map=options.get("shard_map"))
