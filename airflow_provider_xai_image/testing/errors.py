"""The error the emulator answers with, in xAI's ``{"code": ..., "error": ...}`` JSON shape."""

from __future__ import annotations

import json
import math
from urllib.parse import quote

#: The ``code`` text xAI sends with each status (gRPC status descriptions).
STATUS_CODES: dict[int, str] = {
    400: "Client specified an invalid argument",
    401: "The request does not have valid authentication credentials",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    405: "Method not allowed",
    413: "Request entity too large",
    422: "Client specified an invalid argument",
    429: "Some resource has been exhausted",
    500: "Internal error",
    502: "Bad gateway",
    503: "The service is currently unavailable",
    504: "Deadline expired before operation could complete",
}


class ApiError(Exception):
    """An HTTP error response: status, message and, for 429, the seconds to wait before retrying."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = None if retry_after is None else max(0, math.ceil(retry_after))

    def quoting(self, header: str) -> ApiError:
        """This error with an ``Authorization`` header quoted in its message: raw, URL-encoded, JSON-escaped."""
        forms = f"{header} (url-encoded: {quote(header, safe='')}; json: {json.dumps(header)})"
        return ApiError(self.status, f"{self.message} The request had Authorization: {forms}", self.retry_after)

    @property
    def code(self) -> str:
        return STATUS_CODES.get(self.status, "Error")

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "error": self.message}
