"""One retry policy for every xAI call, sync and async: tenacity, exponential backoff with jitter,
``Retry-After`` honoured, and billing kept in mind.

A failure that surely was not served (the connection was never made, 429, 503) is retried for any
call. A failure that may have reached xAI (read timeout, dropped connection, 500/502/504, an
unreadable 200) is retried freely for free calls, but a paid request raises it as
:class:`~airflow_provider_xai_image.exceptions.XaiPossiblyBilledError` and is re-sent at most
``max_ambiguous_retries`` times (default 0): xAI bills a request it ran even when the client has gone.
A call made through a task's rate limiter (:mod:`airflow_provider_xai_image.engine.ratelimit`) leaves 429s to
the limiter (``retry_rate_limits=False``): they then never count against ``max_retries``. The sends of one
paid request that may have reached xAI are counted across every call that sends it
(:class:`AmbiguousAttempts`), so a limiter's re-sends neither reset ``max_ambiguous_retries`` nor drop
what may have been billed when a later error (a 429) ends the request.
"""

from __future__ import annotations

import logging
from typing import Any

import tenacity

from airflow_provider_xai_image.exceptions import (
    XaiApiError,
    XaiPossiblyBilledError,
    XaiRateLimitError,
    XaiTransientError,
)

#: Backoff bounds (seconds) when xAI does not say how long to wait.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: Longest ``Retry-After`` honoured; a longer one is capped so a task never sleeps for hours.
RETRY_AFTER_MAX = 120.0


class wait_retry_after_or_backoff(tenacity.wait.wait_base):
    """Wait what a 429's ``Retry-After`` asks for, else exponential backoff with full jitter."""

    def __init__(self, initial: float | None = None, maximum: float | None = None) -> None:
        self._backoff = tenacity.wait_random_exponential(
            multiplier=BACKOFF_INITIAL if initial is None else initial,
            max=BACKOFF_MAX if maximum is None else maximum,
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, XaiRateLimitError) and error.retry_after is not None:
            return min(error.retry_after, RETRY_AFTER_MAX)
        return self._backoff(retry_state)


class AmbiguousAttempts:
    """The sends of one paid request that may have reached xAI (and been billed), over all its calls."""

    def __init__(self) -> None:
        self.count = 0

    def ending(self, error: BaseException) -> BaseException:
        """The error that ends the request: ``error`` itself, or, when an earlier send may have been billed
        and ``error`` does not say so (a 429, a 503), an :class:`XaiPossiblyBilledError` that does.

        :param error: The error of the request's last send.
        """
        if not self.count or isinstance(error, XaiPossiblyBilledError) or not isinstance(error, XaiApiError):
            return error
        detail = f"{error.detail}, after {self.count} earlier attempt(s) that may have reached xAI"
        billed = XaiPossiblyBilledError(error.method, error.path, error.status, detail)
        billed.attempts = self.count
        return billed


class retry_transient_unless_billed(tenacity.retry_base):
    """Retry transient errors; a possibly billed one only ``max_ambiguous_retries`` times per request.

    :param max_ambiguous_retries: Re-sends allowed of a paid request that may have reached xAI.
    :param retry_rate_limits: Retry 429s too (False: a rate limiter handles them).
    :param ambiguous: The request's ambiguous sends so far, when more than one call sends it.
    """

    def __init__(
        self, max_ambiguous_retries: int, retry_rate_limits: bool = True, ambiguous: AmbiguousAttempts | None = None
    ) -> None:
        self.max_ambiguous_retries = max_ambiguous_retries
        self.retry_rate_limits = retry_rate_limits
        self.ambiguous = AmbiguousAttempts() if ambiguous is None else ambiguous

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if not isinstance(error, XaiTransientError):
            return False
        if isinstance(error, XaiRateLimitError):
            return self.retry_rate_limits
        if isinstance(error, XaiPossiblyBilledError):
            self.ambiguous.count += 1
            error.attempts = self.ambiguous.count  # each of them may have been billed
            return self.ambiguous.count <= self.max_ambiguous_retries
        return True


def retry_policy(
    max_retries: int,
    log: logging.Logger | Any,
    max_ambiguous_retries: int = 0,
    *,
    retry_rate_limits: bool = True,
    ambiguous: AmbiguousAttempts | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` or ``tenacity.AsyncRetrying`` (a fresh policy per call).

    :param max_retries: Retries of transient failures.
    :param log: Where each retry is told.
    :param max_ambiguous_retries: Re-sends allowed of a paid request that may have reached xAI.
    :param retry_rate_limits: Retry 429s too; False leaves them to the caller's rate limiter.
    :param ambiguous: The request's ambiguous sends so far, when more than one call sends it.
    """

    def log_retry(retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning("%s; retry %d of %d in %.2f s", error, retry_state.attempt_number, max_retries, wait)

    return {
        "retry": retry_transient_unless_billed(max_ambiguous_retries, retry_rate_limits, ambiguous),
        "stop": tenacity.stop_after_attempt(max_retries + 1),
        "wait": wait_retry_after_or_backoff(),
        "before_sleep": log_retry,
        "reraise": True,
    }
