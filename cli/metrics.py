"""``vta metrics fd`` (the Fréchet distance of two embedding sets) and ``parse_weights`` for ``--metric-weights``."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np


def _stats(path: str):  # noqa: ANN202 - vta_core.metrics.frechet.GaussianStats
    from vta_core.metrics.frechet import GaussianStats

    p = Path(path)
    try:
        if p.suffix == ".npz":  # statistics saved by GaussianStats.save
            return GaussianStats.load(p)
        return GaussianStats.from_embeddings(np.load(p, allow_pickle=False), what=str(p))
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise click.ClickException(msg if str(p) in msg else f"{p}: {msg}") from None


@click.command("fd")
@click.argument("emb_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("emb_b", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def metrics_fd(emb_a: str, emb_b: str, as_json: bool) -> None:
    """Fréchet distance of two (N, D) embedding sets (.npy), or of saved statistics (.npz with mu, sigma, n)."""
    from vta_core.metrics.frechet import frechet_distance

    a, b = _stats(emb_a), _stats(emb_b)
    try:
        fd = frechet_distance(a, b)
    except ValueError as e:
        raise click.ClickException(f"{emb_a} vs {emb_b}: {e}") from None
    out = {"fd": fd, "n_a": a.n, "n_b": b.n, "dim": int(np.atleast_1d(a.mu).shape[0])}
    click.echo(json.dumps(out, indent=2) if as_json else f"fd {fd:.6f}  (n {a.n} vs {b.n}, dim {out['dim']})")


WEIGHT_KEYS = ("panns", "vggish", "clap", "synth_classifier")


def parse_weights(items: tuple[str, ...]) -> dict[str, str]:
    """``("panns=/w/Cnn14.pth", ...)`` -> ``{"panns": "/w/Cnn14.pth"}`` (usage error naming a bad item)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in WEIGHT_KEYS or not value:
            raise click.BadParameter(f"{item!r}: use NET=PATH with NET one of {', '.join(WEIGHT_KEYS)}",
                                     param_hint="--metric-weights")
        out[key] = value
    return out
