"""Pacing a task's image requests by rate: as fast as xAI's rate limit allows, slower when xAI answers 429.

xAI limits each image model to a number of requests per second, whatever their latency, so requests
start at a pace (requests per second) rather than when one in flight ends. One :class:`RatePacer` per task
(its requests all use one model) holds the decisions, sans-IO: it is told the time and what happened to
each request. :class:`RateLimiter` (threads: the worker) and :class:`AsyncRateLimiter` (asyncio: the
trigger) wrap it around each paid request, through ``XaiHook.run_image_request(..., limiter=...)``.
How many requests may be in flight at once is left to the caller (its threads or its semaphore).

- **Start** at :data:`HEADROOM` of the connection's ``requests_per_second`` (xAI's limit for the team):
  a limit counted over a sliding second refuses about every other request sent exactly at it, since
  arrival times jitter by milliseconds.
- **Back off** on a 429: the pace is multiplied by :data:`DECREASE` (never below :data:`MIN_RATE`). A
  429 was surely not billed, so the refused request is sent again later; it never counts against
  ``max_retries``. 429s of requests sent before the slowdown belong to the same event.
- **Honour Retry-After**: the refused request is not sent again before it. A limit per second answers
  ``Retry-After: 1`` (HTTP counts whole seconds) however soon a request is allowed again, so only a longer
  one (:data:`PAUSE_AFTER`) holds every request of the task: holding them all for each 1 would cost a
  second of the limit per 429.
- **Speed up** after each round of successes (as many as the pace: about a second's worth) of requests
  sent since the last slowdown. A task whose last 429 came near the limit given has the limit to itself:
  it climbs halfway back to :data:`HEADROOM` of the pace that drew it each round, then probes above by
  :data:`PROBE_STEP` of the limit every :data:`PROBE_ROUNDS` rounds, so it stays long just under the
  limit. Otherwise (the limit is shared with other tasks, or a raised limit is being found) the pace grows
  each round by a step that starts at :data:`PROBE_STEP` of the limit after every slowdown and doubles:
  the growth depends only on the time since the last 429, never on the pace before it, so tasks sharing
  one limit converge to fair shares without talking to each other (additive increase, multiplicative
  decrease), and a task the others stopped sharing with soon uses the whole limit.
- **Give up** when no request succeeded for ``give_up_after`` seconds while 429s came (default
  :data:`GIVE_UP_AFTER`): :class:`XaiRateLimitError`, which Airflow retries; the retry resumes.

Changes of pace reach the task log at most every few seconds
(:class:`~airflow_provider_xai_image.engine.pace_report.PaceReport`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from airflow_provider_xai_image.engine.pace_report import PaceReport
from airflow_provider_xai_image.exceptions import XaiRateLimitError
from airflow_provider_xai_image.hooks.retry import RETRY_AFTER_MAX

Result = TypeVar("Result")

#: Requests a task has in flight at most when it sets no ``max_concurrency``. Reaching 5 requests/s takes
#: ``5 x latency`` of them: 128 reach it for requests of up to ~25 s (every model but ``grok-imagine-image-2.0``
#: at 2k, 60-80 s, for which a task sets ``max_concurrency`` of ~400). Each holds a thread (worker) or an
#: asyncio task (triggerer) and a pooled connection: the cap guards memory and sockets, not xAI's limit.
IN_FLIGHT_CAP = 128
#: Seconds of 429s without one success after which a task stops (a retry of the task resumes).
GIVE_UP_AFTER = 600.0
#: Share of the limit a task starts at, and settles at below the pace that last drew a 429.
HEADROOM = 0.95
#: The pace is multiplied by this on a 429.
DECREASE = 0.8
#: A ``Retry-After`` longer than this (seconds) holds every request of the task, not only the refused one.
PAUSE_AFTER = 1.0
#: Slowest pace (requests/s): one request every 20 s.
MIN_RATE = 0.05
#: Rounds of successes before each probe upward near the limit given.
PROBE_ROUNDS = 4
#: Smallest step of the pace upward, as a share of the limit given.
PROBE_STEP = 0.01


def in_flight_cap(max_concurrency: int | None) -> int:
    """Most requests a task has in flight: its ``max_concurrency``, else :data:`IN_FLIGHT_CAP`."""
    return IN_FLIGHT_CAP if max_concurrency is None else max_concurrency


class Ticket(NamedTuple):
    """A request let through, sent after the ``epoch``-th slowdown."""

    epoch: int


@dataclass(frozen=True)
class Change:
    """A change of pace.

    :param before: Requests per second before.
    :param after: Requests per second now.
    :param refused: True: a 429 slowed the pace down; False: successes sped it up.
    :param retry_after: xAI's ``Retry-After`` of the 429, if it sent one.
    """

    before: float
    after: float
    refused: bool
    retry_after: float | None = None


class RatePacer:
    """
    The decisions of the rate limiter, without threads, clocks or I/O: callers pass the time.

    :param rate: Requests per second xAI allows the team for this model (the connection's
        ``requests_per_second``); the pace starts at :data:`HEADROOM` of it.
    :param give_up_after: Seconds of 429s without a success after which :attr:`gave_up` is set.
    """

    def __init__(self, rate: float, *, give_up_after: float = GIVE_UP_AFTER) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate: must be requests per second > 0, got {rate!r}")
        #: Requests per second now.
        self.rate = rate * HEADROOM
        #: The limit given (requests per second).
        self.limit = rate
        #: The pace that last drew a 429 (at first the limit).
        self.ceiling = rate
        self.give_up_after = give_up_after
        self.in_flight = 0
        #: Set once no request succeeded for ``give_up_after`` seconds of 429s; nothing is admitted after.
        self.gave_up = False
        self._min_step = rate * PROBE_STEP
        self._probe_step = self._min_step
        self._epoch = 0
        self._successes = 0
        self._rounds = 0
        self._next_send_at = -math.inf
        self._last_progress: float | None = None

    def admit(self, now: float) -> Ticket | None:
        """Let one request be sent at ``now``, or None: ask again after :meth:`wait_time`."""
        if self.gave_up or now < self._next_send_at:
            return None
        self.in_flight += 1
        if self._last_progress is None:
            self._last_progress = now
        self._next_send_at = now + 1 / self.rate
        return Ticket(self._epoch)

    def wait_time(self, now: float) -> float:
        """Seconds until a request may be sent (0 once the pacer gave up: the caller then stops)."""
        return 0.0 if self.gave_up else max(0.0, self._next_send_at - now)

    def succeeded(self, ticket: Ticket, now: float) -> Change | None:
        """The request of ``ticket`` was answered; returns the speed-up it completes, if any."""
        self.in_flight -= 1
        self._last_progress = now
        if ticket.epoch != self._epoch:
            return None  # sent before the last slowdown: says nothing about the pace since
        self._successes += 1
        if self._successes < math.ceil(self.rate):
            return None
        self._successes = 0
        near = self.limit * HEADROOM
        settled = self.ceiling * HEADROOM
        if self.ceiling >= near and self.rate < settled:
            return self._change(min(settled, self.rate + max(self._min_step, (settled - self.rate) / 2)))
        if near <= self.rate <= max(self.limit, self.ceiling):
            self._rounds += 1
            if self._rounds < PROBE_ROUNDS:
                return None
            self._rounds = 0
            return self._change(self.rate + self._min_step)
        step, self._probe_step = self._probe_step, self._probe_step * 2
        return self._change(self.rate + step)

    def refused(self, ticket: Ticket, now: float, retry_after: float | None) -> Change | None:
        """The request of ``ticket`` was answered 429 (to be sent again); returns the slowdown it starts,
        None when it belongs to one already under way (or when the pacer gave up: see :attr:`gave_up`)."""
        self.in_flight -= 1
        since = now if self._last_progress is None else self._last_progress
        if now - since >= self.give_up_after:
            self.gave_up = True
            return None
        if retry_after is not None and retry_after > PAUSE_AFTER:
            self._next_send_at = max(self._next_send_at, now + self.resend_delay(retry_after))
        if ticket.epoch != self._epoch:
            return None
        self.ceiling = self.rate
        self._epoch += 1
        self._rounds = 0
        self._probe_step = self._min_step
        return self._change(max(MIN_RATE, self.rate * DECREASE), retry_after, refused=True)

    @staticmethod
    def resend_delay(retry_after: float | None) -> float:
        """Seconds a refused request waits before it is sent again: xAI's ``Retry-After`` (capped at
        ``RETRY_AFTER_MAX``), else none beyond the pace."""
        return 0.0 if retry_after is None else min(retry_after, RETRY_AFTER_MAX)

    def released(self) -> None:
        """A request let through failed otherwise than with a 429 (its own retry rules apply)."""
        self.in_flight -= 1

    def _change(self, rate: float, retry_after: float | None = None, *, refused: bool = False) -> Change:
        change = Change(self.rate, rate, refused, retry_after)
        self.rate = rate
        self._successes = 0
        return change


class _Limiter:
    """
    What both limiters share: the pacer, the task log and the error that stops a task. One per task (or
    trigger run), shared by all its requests.

    :param rate: Requests per second xAI allows (the connection's ``requests_per_second``).
    :param log: Where changes of pace are told (the task's or the trigger's log).
    :param give_up_after: Seconds of 429s without a success after which requests raise.
    """

    #: Makes the lock held by the one request waiting for the next send time; the others queue behind it.
    _turn_lock: Callable[[], Any]

    def __init__(self, rate: float, log: logging.Logger | Any, give_up_after: float = GIVE_UP_AFTER) -> None:
        self.core = RatePacer(rate, give_up_after=give_up_after)
        self.report = PaceReport(self.core.rate)
        self._log = log
        self._turn = self._turn_lock()
        #: The arguments of the error every request raises once the limiter gave up.
        self._stop: tuple[str, str, int | None, str, float | None] | None = None

    def log_final(self) -> None:
        """Tell the task log where the pace ended."""
        self._log.info("%s", self.report.final(self.core.rate))

    def _refused(self, ticket: Ticket, error: XaiRateLimitError) -> None:
        now = time.monotonic()
        self.report.refused()
        change = self.core.refused(ticket, now, error.retry_after)
        if change is not None and (message := self.report.changed(change, self.core.in_flight, now)):
            self._log.warning("%s.", message)
        if self.core.gave_up and self._stop is None:
            detail = (
                f"{error.detail}; no request succeeded for {self.core.give_up_after:g} s of 429s, so the task "
                "stops (a retry resumes where it stopped; lower the connection's requests_per_second, or "
                "share the limit between tasks with an Airflow pool)"
            )
            self._stop = (error.method, error.path, error.status, detail, error.retry_after)

    def _succeeded(self, ticket: Ticket) -> None:
        now = time.monotonic()
        change = self.core.succeeded(ticket, now)
        if change is not None and (message := self.report.changed(change, self.core.in_flight, now)):
            self._log.info("%s.", message)

    def _admitted(self) -> tuple[Ticket | None, float]:
        """A ticket when a request may go now, else the seconds to wait; raises once the limiter gave up."""
        if self._stop is not None:
            raise XaiRateLimitError(*self._stop)
        now = time.monotonic()
        return self.core.admit(now), self.core.wait_time(now)


class RateLimiter(_Limiter):
    """The rate limiter for the worker's threads."""

    _turn_lock = threading.Lock

    def __init__(self, rate: float, log: logging.Logger | Any, give_up_after: float = GIVE_UP_AFTER) -> None:
        super().__init__(rate, log, give_up_after)
        self._lock = threading.Lock()

    def send(self, request: Callable[[], Result]) -> Result:
        """
        Call ``request`` (one HTTP request that raises :class:`XaiRateLimitError` on a 429) at the pace,
        and again after each 429; return its result.

        :param request: Sends the request once.
        :raises XaiRateLimitError: No request succeeded for ``give_up_after`` seconds of 429s.
        """
        while True:
            ticket = self._admit()
            try:
                result = request()
            except XaiRateLimitError as error:
                with self._lock:
                    self._refused(ticket, error)
                time.sleep(self.core.resend_delay(error.retry_after))
                continue
            except BaseException:
                with self._lock:
                    self.core.released()
                raise
            with self._lock:
                self._succeeded(ticket)
            return result

    def _admit(self) -> Ticket:
        with self._turn:
            while True:
                with self._lock:
                    ticket, wait = self._admitted()
                if ticket is not None:
                    return ticket
                time.sleep(wait)


class AsyncRateLimiter(_Limiter):
    """The rate limiter for one event loop (the trigger): its requests wait for their turn in order."""

    _turn_lock = asyncio.Lock

    async def send(self, request: Callable[[], Awaitable[Result]]) -> Result:
        """
        Await ``request()`` (one HTTP request that raises :class:`XaiRateLimitError` on a 429) at the pace,
        and again after each 429; return its result.

        :param request: Sends the request once.
        :raises XaiRateLimitError: No request succeeded for ``give_up_after`` seconds of 429s.
        """
        while True:
            ticket = await self._admit()
            try:
                result = await request()
            except XaiRateLimitError as error:
                self._refused(ticket, error)
                await asyncio.sleep(self.core.resend_delay(error.retry_after))
                continue
            except BaseException:
                self.core.released()
                raise
            self._succeeded(ticket)
            return result

    async def _admit(self) -> Ticket:
        async with self._turn:
            while True:
                ticket, wait = self._admitted()
                if ticket is not None:
                    return ticket
                await asyncio.sleep(wait)
