"""A sliding-window rate limiter (not thread-safe on its own: the backend calls it under its lock)."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """Allows at most ``max_calls`` calls in any ``window`` seconds; limits are given per call so
    that reconfiguring the emulator takes effect at once."""

    def __init__(self) -> None:
        self._calls: deque[float] = deque()

    def acquire(self, now: float, max_calls: int, window: float) -> float | None:
        """Record a call at ``now`` and return None, or return the seconds until one is allowed."""
        while self._calls and self._calls[0] <= now - window:
            self._calls.popleft()
        if len(self._calls) >= max_calls:
            return self._calls[-max_calls] + window - now
        self._calls.append(now)
        return None

    def clear(self) -> None:
        self._calls.clear()
