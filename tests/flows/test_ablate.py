"""`vta ablate`: the paper's ablation tables as one command (tiny preset, small budget), rerun reuses all."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from procs import run_vta

from stages.ablation import listening_systems, row_values
from storage import ArtifactStore
from vta_core.ablations import TABLES, direction
from vta_core.evaluation.listening import CRITERIA, ListenApp, Ratings, collect_items

# the budget of the CI run: 20 steps per row, 8 synthetic clips (2 in the test split), 2 sampler steps
BUDGET = ["--preset", "tiny", "--steps", "20", "--clips", "8", "--eval-steps", "2", "--classifier-steps", "20"]


def _versions(root: Path) -> set[str]:
    return {f"{d.parent.name}@{d.name}" for d in root.glob("*/*") if d.is_dir()}


def _ablate(env, root: Path, table: str) -> dict:
    return json.loads(run_vta(["ablate", "--table", table, "--root", str(root), *BUDGET, "--json"], env).stdout)


def test_aux_and_augment_tables_have_every_row_and_a_rerun_recomputes_nothing(env, tmp_path):
    root = tmp_path / "root"
    aux = _ablate(env, root, "aux")
    assert not aux["reused"] and aux["ref"].startswith("ablation@") and not aux["failures"]
    rows = {r["row"]: r for r in aux["rows"]}
    assert list(rows) == [v.name for v in TABLES["aux"].rows]
    for name, r in rows.items():
        assert r["status"] == "ok" and r["n"] == 2, name  # 2 test clips x 1 seed
        for m in ("onset_f1", "event_class_accuracy", "av_align"):
            if r[m] is not None:
                assert r[f"{m}_lo"] <= r[m] <= r[f"{m}_hi"], (name, m)
        if name != "vision":  # paired with the baseline on the same clips
            assert r["diff_onset_f1"] is not None or r["onset_f1"] is None
    assert rows["vision + text"]["paper_fd"] == 21.13
    assert rows["text"]["ours_moves_event_class_accuracy"] in ("yes", "no", "unclear", "n/a")
    table = pq.read_table(Path(aux["path"]) / "table.parquet").to_pylist()
    assert [r["row"] for r in table] == list(rows)
    md = Path(aux["table_md"]).read_text()
    assert "Table 3" in md and "| vision (baseline) |" in md and "vision + optical flow" in md
    assert "<table id='ablation'>" in Path(aux["report_html"]).read_text()
    # the rows' checkpoints differ in exactly their change: text rows have text tokens, the text-only row no frames
    trains = {json.loads(c.read_text())["model"].get("vision_tokens", True): c
              for c in root.glob("train/*/checkpoint/config.json")}
    assert set(trains) == {True, False}

    augment = _ablate(env, root, "augment")
    rows = {r["row"]: r for r in augment["rows"]}
    assert list(rows) == [v.name for v in TABLES["augment"].rows] and not augment["failures"]
    assert all(r["status"] == "ok" for r in rows.values())
    filt = rows["alignment filter"]
    assert filt["paper_av_align"] == 0.281 and filt["ours_moves_av_align"] in ("yes", "no", "unclear")
    # the data table runs on a noisy world (its synth artifact records the pairs), the aux table on the clean one
    noisy = [d for d in root.glob("synth/*") if (d / "pairs.parquet").is_file()]
    assert len(noisy) == 1 and len(list(root.glob("synth/*/synth.json"))) == 2
    assert "noisy synthetic world" in Path(augment["table_md"]).read_text()
    assert "no noisy pairs" in md

    before = _versions(root)
    again = _ablate(env, root, "aux")
    assert again["reused"] and again["ref"] == aux["ref"]
    assert _versions(root) == before  # every ingest, train and evaluation artifact reused

    # listening ratings of the rows (what `vta listen --ablation REF` collects) -> a new ablation version only
    store = ArtifactStore(root)
    app = ListenApp(collect_items(listening_systems(store, store.resolve(aux["ref"])), seed=0),
                    Ratings(tmp_path / "ratings.parquet"), seed=0)
    for item in app.order("ann"):
        app.rate({"rater": ["ann"], "item": [item.item_id], **{c: ["60" if item.system == "text" else "40"]
                                                               for c in CRITERIA}})
    rated = json.loads(run_vta(["ablate", "--table", "aux", "--root", str(root), *BUDGET, "--json",
                                "--ratings", str(app.ratings.path)], env).stdout)
    assert not rated["reused"] and _versions(root) - before == {rated["ref"]}
    rows = {r["row"]: r for r in rated["rows"]}
    assert rows["text"]["listen_diff_overall_quality"] == pytest.approx(20.0) and rows["vision"]["listen_n"] == 2
    assert "listen: overall" in Path(rated["table_md"]).read_text()


def test_a_paired_difference_and_its_verdict():
    base = [{"pair": f"0/c{i}", "tp": 1, "fp": 1, "fn": 1, "class_correct": 0, "class_total": 1, "av_align": 0.1}
            for i in range(6)]
    better = [{**s, "tp": 2, "fn": 0, "class_correct": 1} for s in base]
    v = row_values(better, base)
    assert v["onset_f1"] == pytest.approx(0.8) and v["diff_onset_f1"] == pytest.approx(0.8 - 0.5)
    assert v["diff_event_class_accuracy"] == pytest.approx(1.0) and v["diff_av_align"] == pytest.approx(0.0)
    assert direction({"diff": 0.3, "lo": 0.3, "hi": 0.3}, +1) == "yes"
    assert direction({"diff": 0.3, "lo": 0.3, "hi": 0.3}, -1) == "no"
    assert direction({"diff": 0.0, "lo": -0.1, "hi": 0.2}, +1) == "unclear"
    assert direction({"diff": None, "lo": None, "hi": None}, +1) == "n/a"


def test_rows_run_side_by_side_on_dask_and_make_the_same_bytes_as_local(env, tmp_path):
    """--runner dask: every row is one task on the cluster, the rows overlap in time in worker processes,
    and each row's trained weights and scores are the bytes of a local run (thread count pinned)."""
    budget = ["--table", "conditioning", "--preset", "tiny", "--steps", "6", "--clips", "8", "--eval-steps", "1",
              "--classifier-steps", "10", "--json"]
    dask = json.loads(run_vta(["ablate", "--root", str(tmp_path / "dask"), *budget, "--runner", "dask",
                               "--dask-workers", "2"], env).stdout)
    local = json.loads(run_vta(["ablate", "--root", str(tmp_path / "local"), *budget], env).stdout)
    assert not dask["failures"] and not local["failures"]
    runs = dask["row_runs"]
    flow_process = local["row_runs"]["cross-attention only"]["process"]
    assert len({r["process"] for r in runs.values()}) >= 2 and flow_process not in {r["process"] for r in runs.values()}
    spans = sorted((r["started"], r["ended"]) for r in runs.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans  # some rows overlapped
    assert len({r["process"] for r in local["row_runs"].values()}) == 1  # local: row after row in one process
    for d, lo in zip(dask["rows"], local["rows"], strict=True):
        assert d["row"] == lo["row"]
        assert {k: d.get(k) for k in METRIC_KEYS} == {k: lo.get(k) for k in METRIC_KEYS}, d["row"]
    weights = {r: {p.parent.parent.name: p.read_bytes() for p in (tmp_path / r).glob("train/*/checkpoint/*.safetensors")}
               for r in ("dask", "local")}
    assert len(weights["dask"]) == 3 and weights["dask"] == weights["local"]
    # root-independent versions: the same inputs give the same train and evaluation versions in both roots
    assert _versions(tmp_path / "dask") == _versions(tmp_path / "local") and dask["ref"] == local["ref"]


METRIC_KEYS = ("onset_f1", "onset_f1_lo", "onset_f1_hi", "event_class_accuracy", "av_align", "diff_onset_f1")
