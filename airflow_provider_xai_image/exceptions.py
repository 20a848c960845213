"""Typed errors of the xAI provider. Messages name the endpoint, the status and xAI's own text, never the key."""

from __future__ import annotations


class XaiError(Exception):
    """Base class of every error raised by this provider (plain Python, so the emulator needs no Airflow)."""


class XaiConnectionConfigError(XaiError):
    """The Airflow connection is missing or incomplete."""


class XaiApiError(XaiError):
    """xAI answered with an error status."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        shown_status = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"xAI {method} /{path} failed ({shown_status}): {detail}")


class XaiAuthError(XaiApiError):
    """401/403: the API key is wrong, revoked or lacks permission."""


class XaiBadRequestError(XaiApiError):
    """400/404/413/422 and other client errors: retrying the same request will not help."""


class XaiTransientError(XaiApiError):
    """An error worth retrying: rate limits, server errors, broken connections or bodies."""


class XaiRateLimitError(XaiTransientError):
    """429, still returned after the retries ran out."""

    def __init__(self, method: str, path: str, status: int | None, detail: str, retry_after: float | None):
        super().__init__(method, path, status, detail)
        self.retry_after = retry_after


class XaiServerError(XaiTransientError):
    """5xx, a connection error, a timeout or an unreadable body, still failing after the retries."""


class XaiContentFilteredError(XaiError):
    """xAI's moderation filtered an image (``on_moderation="fail"``)."""


class XaiImageError(XaiError):
    """An image could not be used: expired URL, not an image, over the size limit, unreadable source."""


class XaiBudgetExceededError(XaiError):
    """The estimated or actual cost would pass ``max_cost_usd``."""


class XaiBatchFailedError(XaiError):
    """A batch was cancelled, expired, or more of its requests failed than allowed."""
