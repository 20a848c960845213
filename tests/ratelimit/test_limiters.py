"""The thread and asyncio wrappers of the pacer, alone and through the hook against the emulator."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from ratelimit_support import connect

from airflow_provider_xai_image.engine.ratelimit import DECREASE, AsyncRateLimiter, RateLimiter
from airflow_provider_xai_image.exceptions import XaiPossiblyBilledError, XaiRateLimitError, XaiServerError
from airflow_provider_xai_image.hooks.xai import XaiHook
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
    limiter = RateLimiter(50.0, LOG)

    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert limiter.send(api) == "image"
        limiter.log_final()

    assert api.calls == 4
    assert limiter.core.rate == pytest.approx(47.5 * DECREASE**3)  # cut once per 429: each was sent after a cut
    assert limiter.core.in_flight == 0
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == (
        "Pace 38.00 requests/s (was 47.50): slowed down 1 time(s) by 429s from xAI (rate limited; "
        "Retry-After: 0 s); 0 request(s) in flight, 1 429(s) so far."
    )
    assert len(messages) == 2  # the later cuts fall within the report interval: told with the next report
    assert messages[-1].startswith("Requests were paced at 24.32 requests/s at the end (started at 47.50)")


def test_threads_start_requests_at_the_pace_not_all_at_once() -> None:
    limiter = RateLimiter(20.0, LOG)
    api = RefusingApi(refusals=0, latency=0.3)
    started: list[float] = []

    def request() -> str:
        started.append(time.monotonic())
        return api()

    run_threads(limiter, request, count=8, threads=8)

    gaps = [later - earlier for earlier, later in itertools.pairwise(sorted(started))]
    assert min(gaps) >= 1 / limiter.core.rate * 0.9  # a loaded machine only makes them later
    assert api.most_in_flight > 1  # requests overlap: the pace decides, not a slot freed


def test_other_errors_free_their_place_and_propagate() -> None:
    limiter = RateLimiter(50.0, LOG)

    def broken() -> str:
        raise XaiServerError("POST", "images/generations", 500, "boom")

    with pytest.raises(XaiServerError):
        limiter.send(broken)
    assert limiter.core.in_flight == 0
    assert limiter.core.rate == 47.5
    assert limiter.send(RefusingApi(refusals=0)) == "image"


def test_a_refused_request_waits_for_its_retry_after() -> None:
    api = RefusingApi(refusals=1, latency=0.0, retry_after=0.3)
    limiter = RateLimiter(50.0, LOG)
    started = time.monotonic()

    assert limiter.send(api) == "image"

    assert time.monotonic() - started >= 0.3


def test_after_a_long_stretch_of_429s_every_request_stops_with_a_clear_error() -> None:
    api = RefusingApi(refusals=300, latency=0.0, retry_after=0.05)  # answered in the end if it never gave up
    limiter = RateLimiter(50.0, LOG, give_up_after=0.3)
    started = time.monotonic()

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(limiter.send, api) for _ in range(5)]
        errors = [future.exception(timeout=30) for future in futures]

    assert time.monotonic() - started < 20
    assert all(isinstance(error, XaiRateLimitError) for error in errors)
    message = str(errors[0])
    assert message.startswith("xAI POST /images/generations failed (HTTP 429): Rate limit exceeded; no request ")
    assert "succeeded for 0.3 s of 429s, so the task stops" in message


# asyncio ------------------------------------------------------------------------------------------


async def test_async_a_refused_request_is_sent_again_and_the_pace_is_cut() -> None:
    api = RefusingApi(refusals=3, latency=0.02)
    limiter = AsyncRateLimiter(100.0, LOG)

    results = await asyncio.gather(*(limiter.send(api.acall) for _ in range(20)))

    assert results == ["image"] * 20
    assert api.calls == 23
    assert limiter.core.in_flight == 0
    assert limiter.core.rate < 95.0
    assert limiter.report.refusals == 3


async def test_async_tasks_start_requests_at_the_pace() -> None:
    limiter = AsyncRateLimiter(20.0, LOG)
    api = RefusingApi(refusals=0, latency=0.3)
    started: list[float] = []

    async def request() -> str:
        started.append(time.monotonic())
        return await api.acall()

    await asyncio.gather(*(limiter.send(request) for _ in range(8)))

    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert min(gaps) >= 1 / limiter.core.rate * 0.9
    assert api.most_in_flight > 1


async def test_async_other_errors_and_cancellation_free_their_place() -> None:
    limiter = AsyncRateLimiter(50.0, LOG)

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
    limiter = AsyncRateLimiter(50.0, LOG, give_up_after=0.3)

    errors = await asyncio.gather(*(limiter.send(api.acall) for _ in range(4)), return_exceptions=True)

    assert all(isinstance(error, XaiRateLimitError) for error in errors)
    assert "no request succeeded for 0.3 s of 429s" in str(errors[-1])


# Through the hook ---------------------------------------------------------------------------------


def test_the_hook_sends_a_refused_request_again_without_spending_max_retries(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(status_script=[429, 429, 429], retry_after=0)

    result = hook.run_image_request(hook.build_request("a patient owl"), RateLimiter(50.0, LOG))

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
        hook.run_image_request(hook.build_request("an owl"), RateLimiter(50.0, LOG))


async def test_the_async_hook_sends_a_refused_request_again_without_spending_max_retries(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(status_script=[429, 429], retry_after=None)  # no Retry-After: the limiter's own backoff
    limiter = AsyncRateLimiter(50.0, LOG)

    async with hook.async_client() as client:
        result = await hook.arun_image_request(client, hook.build_request("a patient owl"), limiter)
        emulator.configure(status_script=[429])
        with pytest.raises(XaiRateLimitError):  # no limiter: retried as before, and max_retries is 0
            await hook.arun_image_request(client, hook.build_request("an impatient owl"))

    assert len(result.images) == 1
    assert emulator.images_billed == 1


def test_without_a_limiter_a_429_that_ends_a_possibly_billed_request_keeps_it_possibly_billed(
    emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, emulator, max_retries=1, max_ambiguous_retries=1)
    emulator.configure(generation_status_script=[500, 429], retry_after=0)
    hook = XaiHook()

    with pytest.raises(XaiPossiblyBilledError, match="HTTP 429") as raised:
        hook.run_image_request(hook.build_request("an owl"))  # 500 re-sent once as allowed, then 429: retries out

    assert raised.value.attempts == 1
    assert "after 1 earlier attempt(s) that may have reached xAI" in str(raised.value)
