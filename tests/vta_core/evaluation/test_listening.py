"""The listening test behind `vta listen`: blind, seeded order; a rating typed into the page in headless Chromium
lands in Parquet (the command itself: tests/cli/test_listen.py)."""

from __future__ import annotations

import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
from browser import chromium, media_states

from vta_core.evaluation.listening import (
    CRITERIA,
    ListenApp,
    Ratings,
    collect_items,
    make_server,
    parse_systems,
    summarize,
)
from vta_core.synth_world import generate_synth


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    """Two evaluation folders (clips/<id>/generated.mp4 + ground_truth.mp4), muxed synth clips as content."""
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=2, seed=3, duration_s=1.2, size=64)
    base = tmp_path_factory.mktemp("evals")
    for name in ("model_a", "model_b"):
        for video in sorted((syn / "videos").glob("*.mp4")):
            clip = base / name / "clips" / video.stem
            clip.mkdir(parents=True)
            shutil.copyfile(video, clip / "generated.mp4")
            shutil.copyfile(video, clip / "ground_truth.mp4")
    return {"model_a": base / "model_a", "model_b": base / "model_b"}


@pytest.fixture
def server(systems, tmp_path):
    items = collect_items(systems, ground_truth=True, seed=7)
    app = ListenApp(items, Ratings(tmp_path / "ratings.parquet"), seed=7)
    srv = make_server(app)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield app, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_rating_typed_in_chromium_lands_in_parquet(server):
    app, url = server
    with chromium() as browser:
        page, errors = browser.open(url + "/")
        page.fill("input[name=rater]", "ann")
        page.click("button[type=submit]")
        page.wait_for_selector("video#clip")
        shown = page.content()
        item_id = page.get_attribute("video#clip", "src").removeprefix("/media/").removesuffix(".mp4")
        video = media_states(page)["media"][0]
        assert video["error"] is None and video["ready"] >= 2 and video["width"] == 64, video
        for k, c in enumerate(CRITERIA):
            page.fill(f"input[name={c}]", str(10 + 20 * k))
        page.click("button[type=submit]")
        page.wait_for_selector("text=clip 2 of 6")
        assert errors == []
    # blind: neither the system nor the clip is on the page
    for word in ("model_a", "model_b", "ground_truth", app.items[item_id].clip_id):
        assert word not in shown
    rows = pq.read_table(app.ratings.path).to_pylist()
    assert len(rows) == 1
    assert rows[0] | {"created": None} == {
        "rater": "ann", "item_id": item_id, "system": app.items[item_id].system, "clip_id": app.items[item_id].clip_id,
        "audio_quality": 10, "semantic_alignment": 30, "temporal_alignment": 50, "overall_quality": 70,
        "position": 0, "seed": 7, "created": None}
    assert app.order("ann")[0].item_id == item_id  # the first clip of ann's own order


def _post(url: str, form: dict) -> tuple[int, str]:
    req = urllib.request.Request(url + "/rate", data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_bad_ratings_are_refused_with_the_value(server):
    app, url = server
    item = app.order("bob")[0].item_id
    good = {"rater": "bob", "item": item, **dict.fromkeys(CRITERIA, "50")}
    status, body = _post(url, {**good, "overall_quality": "101"})
    assert status == 400 and "overall_quality must be 1-100, got 101" in body
    status, body = _post(url, {**good, "item": "nope"})
    assert status == 400 and "unknown item &#x27;nope&#x27;" in body
    assert not app.ratings.path.exists()
    status, body = _post(url, good)  # the redirect is followed to bob's next clip
    assert status == 200 and "clip 2 of 6" in body and app.ratings.read().num_rows == 1


def test_order_is_seeded_per_rater_and_ids_are_opaque(systems, tmp_path):
    items = collect_items(systems, seed=0)
    app = ListenApp(items, Ratings(tmp_path / "r.parquet"), seed=0)
    assert [i.item_id for i in app.order("ann")] == [i.item_id for i in app.order("ann")]
    assert len({tuple(i.item_id for i in app.order(r)) for r in ("ann", "bob", "cy", "dee")}) > 1
    assert {i.system for i in items} == {"model_a", "model_b"} and len(items) == 4
    assert all(i.system not in i.item_id and i.clip_id not in i.item_id for i in items)
    with pytest.raises(ValueError, match="given twice"):
        parse_systems([str(systems["model_a"]), f"model_a={systems['model_b']}"])
    with pytest.raises(FileNotFoundError, match="no clips"):
        collect_items({"empty": tmp_path})


def test_summary_mean_and_std_per_system(tmp_path):
    ratings = Ratings(tmp_path / "r.parquet")
    rng = np.random.default_rng(0)
    scores = {"a": rng.integers(1, 101, size=(5, 4)), "b": rng.integers(1, 101, size=(3, 4))}
    for system, block in scores.items():
        ratings.append([{"rater": f"r{k}", "item_id": f"{system}{k}", "system": system, "clip_id": f"c{k}",
                         **dict(zip(CRITERIA, map(int, row), strict=True)), "position": k, "seed": 0, "created": "t"}
                        for k, row in enumerate(block)])
    out = {r["system"]: r for r in summarize(ratings.path)}
    for system, block in scores.items():
        assert out[system]["n"] == len(block)
        for j, c in enumerate(CRITERIA):
            assert out[system][f"{c}_mean"] == pytest.approx(block[:, j].mean())
            assert out[system][f"{c}_std"] == pytest.approx(block[:, j].std())
