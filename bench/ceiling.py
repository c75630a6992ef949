"""The reconstruction ceiling: where ground truth loses onsets on its way through log-mel, VAE and vocoder.

For the held-out clips of a demo root (and optionally every clip of extra ``vta synth`` folders), the
clip's audio over the evaluation window (``min(clip, geometry.duration_s)`` s, as ``vta evaluate``) is
scored (onset tp / fp / fn, ±0.1 s) through each chain at each detector threshold:

* ``ground_truth``: the audio itself;
* ``vocoder``: log-mel -> vocoder (no VAE);
* ``vae:root``: the root's own VAE artifact (posterior mean) -> vocoder (= the ``reconstruction`` track,
  via ``vta_core.evaluation.scoring.reconstruct``);
* ``vae:<loss>@<steps>``: VAEs trained here from scratch with ``stages/vae.py``'s recipe on the root's
  decoded train windows, snapshotted at each budget of ``--budgets`` (the LR is constant, so the
  snapshot at step s IS a run of s steps, up to the final scale fit, which reconstruction does not use),
  for each loss of ``--losses`` (``l1``: the current loss; ``delta``: + ``--delta-weight`` x L1 of the
  mel's frame-to-frame differences, ``vta_core.vae.train_vae(delta_weight=...)``).

Also: the detector's behaviour on wrong audio at each threshold (another clip's audio: derangement
i -> i+1; the clip's audio circularly shifted by 0.5 s), so a lower threshold can be judged honestly;
and the missed onsets of each VAE chain at the default threshold, by class, with the flux at the true
onset (max within ±0.1 s) against ground truth's and the level kept (peak of the gated mel energy
summed over bands, ±0.1 s): flux ratio << level ratio means smeared attacks, both low means lost level.

    python bench/ceiling.py [--root /tmp/demo1/root] [--budgets 300,1000] [--losses l1,delta]
        [--synth DIR ...] [--thresholds 8,10,15] [--save-vaes DIR] [--vaes DIR ...]
                                                             -> bench/results/ceiling.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from stages.vae import open_vae, training_mels
from storage import ArtifactStore
from storage.lineage import kept_keys
from vta_core.audio import log_mel
from vta_core.evaluation.scoring import reconstruct, synth_clips
from vta_core.labels import read_labels
from vta_core.media import read_audio
from vta_core.presets import get_preset
from vta_core.synth_metrics import (
    ANALYSIS_SR,
    FLOOR_PERCENTILE,
    GATE_DB,
    _spectrogram,
    onset_f1,
    onset_strength,
    read_events,
)
from vta_core.vae import load_vae, save_vae, train_vae
from vta_core.vocoder import load_vocoder

RESULTS = Path(__file__).parent / "results"
TOLERANCE_S = 0.1
DEFAULT_THRESHOLD = 15.0


def clips_of(synth_dir: Path, *, split: str | None, seconds: float) -> list[dict[str, Any]]:
    """``[{"id", "audio" (N,), "onsets", "classes"}]``: a synth folder's clips (of ``split``; None = all)."""
    events = read_events(synth_dir / "events.parquet")
    if split is None:
        ids = sorted(read_labels(synth_dir / "labels.csv", split_default="train"))
        clips = [(cid, synth_dir / "videos" / f"{cid}.mp4") for cid in ids]
    else:
        clips = synth_clips(synth_dir, split=split)
    out = []
    for cid, video in clips:
        audio = read_audio(video, sample_rate=ANALYSIS_SR, duration_s=seconds)
        evs = [(o, c) for o, c in events.get(cid, []) if o < len(audio) / ANALYSIS_SR]
        out.append({"id": f"{synth_dir.name}/{cid}", "audio": audio, "onsets": [o for o, _ in evs],
                    "classes": [c for _, c in evs]})
    return out


def peaks(flux: np.ndarray, times: np.ndarray, threshold: float) -> np.ndarray:
    import scipy.signal

    distance = max(1, round(0.1 * ANALYSIS_SR / 256))  # synth_metrics.detect_onsets' min_gap_s 0.1
    found, _ = scipy.signal.find_peaks(flux, height=threshold, distance=distance)
    return times[found]


