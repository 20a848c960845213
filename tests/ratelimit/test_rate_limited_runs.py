"""Rate-limited runs through the real path: the operator (threads) and its trigger (asyncio) with default
settings against the emulator over HTTP: every image stored once and billed once, no request failing for a
429 with ``max_retries=0``, ``Retry-After`` honoured, a limit that drops mid-run followed, a raised limit in
the connection used, and what may have been billed before a 429 still counted.

Assertions are on counts, on the order of requests and on the pace the task reports, never on how fast
the machine is: a loaded machine only sends later."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from airflow.providers.common.compat.sdk import TaskDeferred
from ratelimit_support import connect
from support.task_context import make_task_context

from airflow_provider_xai_image.engine.plan import GenerationPlan
from airflow_provider_xai_image.exceptions import XaiPossiblyBilledError
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import LoggedRequest, XaiEmulator
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

GENERATION_LATENCY = 0.3
FINAL_PACE = re.compile(r"Requests were paced at ([\d.]+) requests/s at the end \(started at ([\d.]+)\)")


def operator(out: Path, count: int, **kwargs: Any) -> XaiGenerateImagesOperator:
    return XaiGenerateImagesOperator(
        task_id="generate",
        prompt=[f"a paper lantern, number {index}" for index in range(count)],
        output_uri=f"file://{out}",
        **kwargs,
    )


def context() -> dict[str, Any]:
    return make_task_context("generate", dag_id="ratelimit", run_id="manual__ratelimit")


def image_calls(emulator: XaiEmulator) -> list[LoggedRequest]:
    """The generate calls the emulator received, in the order they arrived."""
    calls = [record for record in emulator.requests_log if record.method == "POST" and "/images/" in record.path]
    return sorted(calls, key=lambda record: record.time)


def manifest_of(ctx: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(ctx["ti"].xcoms["manifest"].removeprefix("file://")).read_text())


def check_every_image_once(emulator: XaiEmulator, ctx: dict[str, Any], uris: list[str], count: int) -> None:
    calls = image_calls(emulator)
    assert sum(record.status == 200 for record in calls) == count  # each prompt answered once
    assert {record.status for record in calls} <= {200, 429}
    assert emulator.images_billed == count
    assert len(uris) == len(set(uris)) == count
    manifest = manifest_of(ctx)
    assert sorted(image["prompt_index"] for image in manifest["images"]) == list(range(count))
    assert manifest["errors"] == []


def logged(events: list[dict[str, Any]]) -> list[str]:
    """The messages of the task log's events."""
    return [event["event"] % tuple(event.get("positional_args", ())) for event in events]


def final_pace(events: list[dict[str, Any]]) -> tuple[float, float]:
    """The pace the task reported at the end, and where it started."""
    found = [FINAL_PACE.search(message) for message in logged(events)]
    ends = [(float(match[1]), float(match[2])) for match in found if match]
    assert len(ends) == 1, ends
    return ends[0]


@pytest.fixture
def task_log() -> Iterator[list[dict[str, Any]]]:
    """The structlog events the task logs during the test."""
    with structlog.testing.capture_logs() as events:
        yield events


def test_a_rate_limited_run_stores_every_image_once_and_slows_down(
    emulator: XaiEmulator, out: Path, task_log: list[dict[str, Any]]
) -> None:
    emulator.configure(rate_limit_rps=3, generation_latency=GENERATION_LATENCY)  # under the default 5/s
    ctx = context()

    uris = operator(out, 30).execute(ctx)

    check_every_image_once(emulator, ctx, uris, 30)
    end, start = final_pace(task_log)
    assert start == 4.75
    assert end < start
    assert any("slowed down" in message for message in logged(task_log))
    assert 0 < emulator.stats()["rate_limited"] < 30  # slowed down, not a 429 for every image


