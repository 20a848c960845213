"""Typed errors of the xAI provider. Messages name the endpoint, the status and xAI's own text, never the key.

Plain Python, so that provider discovery can import them without Airflow. Two families matter to a
task: :class:`XaiPermanentError` (a retry cannot help: operators fail the task without retries) and
:class:`XaiTransientError` (worth retrying, and a retried task resumes).
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class XaiError(Exception):
    """Base class of every error raised by this provider."""


class XaiPermanentError(XaiError):
    """A failure that a retry cannot fix (bad key, bad request, budget, moderation, refused batch)."""


class XaiConnectionConfigError(XaiPermanentError):
    """The Airflow connection is missing or incomplete."""


class XaiApiError(XaiError):
    """xAI answered with an error status, or the call failed on the way."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        shown_status = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"xAI {method} /{path} failed ({shown_status}): {detail}")

    def event_fields(self) -> dict[str, Any]:
        """What :func:`error_from_event` needs to raise this error again (on the worker, after a trigger)."""
        return {"method": self.method, "path": self.path, "status": self.status, "detail": self.detail}


class XaiAuthError(XaiApiError, XaiPermanentError):
    """401/403, or a 400 that says the key was refused: the API key is wrong, revoked or lacks permission."""


class XaiBadRequestError(XaiApiError, XaiPermanentError):
    """400/404/413/422 and other client errors: retrying the same request will not help."""


class XaiTransientError(XaiApiError):
    """An error worth retrying: rate limits, server errors, broken connections or bodies."""


class XaiRateLimitError(XaiTransientError):
    """429: not served, so not billed; ``retry_after`` is xAI's ``Retry-After`` when it sent one."""

    def __init__(self, method: str, path: str, status: int | None, detail: str, retry_after: float | None = None):
        super().__init__(method, path, status, detail)
        self.retry_after = retry_after

    def event_fields(self) -> dict[str, Any]:
        return {**super().event_fields(), "retry_after": self.retry_after}


class XaiServerError(XaiTransientError):
    """A 5xx, a connection error, a timeout or an unreadable body.

    ``maybe_processed`` is False only where xAI surely did not run the request (the connection was
    never made, or 503): anything else may have reached xAI, and a paid request may have been billed.
    """

    def __init__(self, method: str, path: str, status: int | None, detail: str, maybe_processed: bool = True):
        super().__init__(method, path, status, detail)
        self.maybe_processed = maybe_processed

    def event_fields(self) -> dict[str, Any]:
        return {**super().event_fields(), "maybe_processed": self.maybe_processed}


class XaiPossiblyBilledError(XaiServerError):
    """A paid request (generate, edit, batch creation) failed in a way that leaves open whether xAI ran it.

    It is not re-sent (unless the connection's ``max_ambiguous_retries`` allows it): re-sending may
    pay twice. Records and the manifest count its estimated cost as ``possibly_billed_usd``.
    """

    def __init__(self, method: str, path: str, status: int | None, detail: str, maybe_processed: bool = True):
        super().__init__(method, path, status, f"{detail}; the request may have been billed", maybe_processed)
        self.detail = detail
        #: How many times the request was sent with this outcome (``max_ambiguous_retries`` + 1 at most).
        self.attempts = 1


class XaiRequestValidationError(XaiPermanentError, ValueError):
    """A request parameter is outside what the xAI API accepts; raised before anything is sent."""

    @classmethod
    def from_pydantic(
        cls, error: ValidationError, title: str = "Invalid xAI image request"
    ) -> XaiRequestValidationError:
        problems = []
        for item in error.errors(include_url=False):
            where = ".".join(str(part) for part in item["loc"]) or "request"
            got = item.get("input")
            shown = f" (got {reprlib.repr(got)})" if not isinstance(got, dict) else ""
            problems.append(f"{where}: {item['msg']}{shown}")
        return cls(f"{title}: " + "; ".join(problems))


class XaiContentFilteredError(XaiPermanentError):
    """xAI's moderation filtered an image (``on_moderation="fail"``)."""


class XaiImageError(XaiError):
    """An image could not be used: expired URL, cut short, not an image, over the size limit."""


class XaiSourceImageError(XaiImageError, XaiPermanentError):
    """A source image for an edit is missing, of a type xAI does not take, or too large."""


class XaiStorageError(XaiError):
    """Storing an image, a record or the manifest failed after the retries (a retried task resumes)."""


class XaiStorageConfigError(XaiStorageError, XaiPermanentError):
    """The output location cannot be used: its connection does not exist, or it cannot be written."""


class XaiBudgetExceededError(XaiPermanentError):
    """The estimated or actual cost would pass ``max_cost_usd``."""


class XaiBatchFailedError(XaiError):
    """A batch expired or more of its requests failed than allowed, or its results were not all stored."""


class XaiBatchRefusedError(XaiBatchFailedError, XaiPermanentError):
    """xAI cancelled the batch (``cancel_by_xai_message``: it refused the input), or it was cancelled."""


class XaiBatchTimeoutError(XaiBatchFailedError):
    """The batch job was still pending when the wait timed out (a sensor raises ``AirflowSensorTimeout``)."""


class XaiPlanError(XaiError):
    """The plan of a deferred generation cannot be written or read back, or is not the one its worker wrote
    (its digest differs): nothing is sent, and a retried task plans again."""


def error_to_event(error: BaseException) -> dict[str, Any]:
    """The error as JSON for a trigger event: its type and what it takes to raise it again."""
    fields = error.event_fields() if isinstance(error, XaiApiError) else {"message": str(error)}
    return {"error_type": type(error).__name__, "error": fields}


def error_from_event(event: dict[str, Any]) -> XaiError:
    """The typed error a trigger reported (:func:`error_to_event`); :class:`XaiError` for unknown types."""
    error_type = globals().get(str(event.get("error_type")))
    fields = dict(event.get("error") or {})
    if isinstance(error_type, type) and issubclass(error_type, XaiApiError):
        return error_type(**fields)
    message = str(fields.get("message", event.get("message", "unknown error")))
    if isinstance(error_type, type) and issubclass(error_type, XaiError):
        return error_type(message)
    return XaiError(f"{event.get('error_type')}: {message}")