def gated_energy(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the noise-gated mel energy summed over bands (dB), as the detector gates it: ``(T,)``."""
    spec = _spectrogram(audio, ANALYSIS_SR)  # (B, T)
    floor = np.percentile(spec, FLOOR_PERCENTILE, axis=1, keepdims=True)
    gated = np.maximum(spec - floor - GATE_DB, 0.0).sum(axis=0)
    return gated, np.arange(gated.size) * 256 / ANALYSIS_SR


def around(values: np.ndarray, times: np.ndarray, at: float) -> float:
    window = (times >= at - TOLERANCE_S) & (times <= at + TOLERANCE_S)
    return float(values[window].max()) if window.any() else 0.0


def score(audios: list[np.ndarray], clips: list[dict[str, Any]], thresholds: list[float]) -> dict[str, dict[str, Any]]:
    """Pooled tp / fp / fn / precision / recall / F1 per threshold against the clips' true onsets."""
    out: dict[str, dict[str, Any]] = {}
    fluxes = [onset_strength(a, ANALYSIS_SR) for a in audios]
    for th in thresholds:
        tp = fp = fn = 0
        for (flux, times), clip in zip(fluxes, clips, strict=True):
            s = onset_f1(peaks(flux, times, th), clip["onsets"], tolerance_s=TOLERANCE_S)
            tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
        out[f"{th:g}"] = {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else None,
                          "recall": tp / (tp + fn) if tp + fn else None,
                          "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None}
    return out


def onset_details(audio: np.ndarray, truth_audio: np.ndarray, clip: dict[str, Any]) -> list[dict[str, Any]]:
    """Per true onset: class, detected at the default threshold, flux and level vs ground truth's."""
    flux, times = onset_strength(audio, ANALYSIS_SR)
    gt_flux, _ = onset_strength(truth_audio, ANALYSIS_SR)
    level, ltimes = gated_energy(audio)
    gt_level, _ = gated_energy(truth_audio)
    found = peaks(flux, times, DEFAULT_THRESHOLD)
    rows = []
    for k, (at, cls) in enumerate(zip(clip["onsets"], clip["classes"], strict=True)):
        rows.append({"clip": clip["id"], "onset_s": at, "class": cls,
                     "gap_s": at - clip["onsets"][k - 1] if k else None,
                     "detected": bool(np.any(np.abs(found - at) <= TOLERANCE_S + 1e-9)),
                     "flux": around(flux, times, at), "gt_flux": around(gt_flux, times, at),
                     "level": around(level, ltimes, at), "gt_level": around(gt_level, ltimes, at)})
    return rows


def summarise_misses(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_class: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = by_class.setdefault(r["class"], {"n": 0, "missed": 0, "flux_ratio": [], "level_ratio": []})
        b["n"] += 1
        b["missed"] += int(not r["detected"])
        b["flux_ratio"].append(r["flux"] / max(r["gt_flux"], 1e-9))
        b["level_ratio"].append(r["level"] / max(r["gt_level"], 1e-9))
    for b in by_class.values():
        b["flux_ratio"] = float(np.median(b["flux_ratio"]))
        b["level_ratio"] = float(np.median(b["level_ratio"]))
    after = [r for r in rows if r["gap_s"] is not None and r["gap_s"] < 0.6]
    return {"by_class": by_class,
            "after_event_lt_0.6s": {"n": len(after), "missed": sum(not r["detected"] for r in after)},
            "first_or_isolated": {"n": len(rows) - len(after),
                                  "missed": sum(not r["detected"] for r in rows) - sum(not r["detected"] for r in after)},
            "missed_flux": [round(r["flux"], 1) for r in rows if not r["detected"]],
            "detected_flux_min": min((r["flux"] for r in rows if r["detected"]), default=None)}


def train_snapshots(root: ArtifactStore, *, loss: str, budgets: list[int], delta_weight: float,
                    seed: int) -> dict[int, Any]:
    """VAEs trained with stages/vae.py's recipe (lr 2e-3, batch 8, 128-frame crops) at each step budget."""
    preset = get_preset("demo")
    decode, filt = root.latest("decode"), root.latest("filter")
    if decode is None:
        raise ValueError(f"no decode artifact under {root.root}: cannot train VAEs")
    mels = training_mels(decode, geometry=preset.geometry, keep=kept_keys(filt), max_clips=1000)
    vae = preset.build_vae(seed=seed)
    snaps: dict[int, Any] = {}
    t0 = time.time()

    def on_step(step: int) -> None:
        if step in budgets:
            snaps[step] = (copy.deepcopy(vae).eval(), time.time() - t0)
            print(f"  vae {loss}@{step}: {time.time() - t0:.0f} s", flush=True)

    train_vae(vae, mels, steps=max(budgets), lr=2e-3, batch_size=8, crop_frames=128, seed=seed,
              delta_weight=delta_weight if loss == "delta" else 0.0, on_step=on_step)
    return snaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/demo1/root"), help="a demo root (vta demo's)")
    ap.add_argument("--synth", type=Path, nargs="*", default=[], help="extra vta synth folders: all their clips")
    ap.add_argument("--budgets", default="300,1000", help="VAE step budgets to train ('' = none)")
    ap.add_argument("--losses", default="l1,delta", help="VAE losses to train: l1, delta")
    ap.add_argument("--delta-weight", type=float, default=1.0)
    ap.add_argument("--thresholds", default="8,10,15")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-vaes", type=Path, default=None, help="write each trained VAE here (diffusers layout)")
    ap.add_argument("--vaes", type=Path, nargs="*", default=[], help="extra VAE folders to score (vae:<folder name>)")
    ap.add_argument("--out", type=Path, default=RESULTS / "ceiling.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    budgets = sorted(int(b) for b in args.budgets.split(",") if b)
    losses = [x for x in args.losses.split(",") if x]
    if bad := set(losses) - {"l1", "delta"}:
        raise SystemExit(f"unknown --losses {sorted(bad)}; choose l1, delta")
    preset = get_preset("demo")
    g = preset.geometry
    store = ArtifactStore(str(args.root))
    synth = store.latest("synth")
    if synth is None:
        raise SystemExit(f"no synth artifact under {args.root}")
    clips = clips_of(Path(synth.path), split="test", seconds=g.duration_s)
    for folder in args.synth:
        clips += clips_of(folder, split=None, seconds=g.duration_s)
    print(f"{len(clips)} clips, {sum(len(c['onsets']) for c in clips)} onsets", flush=True)
    vocoder = load_vocoder(None, geometry=g)
    truth = [c["audio"] for c in clips]

    def through(vae: Any) -> list[np.ndarray]:
        with torch.no_grad():
            return [reconstruct(SimpleNamespace(geometry=g, vae=vae, vocoder=vocoder), a) for a in truth]

    chains: dict[str, list[np.ndarray]] = {"ground_truth": truth}
    with torch.no_grad():
        chains["vocoder"] = [vocoder(log_mel(torch.from_numpy(np.pad(a, (0, g.n_fft))), g)[None])[0].numpy()[: len(a)]
                             for a in truth]
    timings: dict[str, float] = {}
    vae_art = store.latest("vae")
    if vae_art is not None:
        chains["vae:root"] = through(open_vae(vae_art))
        timings["vae:root_train_s"] = vae_art.record.get("elapsed_s")
    for loss in losses if budgets else []:
        for steps, (vae, secs) in sorted(train_snapshots(store, loss=loss, budgets=budgets,
                                                          delta_weight=args.delta_weight, seed=args.seed).items()):
            chains[f"vae:{loss}@{steps}"] = through(vae)
            timings[f"vae:{loss}@{steps}_train_s"] = round(secs, 1)
            if args.save_vaes is not None:
                save_vae(vae, args.save_vaes / f"{loss}@{steps}")
    for folder in args.vaes:
        chains[f"vae:{folder.name}"] = through(load_vae(folder))

    n = len(clips)
    wrong = {"other_clip": [truth[(i + 1) % n] for i in range(n)],
             "shifted_0.5s": [np.roll(a, round(0.5 * ANALYSIS_SR)) for a in truth]}
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/ceiling.py", *sys.argv[1:]]), "cpu_count": os.cpu_count(),
        "root": str(args.root), "synth_folders": [str(s) for s in args.synth], "n_clips": n,
        "n_onsets": sum(len(c["onsets"]) for c in clips), "thresholds": thresholds, "tolerance_s": TOLERANCE_S,
        "chains": {name: score(audios, clips, thresholds) for name, audios in chains.items()},
        "wrong_audio": {name: score(audios, clips, thresholds) for name, audios in wrong.items()},
        "wrong_audio_through_root_vae": {}, "misses": {}, "timings_s": timings,
    }
    if "vae:root" in chains:  # wrong audio through the chain: the threshold must not make it score
        rec = chains["vae:root"]
        result["wrong_audio_through_root_vae"] = {
            "other_clip": score([rec[(i + 1) % n] for i in range(n)], clips, thresholds),
            "shifted_0.5s": score([np.roll(a, round(0.5 * ANALYSIS_SR)) for a in rec], clips, thresholds)}
    for name, audios in chains.items():
        if name.startswith("vae") or name == "vocoder":
            rows = [r for a, t, c in zip(audios, truth, clips, strict=True) for r in onset_details(a, t, c)]
            result["misses"][name] = summarise_misses(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'chain':<18}" + "".join(f"  F1@{t:<5g}  rec@{t:<4g}" for t in thresholds))
    for block, rows in (("", result["chains"]), ("wrong: ", result["wrong_audio"]),
                        ("wrong via root VAE: ", result["wrong_audio_through_root_vae"])):
        for name, per in rows.items():
            print(f"{block + name:<18}" + "".join(f"  {per[f'{t:g}']['f1']:7.3f}  {per[f'{t:g}']['recall']:7.3f}"
                                                   for t in thresholds))
    print(f"\nmisses at threshold {DEFAULT_THRESHOLD:g} (class: missed/n, median flux and level kept vs ground truth)")
    for name, m in result["misses"].items():
        parts = [f"{c}: {b['missed']}/{b['n']} flux x{b['flux_ratio']:.2f} level x{b['level_ratio']:.2f}"
                 for c, b in sorted(m["by_class"].items())]
        print(f"{name:<18} " + "; ".join(parts) + f"; after an event <0.6 s: {m['after_event_lt_0.6s']['missed']}/"
              f"{m['after_event_lt_0.6s']['n']}")
    print(f"timings: {timings}\nwrote {args.out}")


if __name__ == "__main__":
    main()
