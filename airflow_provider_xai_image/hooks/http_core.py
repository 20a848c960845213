"""The one HTTP core of the hook: what a request is, its timeout, how an answer (or no answer) is classified,
and the retry policy. The sync (``requests``) and async (``httpx``) transports only move bytes.

An answer is *unsent* (no connection was made: safe to re-send), *maybe billed* (a paid request that may
have reached xAI: :class:`XaiPossiblyBilledError`, re-sent only as ``max_ambiguous_retries`` allows) or
*permanent* (4xx other than 429: never retried); the retry policy is :mod:`~airflow_provider_xai_image.hooks.retry`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from airflow_provider_xai_image.connection import XaiConnectionSettings
from airflow_provider_xai_image.exceptions import (
    XaiApiError,
    XaiAuthError,
    XaiBadRequestError,
    XaiPossiblyBilledError,
    XaiRateLimitError,
    XaiServerError,
)
from airflow_provider_xai_image.hooks.retry import AmbiguousAttempts, retry_policy

#: Words of a 400's error text that mean the key was refused (xAI answers some wrong keys with 400).
_KEY_REFUSED_WORDS = ("api key", "api-key", "apikey")


@dataclass(frozen=True)
class ApiRequest:
    """One request to the API, whichever transport sends it.

    :param method: HTTP method.
    :param path: Path under the base URL.
    :param json_body: JSON body, if any.
    :param params: Query parameters, if any.
    :param files: Multipart files, if any (sync transport only).
    :param data: Multipart form fields, if any (sync transport only).
    :param paid: The request costs money: a failure that may have reached xAI is "maybe billed".
    """

    method: str
    path: str
    json_body: Any = None
    params: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    paid: bool = False

    def timeout(self, settings: XaiConnectionSettings) -> tuple[float, float]:
        """``(connect, read)`` seconds: image requests get the long read timeout.

        :param settings: The connection's settings.
        """
        return settings.timeout(image_request=self.paid and self.method == "POST" and self.path.startswith("images/"))

    def answer(self, status: int, body: str, retry_after: str | None) -> dict[str, Any]:
        """The JSON object of a successful answer, or the typed error of a failed one.

        :param status: The HTTP status.
        :param body: The answer's text, the key scrubbed from it.
        :param retry_after: The ``Retry-After`` header, if any.
        """
        return read_response(self.method, self.path, status, body, retry_after, paid=self.paid)

    def no_answer(self, error: Exception, *, unsent: bool) -> XaiServerError:
        """The error of a request that got no HTTP answer. Only the type of the library's error is shown: its
        text may quote a header, hence the key.

        :param error: The transport's error.
        :param unsent: It surely did not reach xAI (no connection was made).
        """
        what = (
            "no connection could be made" if unsent else "the connection broke or timed out after the request was sent"
        )
        detail = f"{type(error).__name__} ({what})"
        return server_error(self.method, self.path, None, detail, maybe_processed=not unsent, paid=self.paid)


def retrying(
    settings: XaiConnectionSettings, log: Any, retry_rate_limits: bool, ambiguous: AmbiguousAttempts | None
) -> dict[str, Any]:
    """The keyword arguments of ``tenacity.Retrying`` / ``AsyncRetrying`` for one call.

    :param settings: The connection's settings (``max_retries``, ``max_ambiguous_retries``).
    :param log: The hook's logger.
    :param retry_rate_limits: Retry 429s; False leaves them to a rate limiter.
    :param ambiguous: The sends of a paid request that may have reached xAI, counted over every call.
    """
    return retry_policy(
        settings.max_retries,
        log,
        settings.max_ambiguous_retries,
        retry_rate_limits=retry_rate_limits,
        ambiguous=ambiguous,
    )


def error_from_response(
    method: str, path: str, status: int, body: str, retry_after: str | None, *, paid: bool = False
) -> XaiApiError:
    """The typed error for an HTTP error status, carrying xAI's own error text."""
    detail = _error_detail(body)
    # Some answers percent-encode their text ("Incorrect%20API%20key").
    if status in (401, 403) or (status == 400 and any(word in unquote(detail).lower() for word in _KEY_REFUSED_WORDS)):
        return XaiAuthError(method, path, status, f"the API key was refused: {detail}")
    if status == 429:
        return XaiRateLimitError(method, path, status, detail, _seconds(retry_after))
    if status >= 500:
        return server_error(method, path, status, detail, maybe_processed=status != 503, paid=paid)
    return XaiBadRequestError(method, path, status, detail)


def server_error(
    method: str, path: str, status: int | None, detail: str, *, maybe_processed: bool, paid: bool
) -> XaiServerError:
    """A transient failure; for a paid request that may have reached xAI, :class:`XaiPossiblyBilledError`."""
    if paid and maybe_processed:
        return XaiPossiblyBilledError(method, path, status, detail)
    return XaiServerError(method, path, status, detail, maybe_processed=maybe_processed)


def _error_detail(body: str) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(empty body)"
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            error = error.get("message", error)
        code = payload.get("code")
        return f"{code}: {error}" if code else str(error)
    return str(payload)[:500]


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def read_response(
    method: str, path: str, status: int, body: str, retry_after: str | None, *, paid: bool = False
) -> dict[str, Any]:
    """The JSON object of a successful response, or the typed error of a failed one."""
    if status >= 400:
        raise error_from_response(method, path, status, body, retry_after, paid=paid)
    try:
        payload = json.loads(body)
    except ValueError:
        detail = f"response is not valid JSON: {body[:80]!r}"
        raise server_error(method, path, status, detail, maybe_processed=True, paid=paid) from None
    if not isinstance(payload, dict):
        raise server_error(method, path, status, "response is not a JSON object", maybe_processed=True, paid=paid)
    return payload
