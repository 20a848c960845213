"""The thread and asyncio wrappers of the limiter, alone and through the hook against the emulator."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_provider_xai_image.exceptions import XaiRateLimitError, XaiServerError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.ratelimit import AsyncRateLimiter, RateLimiter
from airflow_provider_xai_image.testing import XaiEmulator

LOG = logging.getLogger("tests.ratelimit")


def rate_limited(retry_after: float | None = 0.0) -> XaiRateLimitError:
    return XaiRateLimitError("POST", "images/generations", 429, "Rate limit exceeded", retry_after)


class RefusingApi:
    """A stand-in for one request: refused with 429 (``Retry-After: retry_after``) ``refusals`` times in all,
    then answered after ``latency``; counts the calls and the most that were in flight at once."""

    def __init__(self, refusals: int, latency: float = 0.02, retry_after: float = 0.0) -> None:
        self.refusals = refusals
        self.latency = latency
        self.retry_after = retry_after
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def _enter(self) -> bool:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            refuse = self.refusals > 0
            self.refusals -= refuse
            return refuse

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def __call__(self) -> str:
        refuse = self._enter()
        try:
            if refuse:
                raise rate_limited(self.retry_after)
            time.sleep(self.latency)
            return "image"
        finally:
            self._leave()

    async def acall(self) -> str:
        refuse = self._enter()
        try:
            if refuse:
                raise rate_limited(self.retry_after)
            await asyncio.sleep(self.latency)
            return "image"
        finally:
            self._leave()


def run_threads(limiter: RateLimiter, request: Callable[[], str], count: int, threads: int) -> list[str]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: limiter.send(request), range(count)))


# Threads ------------------------------------------------------------------------------------------


def test_a_refused_request_is_sent_again_until_answered_and_the_slowdown_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = RefusingApi(refusals=3)
    limiter = RateLimiter(4, LOG)

    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert limiter.send(api) == "image"

    assert api.calls == 4
    assert limiter.core.limit == 1  # 4 -> 2 -> 1 -> 1
    assert limiter.core.in_flight == 0
    slowdowns = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert slowdowns[0] == (
        "xAI answered 429 (rate limited, Retry-After 0 s): slowing down from 4 to 2 request(s) in flight "
        "(0 still in flight); new requests wait 0.0 s."
    )
    assert len(slowdowns) == 3


def test_threads_never_send_more_than_the_limiter_allows_and_it_speeds_up_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = RefusingApi(refusals=2, latency=0.01)
    limiter = RateLimiter(8, LOG)

    with caplog.at_level(logging.INFO, logger=LOG.name):
        results = run_threads(limiter, api, count=120, threads=8)

    assert results == ["image"] * 120
    assert api.calls == 122
    speedups = [record.getMessage() for record in caplog.records if "speeding up" in record.getMessage()]
    assert speedups
    assert limiter.core.limit > 2  # it sped up after the 429s stopped


def test_more_threads_than_the_limit_allows_never_send_more_at_once() -> None:
    limiter = RateLimiter(3, LOG)
    api = RefusingApi(refusals=0, latency=0.05)

    run_threads(limiter, api, count=12, threads=8)

    assert api.most_in_flight == 3


def test_other_errors_free_their_slot_and_propagate() -> None:
    limiter = RateLimiter(1, LOG)

    def broken() -> str:
        raise XaiServerError("POST", "images/generations", 500, "boom")

    with pytest.raises(XaiServerError):
        limiter.send(broken)
    assert limiter.core.in_flight == 0
    assert limiter.core.limit == 1
    assert limiter.send(RefusingApi(refusals=0)) == "image"


def test_after_a_long_stretch_of_429s_every_request_stops_with_a_clear_error() -> None:
    api = RefusingApi(refusals=300, latency=0.0, retry_after=0.05)  # answered in the end if it never gave up
    limiter = RateLimiter(3, LOG, give_up_after=0.3)
    started = time.monotonic()

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(limiter.send, api) for _ in range(5)]
        errors = [future.exception(timeout=10) for future in futures]

    assert time.monotonic() - started < 5
    assert all(isinstance(error, XaiRateLimitError) for error in errors)
    message = str(errors[0])
    assert message.startswith("xAI POST /images/generations failed (HTTP 429): Rate limit exceeded; no request ")
    assert "succeeded for 0.3 s of 429s, so the task stops" in message


# asyncio ------------------------------------------------------------------------------------------


async def test_async_a_refused_request_is_sent_again_and_tasks_keep_to_the_limit() -> None:
    api = RefusingApi(refusals=3, latency=0.02)
    limiter = AsyncRateLimiter(8, LOG)

    results = await asyncio.gather(*(limiter.send(api.acall) for _ in range(40)))

    assert results == ["image"] * 40
    assert api.calls == 43
    assert limiter.core.in_flight == 0
    assert limiter.core.limit < 8


async def test_async_more_tasks_than_the_limit_allows_never_send_more_at_once() -> None:
    limiter = AsyncRateLimiter(3, LOG)
    api = RefusingApi(refusals=0, latency=0.03)

    await asyncio.gather(*(limiter.send(api.acall) for _ in range(15)))

    assert api.most_in_flight == 3


async def test_async_other_errors_and_cancellation_free_their_slot() -> None:
    limiter = AsyncRateLimiter(1, LOG)

    async def broken() -> str:
        raise XaiServerError("POST", "images/generations", 500, "boom")

    with pytest.raises(XaiServerError):
        await limiter.send(broken)
    slow = asyncio.create_task(limiter.send(lambda: asyncio.sleep(10, result="late")))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow

    assert limiter.core.in_flight == 0
    assert await limiter.send(RefusingApi(refusals=0).acall) == "image"


async def test_async_gives_up_after_a_long_stretch_of_429s() -> None:
    api = RefusingApi(refusals=300, latency=0.0, retry_after=0.05)  # answered in the end if it never gave up
    limiter = AsyncRateLimiter(2, LOG, give_up_after=0.3)

    errors = await asyncio.gather(*(limiter.send(api.acall) for _ in range(4)), return_exceptions=True)

    assert all(isinstance(error, XaiRateLimitError) for error in errors)
    assert "no request succeeded for 0.3 s of 429s" in str(errors[-1])


# Through the hook ---------------------------------------------------------------------------------


def test_the_hook_sends_a_refused_request_again_without_spending_max_retries(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(status_script=[429, 429, 429], retry_after=0)

    result = hook.run_image_request(hook.build_request("a patient owl"), RateLimiter(4, LOG))

    assert len(result.images) == 1
    assert [record.status for record in emulator.requests_log if "/images/" in record.path] == [429, 429, 429, 200]
    assert emulator.images_billed == 1


def test_without_a_limiter_the_hook_retries_429s_as_before(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[429], retry_after=0)

    with pytest.raises(XaiRateLimitError):
        hook.run_image_request(hook.build_request("an impatient owl"))  # max_retries=0


def test_with_a_limiter_a_503_still_counts_against_max_retries(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[503], retry_after=0)

    with pytest.raises(XaiServerError, match="HTTP 503"):
        hook.run_image_request(hook.build_request("an owl"), RateLimiter(4, LOG))


async def test_the_async_hook_sends_a_refused_request_again_without_spending_max_retries(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(status_script=[429, 429], retry_after=None)  # no Retry-After: the limiter's own backoff
    limiter = AsyncRateLimiter(4, LOG)

    async with hook.async_client() as client:
        result = await hook.arun_image_request(client, hook.build_request("a patient owl"), limiter)
        emulator.configure(status_script=[429])
        with pytest.raises(XaiRateLimitError):  # no limiter: retried as before, and max_retries is 0
            await hook.arun_image_request(client, hook.build_request("an impatient owl"))

    assert len(result.images) == 1
    assert emulator.images_billed == 1
