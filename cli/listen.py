"""``vta listen``: the listening test (vta_core/evaluation/listening.py) on a local HTTP server."""

from __future__ import annotations

import click

from vta_core.evaluation.listening import (
    CRITERIA,
    ListenApp,
    Ratings,
    collect_items,
    make_server,
    parse_systems,
    summarize,
)


@click.command("listen")
@click.argument("folders", nargs=-1)
@click.option("--ratings", "ratings_path", type=click.Path(dir_okay=False), default="vta-ratings.parquet",
              show_default=True, help="Parquet file the ratings are appended to.")
@click.option("--ground-truth", is_flag=True, help="Also rate the clips' own audio (system 'ground_truth').")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds every rater's random order.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True)
@click.option("--summary", is_flag=True, help="Print mean ± std per system of the ratings file and exit.")
@click.option("--ablation", default=None, metavar="REF",
              help="Rate the rows of an ablation artifact (ablation or ablation@VERSION under --root): one system "
                   "per row, named after it, for `vta ablate --ratings`.")
@click.option("--root", default=None, help="The artifact root of --ablation (default $VTA_ROOT or ./vta-artifacts).")
@click.option("--json", "as_json", is_flag=True, help="With --summary: print JSON.")
def listen_cmd(folders: tuple[str, ...], ratings_path: str, ground_truth: bool, seed: int, port: int,
               summary: bool, ablation: str | None, root: str | None, as_json: bool) -> None:
    """Listening test over evaluation FOLDERS ([NAME=]DIR, one system each) on http://127.0.0.1:PORT."""
    import json

    if not summary and not folders and not ablation:
        raise click.UsageError("give at least one evaluation folder, --ablation REF, or --summary")
    try:
        if summary:
            rows = summarize(ratings_path)
        else:
            systems = parse_systems(folders)
            if ablation:
                from stages.ablation import listening_systems
                from storage import ArtifactStore

                store = ArtifactStore(root)
                rows_of = listening_systems(store, store.resolve(ablation))
                if clash := set(rows_of) & set(systems):
                    raise ValueError(f"system name(s) {sorted(clash)} given twice (a folder and an ablation row)")
                systems.update(rows_of)
            items = collect_items(systems, ground_truth=ground_truth, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    if summary:
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"listening test: {ratings_path}")
        for col in ("system", "n", "raters", *CRITERIA):
            table.add_column(col)
        for r in rows:
            table.add_row(r["system"], str(r["n"]), str(r["raters"]),
                          *(f"{r[c + '_mean']:.1f} ± {r[c + '_std']:.1f}" for c in CRITERIA))
        Console().print(table)
        return
    server = make_server(ListenApp(items, Ratings(ratings_path), seed=seed), port=port)
    systems = sorted({i.system for i in items})
    click.echo(f"listening test: {len(items)} clips from {len(systems)} systems; ratings -> {ratings_path}")
    click.echo(f"open http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
