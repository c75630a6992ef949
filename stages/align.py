"""align: AV-Align, CLAP(label, audio) and speech share per decoded window, the scores the data filter needs.

AV-Align runs on the ORIGINAL source file over the window ``[start_s, start_s + duration_s)`` at its
native frame rate (``vta_core.av_align``: the metric is defined on native-rate frames, not on the decoded
low-rate frames). The source's audio is decoded once per file and shared by its windows; CLAP scores the
same window of that audio (resampled to 48 kHz) against the window's label, where a label exists; Silero VAD
(``vta_core.speech``, the ONNX model of the silero-vad package) gives the share of the window's 32 ms chunks
that are speech (paper App. E.3 filters talking).

Output artifact ``align/{version}/``:
  shard-NNNNN.tar   per window ``{key}.json``: the full AV-Align result (peak times included) and CLAP
  samples.parquet   index of ok windows (key, shard, av_align, clap, speech)
  manifest.parquet  one row per decoded window: av_align, av_align_reason, video_peaks, audio_peaks,
                    matches, fps, clap, clap_reason, speech, speech_reason (+ source clip, window, start,
                    label, split)
The commit record says whether CLAP and the speech detector were used: ``"clap"`` / ``"speech"``:
``{"available": bool, "reason": str | None}``.
Version params: the CLAP checkpoint's content hash (not its path) and audio model, the VAD model's hash.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from storage import Artifact, ArtifactStore, StageSpec, failed_row, ok_row
from storage.hashing import file_sha256
from storage.lineage import recorded_input
from storage.sharded import ShardJob, ShardMap
from storage.shardmap import Result, Sample, SampleMap, map_shards
from vta_core.av_align import AVAlignError, av_align_windows
from vta_core.clap import ClapScorer, load_clap
from vta_core.errors import ItemError
from vta_core.media import read_audio_native
from vta_core.speech import SpeechDetector, silero_weights, speech_detector, speech_model_sha256
from vta_core.threads import stage_threads

log = logging.getLogger("vta.align")

STAGE = "align"
CODE_VERSION = "2"  # 2: speech share (Silero VAD)
CLAP_AMODEL = "HTSAT-tiny"  # the audio tower of LAION's 630k(-audioset) non-fusion checkpoints
NO_CLAP = "no CLAP checkpoint configured"
NO_SPEECH = "no speech detector (install silero-vad and onnxruntime)"


def align_stage(
    store: ArtifactStore,
    *,
    source: Artifact,
    clap_checkpoint: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    shard_map: ShardMap | None = None,
    speech: bool = True,
) -> Artifact:
    """Score every window of the decode artifact ``source``; reuses a committed identical version.
    ``speech``: also score speech with the installed Silero VAD (False, or no silero-vad: null scores)."""
    if "duration_s" not in source.params:
        raise ValueError(f"{source.ref} has no duration_s parameter: align needs a decode artifact")
    duration_s = float(source.params["duration_s"])
    if clap_checkpoint is not None and not Path(clap_checkpoint).is_file():
        raise FileNotFoundError(f"CLAP checkpoint not found: {clap_checkpoint}")
    params = {
        "clap_checkpoint_sha256": file_sha256(clap_checkpoint) if clap_checkpoint is not None else None,
        "clap_amodel": CLAP_AMODEL if clap_checkpoint is not None else None,
        "speech_vad_sha256": speech_model_sha256() if speech else None,
    }
    spec = StageSpec(STAGE, params, {"decode": source.version}, CODE_VERSION)
    vad_sha = params["speech_vad_sha256"]
    extra = None
    if store.get(STAGE, spec.version) is None:  # say once, in the driver, whether CLAP and the VAD are used
        extra = {"clap": {"available": clap_checkpoint is not None, "reason": None if clap_checkpoint is not None else NO_CLAP},
                 "speech": {"available": vad_sha is not None,
                            "reason": None if vad_sha else ("not asked for" if not speech else NO_SPEECH)}}
        if clap_checkpoint is None:
            log.warning("align: %s; CLAP scores are null and the filter will use AV-Align alone", NO_CLAP)
        if speech and vad_sha is None:
            log.warning("align: %s; speech scores are null and the filter will not check speech", NO_SPEECH)
    task = AlignShard(clap_checkpoint=clap_checkpoint, clap_sha256=params["clap_checkpoint_sha256"], speech_sha256=vad_sha,
                      duration_s=duration_s, videos_dir=source.record.get("source"),
                      index_columns=("av_align", "clap", "speech"), row_shard="read")
    # a failed row names the shard it was read from (the manifest's convention for align)
    return map_shards(store, spec=spec, source=source, task=task, progress=progress, index_schema=_INDEX_SCHEMA,
                      extra=extra or {"clap": None, "speech": None}, shard_map=shard_map)


@functools.lru_cache(maxsize=2)
def _clap_scorer(checkpoint: str | Path | None, sha256: str | None) -> ClapScorer | None:
    """CLAP, loaded once per process and checkpoint content (only when a shard is computed)."""
    return load_clap(checkpoint, amodel=CLAP_AMODEL)


@dataclass(frozen=True, kw_only=True)
class AlignShard(SampleMap):
    """AV-Align (+ CLAP) for one shard's windows."""

    clap_checkpoint: str | Path | None
    clap_sha256: str | None  # the cache key with the path: a replaced checkpoint file is loaded again
    speech_sha256: str | None = None  # the installed Silero VAD model's hash; None = no speech scores
    duration_s: float
    videos_dir: str | None = None  # the decode record's "source": the windows' source_path are relative to it

    def process(self, job: ShardJob, samples: Sequence[Sample]) -> list[Result]:
        with stage_threads():  # bytes independent of the engine (vta_core/threads.py)
            scorer = _clap_scorer(self.clap_checkpoint, self.clap_sha256)
            vad = _speech_detector(self.speech_sha256) if self.speech_sha256 else None
            return align_samples(samples, duration_s=self.duration_s, scorer=scorer, videos_dir=self.videos_dir,
                                 speech=vad)


