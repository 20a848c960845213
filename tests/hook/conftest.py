"""Fixtures of the hook tests: an emulator-backed ``xai_default`` connection and log capture.

Every test talks to the emulator (``xai_emulator``, from this package's pytest plugin) over real
HTTP on loopback. The connection is given the way Airflow users give it: as an
``AIRFLOW_CONN_XAI_DEFAULT`` environment variable.

The hook logs through ``self.log``, which in Airflow 3 is a structlog logger that does not reach
the stdlib ``logging`` tree (so ``caplog`` never sees it); ``hook_logs`` captures those events with
``structlog.testing.capture_logs``. Third-party libraries (urllib3, httpx, werkzeug) still log
through ``logging``, which ``caplog`` captures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog.testing

from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator

#: Extras that keep failing tests short: two retries, a short read timeout.
FAST_EXTRA: dict[str, Any] = {"timeout": 10, "max_retries": 2}


def conn_json(emulator: XaiEmulator, *, api_key: str | None = None, **extra: Any) -> str:
    """The JSON form of an ``xai`` connection to ``emulator`` (with ``extra`` when given)."""
    return emulator.connection_uri(api_key=api_key, **extra)


@pytest.fixture
def emulator(xai_emulator: XaiEmulator) -> XaiEmulator:
    """The plugin's emulator with 429s asking for ``Retry-After: 0`` (tests that want 1 s say so)."""
    xai_emulator.configure(retry_after=0)
    return xai_emulator


@pytest.fixture
def set_connection(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., XaiHook]:
    """``set_connection(conn_id="xai_default", api_key=None, **extra) -> XaiHook`` for that connection."""

    def set_connection(conn_id: str = "xai_default", *, api_key: str | None = None, **extra: Any) -> XaiHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json(emulator, api_key=api_key, **extra))
        return XaiHook(xai_conn_id=conn_id)

    return set_connection


@pytest.fixture
def hook(set_connection: Callable[..., XaiHook]) -> XaiHook:
    """A hook on ``xai_default`` pointing at the emulator, with ``max_retries=2``."""
    return set_connection(**FAST_EXTRA)


@pytest.fixture
def hook_logs() -> Iterator[list[dict[str, Any]]]:
    """The structlog events logged (by the hook) during the test, each ``{"event", "log_level", ...}``."""
    with structlog.testing.capture_logs() as events:
        yield events
