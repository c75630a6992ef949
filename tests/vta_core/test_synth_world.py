"""The synthetic AV event dataset: layout, real MP4s, determinism, and events visible in both streams."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vta_core.synth_world import (
    CLASS_TABLE,
    LOOKALIKE,
    OVERLAP_GAP_S,
    SILENT_CLASSES,
    SOUNDING_CLASSES,
    SynthResult,
    generate_synth,
    render_event_sound,
    world_kwargs,
)

SEED = 3
N_CLIPS = 5
FLAC_ARGS = {"duration_s": 1.5, "fps": 10.0, "size": 64, "sample_rate": 16000, "audio_codec": "flac"}


@pytest.fixture(scope="module")
def aac_set(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate_synth(tmp_path_factory.mktemp("aac"), clips=N_CLIPS, seed=SEED)


@pytest.fixture(scope="module")
def flac_set(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate_synth(tmp_path_factory.mktemp("flac"), clips=2, seed=1, **FLAC_ARGS)


def _events(result: SynthResult) -> pa.Table:
    return pq.read_table(result.events_parquet)


def _clip_events(result: SynthResult, clip_id: str) -> list[dict]:
    return [row for row in _events(result).to_pylist() if row["clip_id"] == clip_id]


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames and (N,) float32 mono audio."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio.astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_layout_labels_and_events(aac_set: SynthResult) -> None:
    out = aac_set.out_dir
    ids = [f"synth{SEED}_{i:05d}" for i in range(N_CLIPS)]
    assert aac_set.n_clips == N_CLIPS
    assert aac_set.videos == [out / "videos" / f"{cid}.mp4" for cid in ids]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in aac_set.videos)

    with aac_set.labels_csv.open() as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ids  # no header row
    assert all(len(r) == 4 and r[1] == "0" for r in rows)
    assert sorted(r[3] for r in rows) == ["test"] + ["train"] * (N_CLIPS - 1)  # round(5 * 0.2) = 1

    table = _events(aac_set)
    assert table.schema == pa.schema(
        [("clip_id", pa.string()), ("onset_s", pa.float64()), ("offset_s", pa.float64()), ("class", pa.string()),
         ("sounding", pa.bool_()), ("x", pa.float64()), ("y", pa.float64())]
    )  # fmt: skip
    for cid, label_row in zip(ids, rows, strict=True):
        evs = _clip_events(aac_set, cid)
        sounding = [e for e in evs if e["sounding"]]
        silent = [e for e in evs if not e["sounding"]]
        assert 1 <= len(sounding) <= 4 and len(silent) <= 2
        assert {e["class"] for e in sounding} <= set(SOUNDING_CLASSES)
        assert {e["class"] for e in silent} <= set(SILENT_CLASSES)
        assert label_row[2] == sounding[0]["class"]  # label = the clip's first sounding event
        onsets = [e["onset_s"] for e in evs]
        assert onsets == sorted(onsets) and onsets[0] >= 0.15 and onsets[-1] <= 3.0 - 0.5 + 1e-9
        assert np.all(np.diff(onsets) >= 0.4 - 1e-9)
        assert all(0.19 <= e["offset_s"] - e["onset_s"] <= 0.51 for e in evs)
        assert all(0 < e["x"] < 128 and 0 < e["y"] < 128 for e in evs)

    meta = json.loads((out / "synth.json").read_text())
    classes = meta["classes"]
    assert (
        sum(c["sounding"] for c in classes.values()) >= 4
        and sum(not c["sounding"] for c in classes.values()) >= 1
    )
    assert set(classes) == set(SOUNDING_CLASSES) | set(SILENT_CLASSES) == set(CLASS_TABLE)
    assert len({(c["shape"], tuple(c["rgb"])) for c in classes.values()}) == len(classes)  # distinct looks
    assert meta["params"]["seed"] == SEED and meta["params"]["clips"] == N_CLIPS


@pytest.mark.parametrize(
    ("which", "codec", "fps", "size", "sample_rate", "duration_s"),
    [("aac_set", "aac", 25, 128, 22050, 3.0), ("flac_set", "flac", 10, 64, 16000, 1.5)],
)
def test_mp4s_are_real(
    request: pytest.FixtureRequest,
    which: str,
    codec: str,
    fps: int,
    size: int,
    sample_rate: int,
    duration_s: float,
) -> None:
    result: SynthResult = request.getfixturevalue(which)
    for path in result.videos:
        with av.open(str(path)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
            assert video.average_rate == fps and (video.width, video.height) == (size, size)
            assert audio.codec_context.name == codec
            assert audio.sample_rate == sample_rate and audio.channels == 1
            assert abs(container.duration / 1e6 - duration_s) <= 1 / fps
        frames, samples = _decode(path)
        assert frames.shape == (round(duration_s * fps), size, size, 3)
        # AAC decoders may return up to one frame (1024 samples) of trailing padding
        assert round(duration_s * sample_rate) <= len(samples) <= round(duration_s * sample_rate) + 1024


def test_same_seed_same_bytes_whatever_the_clip_count(aac_set: SynthResult, tmp_path: Path) -> None:
    again = generate_synth(tmp_path / "again", clips=2, seed=SEED)
    for a, b in zip(again.videos, aac_set.videos[:2], strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    first_two = {f"synth{SEED}_00000", f"synth{SEED}_00001"}
    assert _events(again).to_pylist() == [
        r for r in _events(aac_set).to_pylist() if r["clip_id"] in first_two
    ]


def test_different_seed_differs(aac_set: SynthResult, tmp_path: Path) -> None:
    other = generate_synth(tmp_path / "other", clips=2, seed=SEED + 1)
    assert other.videos[0].name == f"synth{SEED + 1}_00000.mp4"
    assert other.videos[0].read_bytes() != aac_set.videos[0].read_bytes()
    strip = [{k: v for k, v in r.items() if k != "clip_id"} for r in _events(other).to_pylist()]
    ours = [{k: v for k, v in r.items() if k != "clip_id"} for r in _events(aac_set).to_pylist()]
    assert strip != ours[: len(strip)]


def test_events_show_in_picture_and_only_sounding_ones_in_sound(aac_set: SynthResult) -> None:
    sr, fps, win = 22050, 25.0, round(0.05 * 22050)
    n_sounding = n_silent = 0
    for path in aac_set.videos:
        frames, audio = _decode(path)
        frames = frames.astype(np.float32)
        background = _rms(audio[round(0.02 * sr) : round(0.12 * sr)])  # before the earliest onset (0.15 s)
        noise_diff = float(np.median(np.abs(np.diff(frames, axis=0))))
        for ev in _clip_events(aac_set, path.stem):
            # picture: the object appears abruptly on the onset frame, in its class colour
            j, x, y = round(ev["onset_s"] * fps), round(ev["x"]), round(ev["y"])
            box = (slice(y - 8, y + 9), slice(x - 8, x + 9))
            assert np.abs(frames[j][box] - frames[j - 1][box]).mean() > max(30.0, 5 * noise_diff)
            centre = np.median(frames[j][y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3), axis=0)
            assert np.abs(centre - np.array(CLASS_TABLE[ev["class"]].rgb)).max() < 45
            # sound: energy rises right after sounding onsets only
            start = round(ev["onset_s"] * sr)
            after, before = _rms(audio[start : start + win]), _rms(audio[start - win : start])
            if ev["sounding"]:
                n_sounding += 1
                assert after > 3 * background and after > 2 * before, (path.stem, ev)
            else:
                n_silent += 1
                assert after < 1.5 * max(before, background), (path.stem, ev)
    assert n_sounding >= N_CLIPS and n_silent >= 1  # the seed gives decoys to check


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_event_sounds_are_spectrally_distinct(sample_rate: int) -> None:
    rng = np.random.default_rng(0)
    edges = np.geomspace(50, sample_rate / 2, 25)  # log-spaced band edges for a spectral template

    def features(wave: np.ndarray) -> tuple[float, np.ndarray]:
        power = np.abs(np.fft.rfft(wave)) ** 2
        freqs = np.fft.rfftfreq(len(wave), 1 / sample_rate)
        bands = np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in itertools.pairwise(edges)])
        return float((freqs * power).sum() / power.sum()), np.log(bands / bands.sum() + 1e-9)

    centroids: dict[str, list[float]] = {}
    templates: dict[str, list[np.ndarray]] = {}
    for cls in SOUNDING_CLASSES:
        for _ in range(6):
            wave = render_event_sound(cls, sample_rate=sample_rate, rng=rng)
            assert wave.dtype == np.float32 and wave.ndim == 1
            assert 0.2 <= len(wave) / sample_rate <= 0.5 and np.abs(wave).max() <= 1.0
            assert np.abs(wave[: round(0.005 * sample_rate)]).max() > 0.3  # sharp onset: loud within 5 ms
            centroid, bands = features(wave)
            centroids.setdefault(cls, []).append(centroid)
            templates.setdefault(cls, []).append(bands)
    # centroid ranges of different classes are far apart
    for a, b in itertools.combinations(SOUNDING_CLASSES, 2):
        gap = max(min(centroids[b]) - max(centroids[a]), min(centroids[a]) - max(centroids[b]))
        assert gap > 400, (a, b, centroids[a], centroids[b])
    # nearest template (mean of 3 renders) classifies the other 3 renders of every class
    means = {cls: np.mean(t[:3], axis=0) for cls, t in templates.items()}
    for cls, t in templates.items():
        for bands in t[3:]:
            assert min(means, key=lambda c: np.linalg.norm(means[c] - bands)) == cls


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"clips": 0}, "0"),
        ({"clips": 1, "audio_codec": "mp3"}, "mp3"),
        ({"clips": 1, "duration_s": 0.5}, "0.5"),
        ({"clips": 1, "size": 33}, "33"),
        ({"clips": 1, "sample_rate": 8000}, "8000"),
        ({"clips": 1, "test_fraction": 1.5}, "1.5"),
        ({"clips": 1, "test_fraction": 0.0}, "0.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, named: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=named):
        generate_synth(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("cls", [*SILENT_CLASSES, "trumpet"])
def test_no_sound_for_silent_or_unknown_class(cls: str) -> None:
    with pytest.raises(ValueError, match=cls):
        render_event_sound(cls, sample_rate=22050, rng=np.random.default_rng(0))


def test_a_test_fraction_of_one_makes_a_pure_test_set(tmp_path: Path) -> None:
    """What the evaluate and nightly deployments generate when given no test-set folder (flows/serve.TEST_SET)."""
    generate_synth(tmp_path / "t", clips=3, seed=5, duration_s=1.2, size=32, test_fraction=1.0)
    rows = list(csv.reader((tmp_path / "t" / "labels.csv").open()))
    assert [r[3] for r in rows] == ["test"] * 3
    assert json.loads((tmp_path / "t" / "synth.json").read_text())["splits"] == {"train": 0, "test": 3}


def test_a_noisy_world_changes_only_the_audio_of_noisy_train_clips(tmp_path: Path) -> None:
    kw = {"clips": 10, "seed": 4, **FLAC_ARGS}
    clean = generate_synth(tmp_path / "clean", **kw)
    noisy = generate_synth(tmp_path / "noisy", noisy_share=0.6, **kw)
    assert not (tmp_path / "clean" / "pairs.parquet").exists()  # the clean world's files are as before
    pairs = {r["clip_id"]: r for r in pq.read_table(tmp_path / "noisy" / "pairs.parquet").to_pylist()}
    assert {r["pair"] for r in pairs.values()} == {"clean", "shifted", "swapped", "offscreen"}  # seed 4's draw
    splits = {row[0]: row[3] for row in csv.reader(open(noisy.labels_csv))}
    assert open(clean.labels_csv).read() == open(noisy.labels_csv).read()
    assert pq.read_table(clean.events_parquet).equals(pq.read_table(noisy.events_parquet))
    meta = json.loads((tmp_path / "noisy" / "synth.json").read_text())
    assert meta["params"]["noisy_share"] == 0.6 and sum(meta["noisy_pairs"]["kinds"].values()) == 10
    sr = FLAC_ARGS["sample_rate"]
    for a, b in zip(clean.videos, noisy.videos, strict=True):
        p = pairs[a.stem]
        frames_a, audio_a = _decode(a)
        frames_b, audio_b = _decode(b)
        assert np.array_equal(frames_a, frames_b), a.stem  # the picture never changes
        if p["pair"] == "clean":
            assert a.read_bytes() == b.read_bytes(), a.stem
            continue
        assert splits[a.stem] == "train", a.stem  # test clips stay clean: exact ground truth
        if p["pair"] == "shifted":
            assert 0.3 <= abs(p["shift_s"]) <= 0.8
            assert np.array_equal(audio_b, np.roll(audio_a, round(p["shift_s"] * sr))), a.stem
        elif p["pair"] == "swapped":
            assert pairs[p["partner"]]["pair"] == "clean" and p["partner"] != a.stem
            assert np.array_equal(audio_b, _decode(tmp_path / "clean" / "videos" / f"{p['partner']}.mp4")[1])
        else:  # offscreen: the clip's own sound plus one more event from the onset on, nothing before it
            start = round(p["offscreen_onset_s"] * sr)
            assert p["offscreen_class"] in SOUNDING_CLASSES
            assert np.abs(audio_b[:start] - audio_a[:start]).max() <= 2 / 32768  # s16 rounding (this mix stays under the peak limit)
            assert _rms(audio_b[start : start + sr // 10] - audio_a[start : start + sr // 10]) > 0.05
    with pytest.raises(ValueError, match="1.5"):
        generate_synth(tmp_path / "bad", clips=2, noisy_share=1.5)


def test_boxes_follow_the_picture(aac_set: SynthResult) -> None:
    """boxes.parquet: every object on every frame it shows (its class colour at the box centre, gone the frame
    after), and the grey ball on every frame."""
    boxes = pq.read_table(aac_set.out_dir / "boxes.parquet").to_pylist()
    assert {b["kind"] for b in boxes} == {"ball", "sounding", "silent"}
    fps = 25.0
    for path in aac_set.videos:
        frames, _ = _decode(path)
        frames = frames.astype(np.float32)
        mine = [b for b in boxes if b["clip_id"] == path.stem]
        assert sorted(b["frame"] for b in mine if b["kind"] == "ball") == list(range(len(frames)))
        objects = [b for b in mine if b["kind"] != "ball"]
        for ev in _clip_events(aac_set, path.stem):
            shown = sorted(b["frame"] for b in objects if b["class"] == ev["class"]
                           and abs((b["x0"] + b["x1"]) / 2 - ev["x"]) < 1e-6)
            assert shown and shown[0] == round(ev["onset_s"] * fps)
            assert shown == list(range(shown[0], shown[-1] + 1))  # one run of frames
            x, y, rgb = round(ev["x"]), round(ev["y"]), np.array(CLASS_TABLE[ev["class"]].rgb)

            def colour_at(j: int, x: int = x, y: int = y, frames: np.ndarray = frames) -> np.ndarray:
                return np.median(frames[j][y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3), axis=0)

            assert all(np.abs(colour_at(j) - rgb).max() < 45 for j in shown)
            if shown[-1] + 1 < len(frames) and not any(b["frame"] == shown[-1] + 1 for b in objects):
                assert np.abs(colour_at(shown[-1] + 1) - rgb).max() > 45  # gone the frame after
        for b in (b for b in mine if b["kind"] == "ball"):
            x, y = round((b["x0"] + b["x1"]) / 2), round((b["y0"] + b["y1"]) / 2)
            if any(o["frame"] == b["frame"] and o["x0"] - 3 <= x <= o["x1"] + 3 and o["y0"] - 3 <= y <= o["y1"] + 3
                   for o in objects):
                continue  # an object drawn over the ball
            grey = np.median(frames[b["frame"]][y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3), axis=0)
            assert np.all((grey > 110) & (grey < 190)) and np.ptp(grey) < 25, (path.stem, b)


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate_synth(tmp_path_factory.mktemp("hard"), clips=6, seed=SEED, size=64, audio_codec="flac",
                          lookalike=True, overlap=True, moving=True)


def test_a_harder_world_is_recorded_and_the_default_world_is_not(aac_set: SynthResult, hard_set: SynthResult) -> None:
    hard = json.loads((hard_set.out_dir / "synth.json").read_text())
    assert {k: hard["params"][k] for k in ("lookalike", "overlap", "moving")} == dict.fromkeys(
        ("lookalike", "overlap", "moving"), True)
    assert hard["world"]["lookalike"]["looks"]["whistle"] == "bell" and hard["world"]["overlap"]["min_gap_s"] == 0.12
    default = json.loads((aac_set.out_dir / "synth.json").read_text())
    assert "world" not in default and not {"lookalike", "overlap", "moving"} & set(default["params"])


def test_lookalike_classes_share_a_look_and_the_label_names_the_clip_class(hard_set: SynthResult) -> None:
    """Only the label says which sound a yellow circle makes: whistles are drawn as bells, every sounding
    event of a clip is of the labelled class."""
    labels = {r[0]: r[2] for r in csv.reader(hard_set.labels_csv.open())}
    boxes = pq.read_table(hard_set.out_dir / "boxes.parquet").to_pylist()
    seen = set()
    for path in hard_set.videos:
        sounding = [e for e in _clip_events(hard_set, path.stem) if e["sounding"]]
        assert {e["class"] for e in sounding} == {labels[path.stem]}
        frames, _ = _decode(path)
        for e in sounding:  # the drawn colour at the object's centre on its onset frame is its look's
            onset = round(e["onset_s"] * 25)
            box = next(b for b in boxes if b["clip_id"] == path.stem and b["frame"] == onset and b["class"] == e["class"]
                       and abs((b["x0"] + b["x1"]) / 2 - e["x"]) < 1e-6)
            x, y = round((box["x0"] + box["x1"]) / 2), round((box["y0"] + box["y1"]) / 2)
            rgb = np.median(frames[onset][y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(float), axis=0)
            look = np.array(CLASS_TABLE[LOOKALIKE.get(e["class"], e["class"])].rgb)
            if not any(b is not box and b["frame"] == onset and b["kind"] != "ball" and b["x0"] <= x <= b["x1"]
                       and b["y0"] <= y <= b["y1"] for b in boxes if b["clip_id"] == path.stem):
                assert np.abs(rgb - look).max() < 45, (path.stem, e["class"], rgb)
            seen.add(e["class"])
    assert {"whistle", "bell"} <= seen  # the look-alike pair occurs in this seeded world


def test_overlap_world_has_overlapping_sounds_on_the_frame_grid(hard_set: SynthResult) -> None:
    overlapping = 0
    for path in hard_set.videos:
        sounding = sorted((e for e in _clip_events(hard_set, path.stem) if e["sounding"]), key=lambda e: e["onset_s"])
        assert 3 <= len(sounding) <= 6
        onsets = sorted(e["onset_s"] for e in _clip_events(hard_set, path.stem))
        assert min(np.diff(onsets)) >= OVERLAP_GAP_S - 1e-9
        overlapping += sum(b["onset_s"] < a["offset_s"] for a, b in itertools.pairwise(sounding))
    assert overlapping >= 3  # sounds that start before the previous one ends


def test_moving_objects_are_drawn_where_their_boxes_say(hard_set: SynthResult) -> None:
    boxes = pq.read_table(hard_set.out_dir / "boxes.parquet").to_pylist()
    moved = 0
    for path in hard_set.videos:
        frames, _ = _decode(path)
        mine = [b for b in boxes if b["clip_id"] == path.stem and b["kind"] != "ball"]
        for e in _clip_events(hard_set, path.stem):
            onset = round(e["onset_s"] * 25)
            first = next(b for b in mine if b["frame"] == onset and b["class"] == e["class"]
                         and abs((b["x0"] + b["x1"]) / 2 - e["x"]) < 1e-6)
            half = (first["x1"] - first["x0"]) / 2  # (unclipped: objects stay inside the frame)
            track = [first]  # follow the box frame by frame: the nearest box of the class on the next frame
            while nxt := [b for b in mine if b["frame"] == track[-1]["frame"] + 1 and b["class"] == e["class"]
                          and abs(b["x0"] - track[-1]["x0"]) < 2 and abs(b["y0"] - track[-1]["y0"]) < 2]:
                track.append(nxt[0])
            if len(track) >= 3:
                moved += abs(track[-1]["x0"] - track[0]["x0"]) + abs(track[-1]["y0"] - track[0]["y0"]) > 1
            look = np.array(CLASS_TABLE[LOOKALIKE.get(e["class"], e["class"])].rgb)
            for b in track:
                x, y = round(b["x0"] + half), round(b["y0"] + half)
                if any(o is not b and o["frame"] == b["frame"] and o["x0"] - 2 <= x <= o["x1"] + 2
                       and o["y0"] - 2 <= y <= o["y1"] + 2 for o in mine):
                    continue  # another object drawn over this one's centre
                rgb = np.median(frames[b["frame"]][y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(float), axis=0)
                assert np.abs(rgb - look).max() < 45, (path.stem, e["class"], b["frame"], rgb)
    assert moved >= 5  # objects visibly move across the frames they show on


def test_world_options_become_keywords_and_unknown_ones_are_named() -> None:
    assert world_kwargs(["moving", "lookalike"]) == {"lookalike": True, "moving": True}
    assert world_kwargs(None) == {} == world_kwargs([])
    with pytest.raises(ValueError, match=r"unknown synthetic world option\(s\) \['crowded'\]"):
        world_kwargs(["crowded", "moving"])
