"""Splitting batch submissions to xAI's limits: bytes per "add requests" call and calls per window."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_provider_xai_image.models import (
    BATCH_ADD_MAX_BYTES,
    BATCH_ADD_MAX_CALLS,
    BATCH_ADD_WINDOW_SECONDS,
)

_ENVELOPE_BYTES = len(b'{"batch_requests": []}')


def chunk_batch_requests(
    entries: Iterable[dict[str, Any]], max_bytes: int = BATCH_ADD_MAX_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """Group batch request entries into bodies of at most ``max_bytes`` of JSON each."""
    chunk: list[dict[str, Any]] = []
    size = _ENVELOPE_BYTES
    for entry in entries:
        entry_bytes = len(json.dumps(entry).encode()) + 2  # ", " between entries
        if entry_bytes + _ENVELOPE_BYTES > max_bytes:
            raise ValueError(
                f"batch request {entry.get('batch_request_id')!r} is {entry_bytes} bytes, over the "
                f"{max_bytes}-byte limit of one add call"
            )
        if chunk and size + entry_bytes > max_bytes:
            yield chunk
            chunk, size = [], _ENVELOPE_BYTES
        chunk.append(entry)
        size += entry_bytes
    if chunk:
        yield chunk


class CallPacer:
    """A sliding-window pace: at most ``max_calls`` calls in any ``window`` seconds."""

    def __init__(self, max_calls: int = BATCH_ADD_MAX_CALLS, window: float = BATCH_ADD_WINDOW_SECONDS):
        self.max_calls = max_calls
        self.window = window
        self._calls: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Seconds to wait, from monotonic time ``now``, before the next call may go."""
        while self._calls and now - self._calls[0] >= self.window:
            self._calls.popleft()
        if len(self._calls) < self.max_calls:
            return 0.0
        return self._calls[0] + self.window - now

    def record(self, now: float) -> None:
        self._calls.append(now)
