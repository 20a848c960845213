"""Running blocking work (requests, downloads, uploads) a bounded number at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_concurrently(func: Callable[[Item], Result], items: Iterable[Item], max_workers: int) -> Iterator[Result]:
    """
    Yield ``func(item)`` for every item as each finishes, at most ``max_workers`` running at once.

    Items are drawn lazily, so a long iterable (pages of results) is never held whole. On the first
    error (also one raised by the consumer) nothing new starts, the running calls finish, and the
    error propagates.
    """
    pending: set[Future[Result]] = set()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        try:
            for item in source:
                pending.add(pool.submit(func, item))
                if len(pending) >= max_workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        finally:
            for future in pending:
                future.cancel()
