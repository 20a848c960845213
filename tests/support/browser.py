"""Headless Chromium for the browser tests (``support.browser``; no fixtures here): the DOM a
page becomes once a browser has parsed it, and the elements in it.

Chromium is Debian's ``chromium`` package (``/usr/bin/chromium``), which ``make test`` installs when it is
missing and it runs as root (``make browser``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

#: Headless, no sandbox (tests may run as root), no network of its own, a throw-away profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> tuple[str | None, str]:
    """Chromium's executable; or None and why it is not there."""
    found = shutil.which("chromium")
    return found, "" if found else "chromium is not installed: `make browser` as root, or apt-get install chromium"


def rendered_dom(chromium: str, page: Path) -> str:
    """The DOM of the HTML file ``page`` once Chromium has loaded it (``--dump-dom``).

    :param chromium: Chromium's executable.
    :param page: An HTML file.
    """
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def elements(dom: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every element of a serialized DOM: its tag and attributes, in document order.

    :param dom: What :func:`rendered_dom` returned.
    """
    parser = _Elements()
    parser.feed(dom)
    parser.close()
    return parser.found
