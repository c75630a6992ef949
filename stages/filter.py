"""filter: keep windows whose CLAP(label, audio) > clap_threshold, AV-Align > av_align_threshold and speech
share <= speech_threshold.

The paper's data clean (docs/algorithms.md#data-recipe): CLAP > 0.3 and AV-Align > 0.2, and no talking (App. E.3:
here a window whose Silero VAD speech share exceeds 0.5 is dropped, ``"speech 0.89 > 0.5"``; a threshold
>= 1 keeps every window). Reads only the align artifact's manifest. Every window gets a row: ``ok`` (kept), ``filtered`` with the reason as error_message
(``"av_align 0.12 <= 0.2"``, ``"clap 0.21 <= 0.3"``, ``"av_align undefined: no peaks in audio or video"``,
several joined by ``"; "``), or ``failed`` when align could not score it. When the align artifact had no
CLAP model, the filter uses AV-Align alone, says so in the commit record (``"clap_used": false`` and the
reason) and logs a warning; windows without a label are judged on AV-Align alone too (counted in
``"judged_without_clap"``, column ``clap_checked``). Likewise an align artifact without speech scores
(``"speech_used": false``, warned). Nothing passes silently.

Output artifact ``filter/{version}/``: ``manifest.parquet`` and ``kept.parquet`` (key, shard,
source_clip_id, label, split, av_align, clap of the kept windows, for later stages).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from storage import Artifact, ArtifactStore, StageSpec, failed_row, filtered_row, ok_row
from storage.lineage import recorded_input

log = logging.getLogger("vta.filter")

STAGE = "filter"
CODE_VERSION = "2"  # 2: speech share
KEPT_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("source_clip_id", pa.string()), ("label", pa.string()),
    ("split", pa.string()), ("av_align", pa.float64()), ("clap", pa.float64()), ("speech", pa.float64()),
])  # fmt: skip


def filter_reasons(
    row: Mapping[str, Any], *, clap_used: bool, clap_threshold: float, av_align_threshold: float,
    speech_threshold: float = 1.0,
) -> list[str]:
    """Why an align manifest row is dropped (empty list = keep)."""
    reasons = []
    score = row.get("av_align")
    if score is None:
        reasons.append(f"av_align undefined: {row.get('av_align_reason') or 'no score'}")
    elif score <= av_align_threshold:
        reasons.append(f"av_align {score:.4g} <= {av_align_threshold:g}")
    clap = row.get("clap")
    if clap_used and clap is not None and clap <= clap_threshold:
        reasons.append(f"clap {clap:.4g} <= {clap_threshold:g}")
    speech = row.get("speech")
    if speech is not None and speech > speech_threshold:
        reasons.append(f"speech {speech:.2g} > {speech_threshold:g}")
    return reasons


def filter_stage(
    store: ArtifactStore,
    *,
    align: Artifact,
    clap_threshold: float = 0.3,
    av_align_threshold: float = 0.2,
    speech_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Filter the windows of an ``align`` artifact; reuses a committed identical version."""
    for name, value in (("clap_threshold", clap_threshold), ("av_align_threshold", av_align_threshold),
                        ("speech_threshold", speech_threshold)):
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    params = {"clap_threshold": float(clap_threshold), "av_align_threshold": float(av_align_threshold),
              "speech_threshold": float(speech_threshold)}
    spec = StageSpec(STAGE, params, {"align": align.version}, CODE_VERSION)
    with store.writer(spec) as w:
        if w.committed:
            log.info("%s: reused committed artifact (%s)", w.artifact.ref, w.artifact.counts)
            return w.artifact
        clap_info = align.record.get("clap") or {"available": False, "reason": f"{align.ref} records no CLAP model"}
        clap_used = bool(clap_info.get("available"))
        if not clap_used:
            log.warning("filter: CLAP unavailable in %s (%s): filtering on AV-Align alone",
                        align.ref, clap_info.get("reason"))  # fmt: skip
        speech_info = align.record.get("speech") or {"available": False, "reason": f"{align.ref} records no speech scores"}
        speech_used = bool(speech_info.get("available"))
        if not speech_used:
            log.warning("filter: no speech scores in %s (%s): speech is not checked", align.ref, speech_info.get("reason"))
        rows, kept = [], []
        without_clap = 0
        for r in align.read_table().to_pylist():
            keep = {k: r.get(k) for k in ("source_clip_id", "label", "split", "shard", "av_align", "clap", "speech")}
            if r["status"] != "ok":
                rows.append(failed_row(r["clip_id"], "align_failed", f"{r['error_type']}: {r['error_message']}", **keep))
                continue
            clap_checked = clap_used and r.get("clap") is not None
            without_clap += not clap_checked
            reasons = filter_reasons(r, clap_used=clap_used, clap_threshold=clap_threshold,
                                     av_align_threshold=av_align_threshold, speech_threshold=speech_threshold)  # fmt: skip
            if reasons:
                rows.append(filtered_row(r["clip_id"], "; ".join(reasons), **keep, clap_checked=clap_checked))
            else:
                rows.append(ok_row(r["clip_id"], **keep, clap_checked=clap_checked))
                kept.append({"key": r["clip_id"], **keep})
        if clap_used and without_clap:
            log.warning("filter: %d windows have no CLAP score (no label): judged on AV-Align alone", without_clap)
        w.write_table("kept.parquet", pa.Table.from_pylist(kept, schema=KEPT_SCHEMA))
        if progress:
            progress(len(rows), len(rows))
        extra = {
            "clap_used": clap_used,
            "reason": None if clap_used else clap_info.get("reason"),
            "judged_without_clap": without_clap,
            "speech_used": speech_used,
            "speech_reason": None if speech_used else speech_info.get("reason"),
            "n_kept": len(kept),
        }
        return w.commit(rows=rows, extra=extra)


def rerun(store: ArtifactStore, art: Artifact, *, out: ArtifactStore, **options: Any) -> Artifact:
    """Repeat the call that made ``art`` (inputs read from ``store``, written to ``out``)."""
    p = art.params
    return filter_stage(out, align=recorded_input(store, art, "align"), clap_threshold=p["clap_threshold"],
                        av_align_threshold=p["av_align_threshold"], speech_threshold=p.get("speech_threshold", 0.5))
