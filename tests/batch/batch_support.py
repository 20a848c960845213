"""Helpers of the batch tests (plain module: importable by name, unlike ``conftest``).

* :func:`conn_json`: the ``xai`` connection to an emulator, as ``AIRFLOW_CONN_XAI_DEFAULT`` takes it.
* :func:`make_context`: the part of a task's Airflow context the batch operators use, for in-process runs.
* :func:`submit_batch`: a batch made the way the operator makes one (a JSONL file, then the batch).
* :class:`BatchWatcher`: a thread of the test process that acts on the emulator's batches as soon as
  xAI has counted their requests (expire, refuse), so DAG subprocesses meet a batch that changed under them.
* :func:`write_dag`: a DAG file from a source template.
"""

from __future__ import annotations

import json
import re
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from support.task_context import FakeStateStore, make_task_context

from airflow_provider_xai_image.api.batch_files import batch_files
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator
from airflow_provider_xai_image.testing.records import LoggedRequest

#: What the emulator says about a batch request whose prompt carries ``BATCH_FAILURE_MARKER``, as the
#: provider records it: the text alone (error string, ``error_message``) or with xAI's code (error object).
EMULATED_FAILURE = "Image generation failed (emulated failure)."
EMULATED_FAILURE_CODED = f"{EMULATED_FAILURE} (code 13)"
#: ``cancel_by_xai_message`` given to batches expired through the emulator.
EXPIRED_MESSAGE = "Batch expired by xAI"
#: ``cancel_by_xai_message`` given to batches refused through the emulator.
REFUSED_MESSAGE = "Input refused: line 1 breaks the usage policy"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
JPEG_MAGIC = b"\xff\xd8\xff"
#: ``p00000-i00-<12 hex>.jpg``: a stored image's name.
IMAGE_NAME = re.compile(r"^p(\d{5})-i(\d{2})-([0-9a-f]{12})\.jpg$")


def conn_json(emulator: XaiEmulator, **extra: Any) -> str:
    """The emulator's ``xai`` connection (one retry: failing tests stay short)."""
    return emulator.connection_uri(**{"max_retries": 1, **extra})


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


def calls(emulator: XaiEmulator, method: str, path: str) -> list[LoggedRequest]:
    """The emulator's log of ``method path`` calls (``path`` without the query)."""
    return [r for r in emulator.requests_log if r.method == method and r.path == path]


def batches_created(emulator: XaiEmulator) -> int:
    """Batches the emulator holds (each creation it answered, or not)."""
    return emulator.stats()["batches_created"]


def image_downloads(emulator: XaiEmulator) -> list[LoggedRequest]:
    return [r for r in emulator.requests_log if r.method == "GET" and r.path.startswith("/tmp-images/")]


def submit_batch(
    hook: XaiHook, prompts: list[str], name: str = "test-batch", first_index: int = 0, **params: Any
) -> str:
    """Upload ``prompts`` as one JSONL file (``custom_id`` from ``first_index``) and create a batch of it."""
    pairs = [(str(first_index + i), hook.build_request(prompt, **params)) for i, prompt in enumerate(prompts)]
    [(content, count)] = list(batch_files(pairs))
    assert count == len(prompts)
    return hook.create_batch(name, hook.upload_batch_file(f"{name}.jsonl", content)).batch_id


def wait_for_state(
    emulator: XaiEmulator, batch_id: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """Poll the emulator's own state (no API call, so nothing in ``requests_log``) until ``ready(state)``."""
    deadline = time.monotonic() + timeout
    while True:
        state = emulator.backend.get_batch(batch_id)["state"]
        if ready(state):
            return state
        assert time.monotonic() < deadline, f"batch {batch_id} never reached the awaited state: {state}"
        time.sleep(0.02)


def wait_until_counted(emulator: XaiEmulator, batch_id: str) -> dict[str, Any]:
    """Until xAI has validated the input file (its requests are counted)."""
    return wait_for_state(emulator, batch_id, lambda state: state["num_requests"] > 0)


def wait_until_done(emulator: XaiEmulator, batch_id: str) -> dict[str, Any]:
    """Until every request of the batch has completed."""
    return wait_for_state(emulator, batch_id, lambda state: state["num_requests"] > 0 and not state["num_pending"])


def raw_results(emulator: XaiEmulator, batch_id: str) -> dict[str, dict[str, Any]]:
    """Every item of the batch's results as the emulator serves it (one page of up to 1000), by id."""
    response = requests.get(
        f"{emulator.base_url}/batches/{batch_id}/results",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return {item["batch_request_id"]: item for item in response.json()["results"]}


def error_shape(item: dict[str, Any]) -> str | None:
    """How a results item reports a failure: ``object``, ``string``, ``error_message``; None on success."""
    if "error_message" in item:
        return "error_message"
    error = item.get("batch_result", {}).get("error")
    if error is None:
        return None
    return "object" if isinstance(error, dict) else "string"


class BatchWatcher:
    """Calls ``action(emulator, batch)`` once for each batch whose name contains ``name_part``, as soon as
    xAI has counted its requests (polls the emulator every 10 ms from a thread of the test process)."""

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


def refuse(emulator: XaiEmulator, batch: dict[str, Any]) -> None:
    """A :class:`BatchWatcher` action: xAI refuses the batch (pending requests cancelled, with its message)."""
    emulator.refuse_batch(batch["batch_id"], REFUSED_MESSAGE)


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
