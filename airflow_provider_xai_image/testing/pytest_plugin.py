"""Pytest plugin (entry point ``pytest11: xai_emulator``): the ``xai_emulator`` fixture.

Importing this module is cheap; the emulator itself is imported when a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_xai_image.testing.server import XaiEmulator


@pytest.fixture
def xai_emulator() -> Iterator[XaiEmulator]:
    """A fresh, running xAI emulator for one test (``base_url``, ``api_key``, ``configure()``, ...)."""
    from airflow_provider_xai_image.testing.server import XaiEmulator

    with XaiEmulator() as emulator:
        yield emulator
