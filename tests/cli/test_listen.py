"""`vta listen` (cli/listen.py): the --summary table and --json, and its usage errors; the server itself is
tested in tests/vta_core/evaluation/test_listening.py."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import cli
from vta_core.evaluation.listening import CRITERIA, Ratings


def test_summary_table_json_and_usage_errors(tmp_path):
    ratings = Ratings(tmp_path / "r.parquet")
    ratings.append([{"rater": f"r{k}", "item_id": f"a{k}", "system": "a", "clip_id": f"c{k}",
                     **dict.fromkeys(CRITERIA, 10 + 20 * k), "position": k, "seed": 0, "created": "t"} for k in range(2)])
    res = CliRunner().invoke(cli, ["listen", "--summary", "--ratings", str(ratings.path)])
    assert res.exit_code == 0 and "20.0 ± 10.0" in res.output, res.output
    res = CliRunner().invoke(cli, ["listen", "--summary", "--json", "--ratings", str(ratings.path)])
    assert res.exit_code == 0 and json.loads(res.output)[0]["overall_quality_mean"] == 20.0
    res = CliRunner().invoke(cli, ["listen"])
    assert res.exit_code == 2 and "at least one evaluation folder" in res.output
    res = CliRunner().invoke(cli, ["listen", "--summary", "--ratings", str(tmp_path / "none.parquet")])
    assert res.exit_code == 1 and "no ratings in" in res.output
    res = CliRunner().invoke(cli, ["listen", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "evaluation folder not found" in res.output
