"""Helpers of the batch tests (plain module: importable by name, unlike ``conftest``).

* :func:`conn_json`: the ``xai`` connection to an emulator, as ``AIRFLOW_CONN_XAI_DEFAULT`` takes it.
* :func:`make_context`: the part of a task's Airflow context the batch operators use, for in-process runs.
* :class:`BatchWatcher`: a thread of the test process that acts on the emulator's batches as soon as
  requests are added to them (expire, cancel), so DAG subprocesses meet a batch that changed under them.
* :func:`write_dag`: a DAG file from a source template.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from task_context import FakeStateStore, make_task_context

from airflow_provider_xai_image.testing import XaiEmulator
from airflow_provider_xai_image.testing.records import RequestRecord

#: What the emulator answers for a batch request whose prompt carries ``BATCH_FAILURE_MARKER``.
EMULATED_FAILURE = "Image generation failed (emulated failure)."
#: ``cancel_by_xai_message`` given to batches expired through the emulator.
EXPIRED_MESSAGE = "Batch expired by xAI"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"


def conn_json(emulator: XaiEmulator, **extra: Any) -> str:
    """The emulator's ``xai`` connection (one retry: failing tests stay short)."""
    return json.dumps(
        {
            "conn_type": "xai",
            "password": emulator.api_key,
            "host": emulator.base_url,
            "extra": {"max_retries": 1, **extra},
        }
    )


def dag_env(emulator: XaiEmulator, **more: str) -> dict[str, str]:
    """Environment of a DAG subprocess talking to ``emulator`` (moto's connection is in ``os.environ``)."""
    return {"AIRFLOW_CONN_XAI_DEFAULT": conn_json(emulator), **more}


def make_context(
    task_id: str,
    *,
    dag_id: str = "batch_tests",
    run_id: str = RUN_ID,
    state_store: FakeStateStore | None = None,
) -> dict[str, Any]:
    """A context for ``operator.execute(context)`` outside Airflow (no ``task_state_store`` unless given)."""
    return make_task_context(task_id, dag_id=dag_id, run_id=run_id, state_store=state_store)


def calls(emulator: XaiEmulator, method: str, path: str) -> list[RequestRecord]:
    """The emulator's log of ``method path`` calls (``path`` without the query)."""
    return [r for r in emulator.requests_log if r.method == method and r.path == path]


def batches_created(emulator: XaiEmulator) -> int:
    return len([r for r in calls(emulator, "POST", "/v1/batches") if r.status == 200])


def image_downloads(emulator: XaiEmulator) -> list[RequestRecord]:
    return [r for r in emulator.requests_log if r.method == "GET" and r.path.startswith("/tmp-images/")]


class BatchWatcher:
    """Calls ``action(emulator, batch)`` once for each batch whose name contains ``name_part``, as soon as
    it holds requests (polls the emulator every 10 ms from a thread of the test process)."""

    def __init__(
        self,
        emulator: XaiEmulator,
        name_part: str,
        action: Callable[[XaiEmulator, dict[str, Any]], Any],
    ) -> None:
        self.emulator = emulator
        self.name_part = name_part
        self.action = action
        self.done: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"batch-watcher-{name_part}", daemon=True)

    def __enter__(self) -> BatchWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            batches, _ = self.emulator.backend.list_batches(0, 10_000)
            for batch in batches:
                if (
                    self.name_part in batch["name"]
                    and batch["state"]["num_requests"] > 0
                    and batch["batch_id"] not in self.done
                ):
                    self.action(self.emulator, batch)
                    self.done.append(batch["batch_id"])
            time.sleep(0.01)


def expire(emulator: XaiEmulator, batch: dict[str, Any]) -> None:
    """A :class:`BatchWatcher` action: xAI expires the batch (pending requests cancelled, with its message)."""
    emulator.expire_batch(batch["batch_id"], EXPIRED_MESSAGE)


def write_dag(directory: Path, dag_id: str, source: str, **values: Any) -> Path:
    """Write ``source`` (``%(name)s`` placeholders filled from ``values``) as ``<dag_id>.py``."""
    path = directory / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source) % values)
    return path


def no_key_in(key: str, *things: Any) -> None:
    """Assert the API key appears in none of ``things`` (strings, or anything JSON-able)."""
    for thing in things:
        text = thing if isinstance(thing, str) else json.dumps(thing, default=str)
        assert key not in text, "the API key leaked"