def test_a_rate_limited_deferrable_run_stores_every_image_once_and_slows_down(
    emulator: XaiEmulator, out: Path, task_log: list[dict[str, Any]]
) -> None:
    emulator.configure(rate_limit_rps=3, generation_latency=GENERATION_LATENCY)
    ctx = context()
    task = operator(out, 30, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(ctx)
    classpath, kwargs = deferred.value.trigger.serialize()
    plan = GenerationPlan.load(kwargs["plan_uri"], kwargs["plan_digest"])
    assert plan.max_concurrency is None  # the default: the safety cap
    module, _, name = classpath.rpartition(".")
    trigger: XaiGenerateImagesTrigger = getattr(importlib.import_module(module), name)(**kwargs)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger fired no event")

    event = asyncio.run(first_event())
    assert event["status"] == "success", event
    uris = task.execute_complete(ctx, event)

    check_every_image_once(emulator, ctx, uris, 30)
    end, start = final_pace(task_log)
    assert end < start == 4.75
    assert 0 < emulator.stats()["rate_limited"] < 30


def test_a_long_retry_after_holds_every_request_of_the_task(
    emulator: XaiEmulator, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, emulator, requests_per_second=1)  # one request every ~1.05 s
    emulator.configure(generation_status_script=[429], retry_after=2)
    ctx = context()

    uris = operator(out, 3).execute(ctx)

    check_every_image_once(emulator, ctx, uris, 3)
    refused, *later = image_calls(emulator)
    assert refused.status == 429
    assert len(later) == 3
    # Without the hold, the next prompt would have gone about 1.05 s after the first.
    assert min(record.time for record in later) >= refused.time + 2


def test_a_retry_after_of_one_second_holds_the_refused_request(
    emulator: XaiEmulator, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, emulator, requests_per_second=20)
    emulator.configure(generation_status_script=[429], retry_after=1)
    ctx = context()

    uris = operator(out, 4).execute(ctx)

    check_every_image_once(emulator, ctx, uris, 4)
    refused, *later = image_calls(emulator)
    sent_again = [record for record in later if record.json["prompt"] == refused.json["prompt"]]
    assert len(sent_again) == 1
    assert sent_again[0].time >= refused.time + 1


def test_a_limit_that_drops_mid_run_is_followed_without_failing_the_task(
    emulator: XaiEmulator, out: Path, task_log: list[dict[str, Any]]
) -> None:
    emulator.configure(rate_limit_rps=5, generation_latency=0.2)
    dropped_at: list[float] = []

    def drop_the_limit_after_ten_images() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(record.status == 200 for record in image_calls(emulator)) >= 10:
                emulator.configure(rate_limit_rps=2)
                dropped_at.append(time.monotonic())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=drop_the_limit_after_ten_images)
    watcher.start()
    ctx = context()
    uris = operator(out, 36).execute(ctx)
    watcher.join()

    check_every_image_once(emulator, ctx, uris, 36)
    assert dropped_at
    after = [record for record in image_calls(emulator) if record.time > dropped_at[0]]
    refused = [record for record in after if record.status == 429]
    assert refused  # the drop was felt...
    assert len(refused) < len(after) / 2  # ...and followed: most requests after it were served
    end, _ = final_pace(task_log)
    assert end < 4.0  # near 2/s (1.95 in a run on an idle machine), far under the 4.75 it started at


def test_a_raised_limit_in_the_connection_is_used(
    emulator: XaiEmulator, out: Path, monkeypatch: pytest.MonkeyPatch, task_log: list[dict[str, Any]]
) -> None:
    connect(monkeypatch, emulator, requests_per_second=20)
    emulator.configure(rate_limit_rps=20, generation_latency=GENERATION_LATENCY)
    ctx = context()

    uris = operator(out, 40).execute(ctx)

    check_every_image_once(emulator, ctx, uris, 40)
    _, start = final_pace(task_log)
    assert start == 19.0
    arrivals = [record.time for record in image_calls(emulator)]
    busiest_second = max(sum(1 for later in arrivals if first <= later < first + 1) for first in arrivals)
    assert busiest_second > 5  # more than the default limit allows


def test_max_concurrency_still_bounds_requests_in_flight(emulator: XaiEmulator, out: Path) -> None:
    emulator.configure(generation_latency=GENERATION_LATENCY)
    ctx = context()

    uris = operator(out, 8, max_concurrency=2).execute(ctx)

    check_every_image_once(emulator, ctx, uris, 8)
    assert max(record.in_flight for record in image_calls(emulator)) <= 2


def test_a_send_that_may_have_been_billed_then_429s_stays_possibly_billed(
    emulator: XaiEmulator, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, emulator, max_retries=1, max_ambiguous_retries=1)
    emulator.configure(generation_status_script=[500, 429, 500], retry_after=0)
    with pytest.raises(XaiPossiblyBilledError, match="may have been billed"):
        operator(out, 1).execute(context())
    # 500 (maybe billed, re-sent once as allowed), 429 (sent again by the pacing), 500: not re-sent again.
    assert [record.status for record in image_calls(emulator)] == [500, 429, 500]

    ctx = context()
    operator(out, 1).execute(ctx)  # the retry

    assert manifest_of(ctx)["totals"]["possibly_billed_usd"] == pytest.approx(2 * 0.05)  # both 500s, $0.05 each
