"""Helpers of the fault tests: connections to an emulator, operators run in-process, what xAI billed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from support.task_context import make_task_context

from airflow_provider_xai_image.testing import XaiEmulator


def conn_json(emulator: XaiEmulator, *, api_key: str | None = None, **extra: Any) -> str:
    """An ``xai`` connection to ``emulator`` as JSON (one retry, short timeout, unless given)."""
    return emulator.connection_uri(api_key=api_key, **{"max_retries": 1, "timeout": 20, **extra})


def context(task_id: str = "generate", run_id: str = "manual__faults") -> dict[str, Any]:
    return make_task_context(task_id, dag_id="faults", run_id=run_id)


def generation_posts(emulator: XaiEmulator) -> int:
    """Generate/edit calls the emulator received."""
    return sum(1 for record in emulator.requests_log if record.method == "POST" and "/images/" in record.path)


def images_in(folder: Path) -> list[Path]:
    """The published images under ``folder`` (not records, manifest or hidden staging files)."""
    return sorted(path for path in folder.rglob("p*-i*.*") if path.suffix in (".jpg", ".png", ".webp"))


def manifest_of(ctx: dict[str, Any]) -> dict[str, Any]:
    uri = ctx["ti"].xcoms["manifest"]
    return json.loads(Path(uri.removeprefix("file://")).read_text())


def write_dag(directory: Path, dag_id: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return path
