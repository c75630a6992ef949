"""``vta sweep``: one nightly sweep now (flows/sweep.py; imported only when the command runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.options import sampling_options


@click.command("sweep")
@click.option("--videos", "synth_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A `vta synth` folder: the fixed test set.")
@click.option("--root", type=str, default=None, help="Artifact root (default $VTA_ROOT or ./vta-artifacts).")
@click.option("--split", default="test", show_default=True)
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-clips", type=click.IntRange(min=1), default=None)
@click.option("--metric", default="onset_f1", show_default=True,
              help="What 'best' means when comparing the latest checkpoint with earlier ones (a summary column).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--metric-weights", "weights", multiple=True, metavar="NET=PATH",
              help="Metric network weights: panns=, vggish=, clap=, synth_classifier=.")
@click.option("--json", "as_json", is_flag=True)
def sweep_cmd(weights: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """One nightly sweep now: evaluate new train artifacts, compare the latest with the best, extend the history."""
    from cli.metrics import parse_weights
    from stages.evaluation import SUMMARY_COLUMNS, testset_fingerprint

    if options["metric"] not in SUMMARY_COLUMNS:
        raise click.BadParameter(f"{options['metric']!r} is not one of {', '.join(SUMMARY_COLUMNS)}",
                                 param_hint="--metric")
    metric_weights = parse_weights(weights)
    try:
        testset_fingerprint(options["synth_dir"], split=options["split"], max_clips=options["max_clips"])
    except (ValueError, FileNotFoundError) as e:  # one line, before Prefect starts
        raise click.ClickException(str(e)) from None
    from flows.sweep import nightly_sweep

    result = nightly_sweep(metric_weights=metric_weights, **options)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(Path(result["summary_md"]).read_text())
    click.echo(f"history: {result['history']}\ntrend: {result['trend_png']}\nreport: {result['report_html']}")
