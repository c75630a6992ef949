"""stages/ablation.py with listening ratings: `vta listen --ablation` rates the rows (systems named after them),
`vta ablate --ratings` adds each row's subjective scores with intervals and the paired Δ to the baseline. The
evaluations here are small hand-made artifacts (the whole flow: tests/flows/test_ablate.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from cli.main import cli
from stages.ablation import GROUND_TRUTH_ROW, ablation_stage, listening_systems
from storage import ArtifactStore, StageSpec, ok_row
from vta_core.ablations import AblationTable, Variant
from vta_core.evaluation.listening import CRITERIA, ListenApp, Ratings, collect_items

TABLE = AblationTable(name="t", title="a test table", baseline="base",
                      rows=(Variant("base"), Variant("better", expect={"onset_f1": +1})))
BUDGET = {"steps": 1}


def _evaluation(store: ArtifactStore, name: str, tp: int) -> object:
    """An evaluation artifact with two clips' generated scores and muxed clip files."""
    with store.writer(StageSpec("evaluation", {"row": name}, {}, "test")) as w:
        w.write_table("per_clip.parquet", pa.Table.from_pylist([
            {"clip_id": f"c{k}", "track": "generated", "tp": tp, "fp": 1, "fn": 2 - tp, "class_correct": 1,
             "class_total": 2, "av_align": 0.1 * tp} for k in range(2)]))
        for k in range(2):
            w.write_bytes(f"clips/c{k}/generated.mp4", f"{name} {k}".encode())
            w.write_bytes(f"clips/c{k}/ground_truth.mp4", f"truth {k}".encode())
        return w.commit(rows=[ok_row("c0"), ok_row("c1")], extra={"metrics": {"generated": {}}})


@pytest.fixture
def gathered(tmp_path):
    store = ArtifactStore(tmp_path / "root")
    evaluations = {"base": [_evaluation(store, "base", 1)], "better": [_evaluation(store, "better", 2)]}
    return store, evaluations, ablation_stage(store, table=TABLE, evaluations=evaluations, budget=BUDGET)


def _rate(store, art, path: Path, score: dict[str, int]) -> pa.Table:
    """Two raters rate every item; ``score``: system -> overall quality (the other axes: overall - 10);
    rater b is 20 points harsher on everything."""
    items = collect_items(listening_systems(store, art), ground_truth=True, seed=1)
    app = ListenApp(items, Ratings(path), seed=1)
    for rater, bias in (("a", 0), ("b", -20)):
        for item in app.order(rater):
            s = score[item.system] + bias
            app.rate({"rater": [rater], "item": [item.item_id],
                      **{c: [str(s if c == "overall_quality" else s - 10)] for c in CRITERIA}})
    return Ratings(path).read()


def test_ratings_add_listening_columns_with_paired_differences(gathered, tmp_path):
    store, evaluations, plain = gathered
    assert "listen: overall" not in Path(plain.file("table.md")).read_text()
    systems = listening_systems(store, plain)
    assert set(systems) == {"base", "better"} and all((p / "clips/c0/generated.mp4").is_file() for p in systems.values())
    ratings = _rate(store, plain, tmp_path / "r.parquet", {"base": 50, "better": 65, "ground_truth": 90})
    assert ratings.num_rows == 2 * 2 * 3  # raters x clips x systems (the ground truth too)

    art = ablation_stage(store, table=TABLE, evaluations=evaluations, budget=BUDGET, ratings=ratings)
    assert art.version != plain.version and not art.reused  # the ratings are an input
    rows = {r["row"]: r for r in art.record["rows"]}
    better = rows["better"]
    assert better["listen_n"] == 4 and better["listen_raters"] == 2
    assert better["listen_overall_quality"] == pytest.approx(55.0)  # (65 + 45) / 2
    assert better["listen_overall_quality_lo"] <= 55.0 <= better["listen_overall_quality_hi"]
    # paired over (rater, clip): rater b's harshness cancels, so the difference is exactly 15 on every pair
    assert better["listen_diff_overall_quality"] == pytest.approx(15.0)
    assert better["listen_diff_overall_quality_lo"] == pytest.approx(15.0) == better["listen_diff_overall_quality_hi"]
    assert better["listen_audio_quality"] == pytest.approx(45.0) and better["listen_n_paired"] == 4
    assert rows["base"]["listen_diff_overall_quality"] is None  # the baseline has no Δ to itself
    assert rows[GROUND_TRUTH_ROW]["listen_overall_quality"] == pytest.approx(80.0)
    md = Path(art.file("table.md")).read_text()
    assert "listen: overall" in md and "+15.0 [15.0, 15.0]" in md and "55.0 [" in md and GROUND_TRUTH_ROW in md
    assert "Δ listen: overall" in Path(art.file("report.html")).read_text()

    # the same ratings again: the same version, reused; one more rating: a new version
    again = ablation_stage(store, table=TABLE, evaluations=evaluations, budget=BUDGET, ratings=ratings)
    assert again.reused and again.version == art.version
    more = pa.concat_tables([ratings, ratings.slice(0, 1)])
    assert ablation_stage(store, table=TABLE, evaluations=evaluations, budget=BUDGET, ratings=more).version != art.version


def test_listen_ablation_names_a_bad_ref_in_one_line(gathered, tmp_path):
    store, _, plain = gathered
    res = CliRunner().invoke(cli, ["listen", "--ablation", "ablation@feedbeef0000", "--root", store.root])
    assert res.exit_code == 1 and "no committed artifact 'ablation@feedbeef0000'" in res.output
    res = CliRunner().invoke(cli, ["listen", "--ablation", "evaluation", "--root", store.root])
    assert res.exit_code == 1 and "is not an ablation artifact" in res.output
