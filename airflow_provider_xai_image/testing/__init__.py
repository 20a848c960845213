"""An xAI image API emulator for tests, demos and benchmarks: what moto is to AWS.

``XaiEmulator`` runs a real HTTP server on loopback that speaks revision 2 of the contract of
``docs/xai-api.md``: image generation and editing, the model list, the Files API and the Batch API (a
JSONL file, or requests added inline), with injectable faults. ``python -m
airflow_provider_xai_image.testing`` runs it standalone, and the pytest plugin of this package
provides an ``xai_emulator`` fixture.

The emulator never imports the provider: its wire facts live in ``contract``, transcribed from the
contract, so a client that gets a field name wrong fails against it. Modules, moto-style:
``config`` (settings and faults), ``contract`` (paths, values, models and prices), ``catalog``
(models), ``schemas`` (request bodies, batch input lines), ``uploads`` (multipart file uploads),
``images`` (rendering, source checks), ``records`` (served objects), ``backend`` (state),
``responses`` (WSGI routes), ``server`` (``XaiEmulator``). Names are imported lazily so that loading
the pytest plugin (which imports this package) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_xai_image.testing.backend import (
        BATCH_FAILURE_MARKER,
        MODERATION_MARKER,
        EmulatorBackend,
    )
    from airflow_provider_xai_image.testing.config import EmulatorConfig, Latency
    from airflow_provider_xai_image.testing.records import LoggedRequest
    from airflow_provider_xai_image.testing.records import LoggedRequest as RequestRecord
    from airflow_provider_xai_image.testing.server import XaiEmulator

_EXPORTS: dict[str, str] = {
    "BATCH_FAILURE_MARKER": "backend",
    "MODERATION_MARKER": "backend",
    "EmulatorBackend": "backend",
    "EmulatorConfig": "config",
    "Latency": "config",
    "LoggedRequest": "records",
    "RequestRecord": "records",  # the former name of LoggedRequest
    "XaiEmulator": "server",
}

#: Former names, still importable.
_RENAMED = {"RequestRecord": "LoggedRequest"}

__all__ = [
    "BATCH_FAILURE_MARKER",
    "MODERATION_MARKER",
    "EmulatorBackend",
    "EmulatorConfig",
    "Latency",
    "LoggedRequest",
    "RequestRecord",
    "XaiEmulator",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), _RENAMED.get(name, name))
