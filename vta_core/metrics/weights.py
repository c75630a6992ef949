"""Where a metric network's weights come from: a local file, or ``hf:OWNER/REPO/FILE`` through the
Hugging Face hub cache (downloads only where the hub is reachable and HF_HUB_OFFLINE is unset).

``resolve_weights`` returns ``(path, None)`` or ``(None, reason)``; it never raises for a missing file,
so a metric without weights becomes ``null`` with the reason instead of a crash.
"""

from __future__ import annotations

from pathlib import Path


def resolve_weights(spec: str | Path | None, *, what: str) -> tuple[Path | None, str | None]:
    """A local weights file for ``spec``, or None and a one-line reason."""
    if spec is None or str(spec) == "":
        return None, f"no {what} weights given"
    text = str(spec)
    if text.startswith("hf:"):
        parts = text[3:].split("/")
        if len(parts) < 3:
            return None, f"bad hub spec {text!r}: use hf:OWNER/REPO/FILE"
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]))), None
        except Exception as e:  # noqa: BLE001 - offline, missing repo, network: one line for the report
            return None, f"{what} weights {text} unavailable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    path = Path(text).expanduser()
    if not path.is_file():
        return None, f"{what} weights not found: {path}"
    return path, None
