"""``engine.concurrency.map_concurrently``: every result, a bounded number running, items drawn lazily."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_xai_image.engine.concurrency import map_concurrently


class Running:
    """Counts the calls running at once and the most seen; each call lasts a little while."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.started: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, item: int) -> int:
        with self._lock:
            self.started.append(item)
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.01)
        with self._lock:
            self.now -= 1
        return item * item


def test_every_item_gives_its_result() -> None:
    results = list(map_concurrently(lambda item: item * item, range(50), max_workers=4))

    assert sorted(results) == [item * item for item in range(50)]


@pytest.mark.parametrize("max_workers", [1, 3])
def test_at_most_max_workers_run_at_once(max_workers: int) -> None:
    running = Running()

    results = list(map_concurrently(running, range(12), max_workers=max_workers))

    assert sorted(results) == [item * item for item in range(12)]
    assert 1 <= running.most <= max_workers


def test_items_are_drawn_only_as_places_free_up() -> None:
    drawn: list[int] = []

    def items() -> Iterator[int]:
        for item in itertools.count():
            drawn.append(item)
            yield item

    results = map_concurrently(lambda item: item, items(), max_workers=2)
    first = list(itertools.islice(results, 3))
    results.close()

    assert len(first) == 3
    assert len(drawn) <= 3 + 2  # what was yielded plus at most one running per worker


def test_the_first_error_propagates_and_nothing_new_starts() -> None:
    running = Running()

    def fail_on_two(item: int) -> int:
        if item == 2:
            raise ValueError("item 2 is bad")
        return running(item)

    with pytest.raises(ValueError, match="item 2 is bad"):
        list(map_concurrently(fail_on_two, range(100), max_workers=2))

    assert len(running.started) < 10


def test_an_error_of_the_consumer_stops_new_work() -> None:
    running = Running()

    def consume() -> None:
        for _ in map_concurrently(running, range(100), max_workers=2):
            raise RuntimeError("consumer")

    with pytest.raises(RuntimeError, match="consumer"):
        consume()

    assert len(running.started) <= 4
