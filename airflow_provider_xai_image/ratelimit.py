"""Slowing a whole task down when xAI answers 429, and speeding it up again when the 429s stop.

One :class:`AdaptiveConcurrency` per task holds the decisions (sans-IO: it is told the time and what
happened to each request); :class:`RateLimiter` (threads: the worker) and :class:`AsyncRateLimiter`
(asyncio: the trigger) wrap it around each paid request, through
``XaiHook.run_image_request(..., limiter=...)``.

- **Slow down** on a 429: the allowed concurrency is halved (never below 1) and every new request waits
  until xAI's ``Retry-After`` (else a backoff of its own: 0.5 s doubling up to 30 s, with jitter). A 429
  was surely not billed, so the refused request is sent again later; it never counts against
  ``max_retries``. 429s of requests sent before the slowdown belong to the same event.
- **Pace** while slowed down: requests are spread over one round trip (the observed latency divided by
  the allowed concurrency) instead of leaving together when a pause ends.
- **Speed up** after a run of successes as long as the allowed concurrency (a round trip's worth): one
  more request may be in flight, up to ``max_concurrency``. The step back to the concurrency that last
  drew a 429 waits for :data:`CAUTIOUS_RUNS` such runs, so a task does not bounce off the limit.
- **Give up** when no request succeeded for ``give_up_after`` seconds while 429s came (default
  :data:`GIVE_UP_AFTER`): :class:`XaiRateLimitError`, which Airflow retries; the retry resumes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from airflow_provider_xai_image.exceptions import XaiRateLimitError
from airflow_provider_xai_image.retry import BACKOFF_INITIAL, BACKOFF_MAX, RETRY_AFTER_MAX

Result = TypeVar("Result")

#: Seconds of 429s without one success after which a task stops (a retry of the task resumes).
GIVE_UP_AFTER = 600.0
#: Runs of successes needed for the step back to the concurrency that last drew a 429.
CAUTIOUS_RUNS = 16
#: Weight of the newest latency in the smoothed round trip (as TCP's SRTT).
ROUND_TRIP_WEIGHT = 0.125


class Ticket(NamedTuple):
    """A request let through: the slowdown it was sent after (``epoch``) and when it was sent."""

    epoch: int
    sent_at: float


@dataclass(frozen=True)
class Change:
    """A change of the allowed concurrency, as the task log tells it.

    :param before: Requests allowed in flight before.
    :param after: Requests allowed in flight now.
    :param in_flight: Requests in flight when it changed.
    :param maximum: The task's ``max_concurrency``.
    :param pause: Seconds new requests wait (a slowdown).
    :param retry_after: xAI's ``Retry-After`` of the 429 (a slowdown), if it sent one.
    :param successes: The run of successes that earned a speed-up.
    """

    before: int
    after: int
    in_flight: int
    maximum: int
    pause: float = 0.0
    retry_after: float | None = None
    successes: int = 0

    def describe(self) -> str:
        if self.after <= self.before:
            said = "no Retry-After" if self.retry_after is None else f"Retry-After {self.retry_after:g} s"
            how = f"from {self.before} to {self.after}" if self.after < self.before else f"to stay at {self.after}"
            return (
                f"xAI answered 429 (rate limited, {said}): slowing down {how} request(s) in flight "
                f"({self.in_flight} still in flight); new requests wait {self.pause:.1f} s"
            )
        cap = "full speed" if self.after == self.maximum else f"at most {self.maximum}"
        return (
            f"{self.successes} request(s) in a row succeeded: speeding up from {self.before} to {self.after} "
            f"request(s) in flight ({cap})"
        )


class AdaptiveConcurrency:
    """
    The decisions of the rate limiter, without threads, clocks or I/O: callers pass the time.

    :param max_concurrency: Most requests in flight; also where it starts.
    :param give_up_after: Seconds of 429s without a success after which :attr:`gave_up` is set.
    :param jitter: Returns a number in [0, 1) that spreads the backoff (``random.random``).
    """

    def __init__(
        self, max_concurrency: int, *, give_up_after: float = GIVE_UP_AFTER, jitter: Callable[[], float] = random.random
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency: must be at least 1, got {max_concurrency!r}")
        self.max_concurrency = max_concurrency
        self.give_up_after = give_up_after
        #: Requests allowed in flight now.
        self.limit = max_concurrency
        self.in_flight = 0
        #: Set once no request succeeded for ``give_up_after`` seconds of 429s; nothing is admitted after.
        self.gave_up = False
        self._jitter = jitter
        self._epoch = 0
        self._run = 0
        self._ceiling: int | None = None
        self._backoff = BACKOFF_INITIAL
        self._resume_at = -math.inf
        self._next_send_at = -math.inf
        self._round_trip: float | None = None
        self._last_progress: float | None = None

    def admit(self, now: float) -> Ticket | None:
        """Let one request be sent at ``now`` (it takes a slot), or None: ask again after :meth:`wait_time`."""
        if self.gave_up or now < max(self._resume_at, self._next_send_at) or self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        if self._last_progress is None:
            self._last_progress = now
        if self.limit < self.max_concurrency and self._round_trip is not None:
            self._next_send_at = now + self._round_trip / self.limit
        return Ticket(self._epoch, now)

    def wait_time(self, now: float) -> float | None:
        """Seconds a request not admitted at ``now`` waits before asking again; None: until a slot is freed."""
        if self.gave_up:
            return 0.0
        ready_at = max(self._resume_at, self._next_send_at)
        return ready_at - now if now < ready_at else None

    def succeeded(self, ticket: Ticket, now: float) -> Change | None:
        """The request of ``ticket`` was answered; returns the speed-up it completes, if any."""
        self.in_flight -= 1
        self._last_progress = now
        took = now - ticket.sent_at
        self._round_trip = (
            took if self._round_trip is None else self._round_trip + ROUND_TRIP_WEIGHT * (took - self._round_trip)
        )
        if ticket.epoch != self._epoch:
            return None  # sent before the last slowdown: says nothing about the concurrency allowed since
        self._backoff = BACKOFF_INITIAL
        if self.limit >= self.max_concurrency:
            return None
        self._run += 1
        cautious = self.limit + 1 == self._ceiling
        if self._run < self.limit * (CAUTIOUS_RUNS if cautious else 1):
            return None
        change = Change(self.limit, self.limit + 1, self.in_flight, self.max_concurrency, successes=self._run)
        self.limit += 1
        self._run = 0
        return change

    def refused(self, ticket: Ticket, now: float, retry_after: float | None) -> Change | None:
        """The request of ``ticket`` was answered 429 (to be sent again); returns the slowdown it starts,
        None when it belongs to one already under way (or when the limiter gave up: see :attr:`gave_up`)."""
        self.in_flight -= 1
        since = now if self._last_progress is None else self._last_progress
        if now - since >= self.give_up_after:
            self.gave_up = True
            return None
        current = ticket.epoch == self._epoch
        if retry_after is not None:
            pause = min(retry_after, RETRY_AFTER_MAX)
        elif current:
            pause = self._backoff * (0.5 + self._jitter() / 2)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        else:
            pause = 0.0
        self._resume_at = max(self._resume_at, now + pause)
        if not current:
            return None
        change = Change(self.limit, max(1, self.limit // 2), self.in_flight, self.max_concurrency, pause, retry_after)
        if change.after < self.limit:
            self._ceiling = self.limit
        self.limit = change.after
        self._epoch += 1
        self._run = 0
        return change

    def released(self) -> None:
        """A request let through failed otherwise than with a 429 (its own retry rules apply)."""
        self.in_flight -= 1


class _Limiter:
    """What both wrappers share: the core, the task log and the error that stops a task."""

    def __init__(self, max_concurrency: int, log: logging.Logger | Any, give_up_after: float) -> None:
        self.core = AdaptiveConcurrency(max_concurrency, give_up_after=give_up_after)
        self._log = log
        #: The arguments of the error every request raises once the limiter gave up.
        self._stop: tuple[str, str, int | None, str, float | None] | None = None

    def _refused(self, ticket: Ticket, error: XaiRateLimitError) -> None:
        change = self.core.refused(ticket, time.monotonic(), error.retry_after)
        if change is not None:
            self._log.warning("%s.", change.describe())
        if self.core.gave_up and self._stop is None:
            detail = (
                f"{error.detail}; no request succeeded for {self.core.give_up_after:g} s of 429s, so the task "
                "stops (a retry resumes where it stopped; share the limit between tasks with an Airflow pool, "
                "or lower max_concurrency)"
            )
            self._stop = (error.method, error.path, error.status, detail, error.retry_after)

    def _succeeded(self, ticket: Ticket) -> None:
        change = self.core.succeeded(ticket, time.monotonic())
        if change is not None:
            self._log.info("%s.", change.describe())

    def _admitted(self) -> Ticket | None:
        """A ticket when a request may go now; None to wait; raises once the limiter gave up."""
        if self._stop is not None:
            raise XaiRateLimitError(*self._stop)
        return self.core.admit(time.monotonic())


class RateLimiter(_Limiter):
    """
    The rate limiter for the worker's threads: one per task, shared by all its requests.

    :param max_concurrency: Most requests in flight (the task's ``max_concurrency``).
    :param log: Where slowdowns and speed-ups are told (the task's log).
    :param give_up_after: Seconds of 429s without a success after which requests raise.
    """

    def __init__(self, max_concurrency: int, log: logging.Logger | Any, give_up_after: float = GIVE_UP_AFTER) -> None:
        super().__init__(max_concurrency, log, give_up_after)
        self._changed = threading.Condition()

    def send(self, request: Callable[[], Result]) -> Result:
        """
        Call ``request`` (one HTTP request that raises :class:`XaiRateLimitError` on a 429) when the
        limiter lets it through, and again after each 429; return its result.

        :param request: Sends the request once.
        :raises XaiRateLimitError: No request succeeded for ``give_up_after`` seconds of 429s.
        """
        while True:
            ticket = self._admit()
            try:
                result = request()
            except XaiRateLimitError as error:
                with self._changed:
                    self._refused(ticket, error)
                    self._changed.notify_all()
                continue
            except BaseException:
                with self._changed:
                    self.core.released()
                    self._changed.notify_all()
                raise
            with self._changed:
                self._succeeded(ticket)
                self._changed.notify_all()
            return result

    def _admit(self) -> Ticket:
        with self._changed:
            while (ticket := self._admitted()) is None:
                self._changed.wait(self.core.wait_time(time.monotonic()))
            return ticket


class AsyncRateLimiter(_Limiter):
    """
    The rate limiter for one event loop (the trigger): one per trigger run, shared by all its requests.

    :param max_concurrency: Most requests in flight (the task's ``max_concurrency``).
    :param log: Where slowdowns and speed-ups are told (the trigger's log).
    :param give_up_after: Seconds of 429s without a success after which requests raise.
    """

    def __init__(self, max_concurrency: int, log: logging.Logger | Any, give_up_after: float = GIVE_UP_AFTER) -> None:
        super().__init__(max_concurrency, log, give_up_after)
        self._changed = asyncio.Event()

    async def send(self, request: Callable[[], Awaitable[Result]]) -> Result:
        """
        Await ``request()`` (one HTTP request that raises :class:`XaiRateLimitError` on a 429) when the
        limiter lets it through, and again after each 429; return its result.

        :param request: Sends the request once.
        :raises XaiRateLimitError: No request succeeded for ``give_up_after`` seconds of 429s.
        """
        while True:
            ticket = await self._admit()
            try:
                result = await request()
            except XaiRateLimitError as error:
                self._refused(ticket, error)
                self._wake()
                continue
            except BaseException:
                self.core.released()
                self._wake()
                raise
            self._succeeded(ticket)
            self._wake()
            return result

    def _wake(self) -> None:
        """Wake every waiting request (they ask the core again)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _admit(self) -> Ticket:
        while (ticket := self._admitted()) is None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.core.wait_time(time.monotonic()))
        return ticket