_INDEX_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("av_align", pa.float64()),
                          ("clap", pa.float64()), ("speech", pa.float64())])  # fmt: skip


def _speech_detector(sha256: str) -> SpeechDetector:
    """The installed Silero VAD, checked against the hash the version was planned with."""
    path = silero_weights()
    if path is None or file_sha256(path) != sha256:
        raise RuntimeError(f"the Silero VAD model changed since this align version was planned (sha256 {sha256[:12]}…)")
    return speech_detector(str(path), sha256)


def align_samples(samples: Sequence[Sample], *, duration_s: float, scorer: ClapScorer | None,
                  videos_dir: str | None = None, speech: SpeechDetector | None = None) -> list[Result]:
    """(manifest row, ``{"json": payload}`` or ``{}`` when failed) per decoded window; windows of one
    source file share one decode of it. Failures are rows (error_type from the metric), never exceptions.
    A window's ``source_path`` is read under ``videos_dir`` (an absolute one, as older decode artifacts
    recorded, is read as it is); the payload keeps it as recorded."""
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        by_source.setdefault(str(s.meta.get("source_path")), []).append(s)
    out = []
    for source_path, group in by_source.items():
        base = [_base(s) for s in group]
        path = os.path.join(videos_dir, source_path) if videos_dir else source_path
        try:
            y, sr = read_audio_native(path)
            windows = [(float(s.meta["start_s"]), duration_s) for s in group]
            try:
                results: list[dict | Exception] = av_align_windows(path, windows, audio=y, audio_sr=sr)
            except AVAlignError:  # one bad window (e.g. past the last frame OpenCV decodes): retry one by one
                results = [_one_window(path, win, y, sr) for win in windows]
        except Exception as e:  # noqa: BLE001 - one bad source is failed rows, never a crashed shard
            results = [e] * len(group)
        for s, b, res in zip(group, base, results, strict=True):
            if isinstance(res, Exception):
                error_type, message = _error(res, path)
                log.warning("%s: %s: %s", s.key, error_type, message)
                out.append((failed_row(s.key, error_type, message, **b), {}))
                continue
            try:
                clap, clap_reason = _clap(scorer, s.meta.get("label"), y, sr, res["start_s"], duration_s)
            except Exception as e:  # noqa: BLE001 - a window CLAP cannot score is a failed row
                out.append((failed_row(s.key, "clap_error", f"{type(e).__name__}: {e}", **b), {}))
                continue
            try:
                share, speech_reason = _speech(speech, y, sr, res["start_s"], duration_s)
            except Exception as e:  # noqa: BLE001 - a window the VAD cannot score is a failed row
                out.append((failed_row(s.key, "speech_error", f"{type(e).__name__}: {e}", **b), {}))
                continue
            row = ok_row(
                s.key, **b, av_align=res["av_align"], av_align_reason=res["reason"], video_peaks=res["video_peaks"],
                audio_peaks=res["audio_peaks"], matches=res["matches"], fps=res["fps"], clap=clap, clap_reason=clap_reason,
                speech=share, speech_reason=speech_reason,
            )  # fmt: skip
            payload = {**res, "key": s.key, "source_path": source_path, "clap": clap, "clap_reason": clap_reason,
                       "speech": share, "speech_reason": speech_reason}
            out.append((row, {"json": json.dumps(payload, sort_keys=True).encode()}))
    return out


