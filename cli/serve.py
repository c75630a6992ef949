"""The ``vta serve`` command (flows/serve.py is imported only when it runs: ``vta --help`` does not load Prefect)."""

from __future__ import annotations

import click

from flows import NIGHTLY_CRON


@click.command("serve")
@click.option("--root", type=str, default=None, help="Default artifact root in every deployment's form.")
@click.option("--nightly-cron", default=NIGHTLY_CRON, show_default=True, help="Schedule of the nightly evaluation.")
@click.option("--timezone", default="UTC", show_default=True, help="Time zone of the cron schedule.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Flow runs at once (default: no limit).")
@click.option("--only", multiple=True, help="Serve only these deployments (repeatable): ingest, train, evaluate, "
                                            "pipeline, rerun, nightly.")
def serve_command(root: str | None, nightly_cron: str, timezone: str, limit: int | None, only: tuple[str, ...]) -> None:
    """Serve the Prefect deployments (ingest, train, evaluate, pipeline, rerun, nightly evaluation) to the
    server at $PREFECT_API_URL; start one with `prefect server start`, then click Run in its UI."""
    from flows.serve import serve

    try:
        serve(nightly_cron=nightly_cron, timezone=timezone, root=root, limit=limit, only=list(only) or None)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
