"""Loading the wire fixtures of ``tests/fixtures/xai/`` (real messages transcribed from public sources)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xai"


def fixture(name: str) -> dict[str, Any]:
    """The fixture ``name`` (without ``.json``); every one names its public source."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    assert data.get("SOURCE"), f"{name}.json must say where it comes from"
    return data


def response(name: str) -> dict[str, Any]:
    return fixture(name)["response"]