def _base(s: Sample) -> dict[str, Any]:
    return {"source_clip_id": s.meta.get("clip_id"), "window": s.meta.get("window"), "start_s": s.meta.get("start_s"),
            "label": s.meta.get("label"), "split": s.meta.get("split")}  # fmt: skip


def _one_window(source_path: str, window: tuple[float, float], y: np.ndarray, sr: int) -> dict | Exception:
    try:
        return av_align_windows(source_path, [window], audio=y, audio_sr=sr)[0]
    except Exception as e:  # noqa: BLE001 - becomes this window's failed row
        return e


def _error(e: Exception, source_path: str) -> tuple[str, str]:
    if isinstance(e, FileNotFoundError):
        return "source_missing", f"source file is gone: {source_path}"
    if isinstance(e, ItemError):  # AVAlignError, or MediaError from reading the audio
        return e.error_type, str(e)
    return "internal_error", f"{type(e).__name__}: {e}"


def _clap(
    scorer: ClapScorer | None, label: str | None, y: np.ndarray, sr: int, t0: float, duration_s: float
) -> tuple[float | None, str | None]:
    """CLAP(label, window audio), or None and why."""
    if scorer is None:
        return None, NO_CLAP
    if not label:
        return None, "no label"
    start = int(t0 * sr)
    window = y[start : start + int(duration_s * sr)]
    if window.size == 0:
        return None, "empty audio window"
    return float(scorer.score(window, sr, [label])[0]), None


def _speech(
    detector: SpeechDetector | None, y: np.ndarray, sr: int, t0: float, duration_s: float
) -> tuple[float | None, str | None]:
    """The window's speech share (0..1), or None and why."""
    if detector is None:
        return None, NO_SPEECH
    start = int(t0 * sr)
    window = y[start : start + int(duration_s * sr)]
    if window.size == 0:
        return None, "empty audio window"
    return detector.speech_share(window, sr), None


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, clap: str | Path | None = None,
          **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``); ``clap``: the
    CLAP checkpoint, needed when ``art`` used one (only its sha256 is recorded)."""
    sha = art.params.get("clap_checkpoint_sha256")
    if sha and clap is None:
        raise ValueError(f"{art.ref} used a CLAP checkpoint (sha256 {sha[:12]}…): pass --clap PATH")
    return align_stage(out, source=recorded_input(store, art, "decode"), clap_checkpoint=clap,
                       shard_map=options.get("shard_map"), speech=art.params.get("speech_vad_sha256") is not None)
