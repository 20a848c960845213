"""One retry policy for every xAI call, sync and async: tenacity, exponential backoff with jitter,
``Retry-After`` honoured, only transient errors retried."""

from __future__ import annotations

import logging
from typing import Any

import tenacity

from airflow_provider_xai_image.exceptions import XaiRateLimitError, XaiTransientError

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


def retry_policy(max_retries: int, log: logging.Logger | Any) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` or ``tenacity.AsyncRetrying``."""

    def log_retry(retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning("%s; retry %d of %d in %.2f s", error, retry_state.attempt_number, max_retries, wait)

    return {
        "retry": tenacity.retry_if_exception_type(XaiTransientError),
        "stop": tenacity.stop_after_attempt(max_retries + 1),
        "wait": wait_retry_after_or_backoff(),
        "before_sleep": log_retry,
        "reraise": True,
    }
