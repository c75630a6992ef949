"""Headless Chromium for browser tests: serve a folder on 127.0.0.1, open pages, collect every error.

Drives Debian's ``/usr/bin/chromium`` (``scripts/ensure-test-tools`` installs it) through Playwright's
Python package with ``executable_path``: Playwright never downloads a browser here, and it reports
console messages, page errors and failed requests as events. A fresh profile per browser.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("VTA_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.is_file():
        return f"Chromium not installed ({CHROMIUM} missing; run scripts/ensure-test-tools as root)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    return None


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


@contextmanager
def serve(directory: str | Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``directory`` (a free port) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """One headless Chromium (fresh temporary profile); :meth:`open` returns a page and its error list."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def open(self, url: str) -> tuple[Any, list[str]]:
        page = self.context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.goto(url, wait_until="load")
        return page, errors


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium with the flags CI needs; skips the test, naming what is missing, when it cannot run."""
    why = missing()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="vta-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                           args=FLAGS, timeout=60_000)
            context.set_default_timeout(20_000)
            try:
                yield Browser(context)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# Loads every <audio>/<video> fully enough to decode its first frame and reports each element's state.
MEDIA_STATES_JS = """async () => {
  const media = [...document.querySelectorAll('audio, video')];
  await Promise.all(media.map(m => new Promise(done => {
    if (m.readyState >= 2 || m.error) return done();
    m.addEventListener('loadeddata', done, {once: true});
    m.addEventListener('error', done, {once: true});
    m.preload = 'auto'; m.load();
  })));
  return {
    media: media.map(m => ({tag: m.tagName.toLowerCase(), src: m.currentSrc, ready: m.readyState,
                            error: m.error ? m.error.code + ' ' + m.error.message : null, duration: m.duration,
                            width: m.videoWidth || 0})),
    images: [...document.images].map(i => ({src: i.currentSrc, ok: i.complete && i.naturalWidth > 0,
                                             width: i.naturalWidth})),
  };
}"""


def media_states(page: Any) -> dict[str, list[dict[str, Any]]]:
    """Every audio/video element loaded to its first frame (or its error) and every image's state."""
    return page.evaluate(MEDIA_STATES_JS)
