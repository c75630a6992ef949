"""What a flow run shows in the Prefect UI (Artifacts tab): tables of stage results and metrics,
markdown summaries, links to reports. Keys are stable per deployment so the UI keeps a history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact


def publish_stages(stages: list[dict[str, Any]], *, key: str, title: str) -> None:
    """One table row per stage: ref, computed or reused, ok / failed / filtered counts, path."""
    rows = [{"stage": s["stage"], "ref": s["ref"], "result": "reused" if s["reused"] else "computed",
             **{k: s["counts"].get(k, 0) for k in ("ok", "failed", "filtered")}, "path": s["path"]} for s in stages]
    create_table_artifact(table=rows, key=key, description=f"**{title}**: {len(rows)} stage artifact(s)")


def publish_report(report_json: str | Path, *, key: str) -> None:
    """A link to report.html (file URL on the worker's disk) and the targets as markdown."""
    import json

    path = Path(report_json)
    report = json.loads(path.read_text())
    create_link_artifact(link=path.with_suffix(".html").resolve().as_uri(), link_text="report.html", key=key)
    lines = ["| target | value | need | pass |", "|---|---|---|---|"]
    for name, t in report.get("targets", {}).items():
        lines.append(f"| {name} | {t['value']} | >= {t['need']} | {'pass' if t['pass'] else 'FAIL'} |")
    create_markdown_artifact(markdown="\n".join(lines), key=f"{key}-targets", description=f"report: {path}")


def publish_text(markdown: str, *, key: str) -> None:
    create_markdown_artifact(markdown=markdown, key=key)
