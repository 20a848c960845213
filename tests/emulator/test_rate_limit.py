"""The emulator's rate limit: refused fast (before any latency), with or without Retry-After, and the number
of generate/edit calls in flight logged with each request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from emulator_support import call, data_uri, edit, generate

from airflow_provider_xai_image.testing import XaiEmulator


def test_a_rate_limited_call_is_refused_before_the_latency(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(rate_limit_rps=1)
    generate(xai_emulator)
    xai_emulator.configure(latency=0.5, generation_latency=0.5)
    started = time.monotonic()

    refused = generate(xai_emulator)

    assert refused.status_code == 429
    assert time.monotonic() - started < 0.4  # answered at once, not after 1 s of latency
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "Rate limit exceeded: at most 1 requests per second."


def test_a_rate_limited_call_can_come_without_retry_after(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(rate_limit_rps=1, rate_limit_retry_after=False)

    statuses = [generate(xai_emulator) for _ in range(2)]

    assert [response.status_code for response in statuses] == [200, 429]
    assert "Retry-After" not in statuses[1].headers
    assert xai_emulator.images_billed == 1
    assert xai_emulator.stats()["rate_limited"] == 1


def test_each_request_records_the_generate_and_edit_calls_in_flight_when_it_arrived(
    xai_emulator: XaiEmulator,
) -> None:
    xai_emulator.configure(generation_latency=0.6)
    generate(xai_emulator)  # alone: 1 in flight, itself
    with ThreadPoolExecutor(4) as pool:
        source = {"url": data_uri(64, 64)}
        slow = [pool.submit(generate, xai_emulator) for _ in range(2)]
        slow.append(pool.submit(edit, xai_emulator, image=source))
        time.sleep(0.3)
        models = call(xai_emulator, "GET", "image-generation-models")  # arrives while 3 are in flight
        for future in slow:
            future.result()
    after = call(xai_emulator, "GET", "api-key")

    log = sorted(xai_emulator.requests_log, key=lambda record: record.time)  # logged as answered
    assert models.status_code == after.status_code == 200
    assert {record.status for record in log} == {200}
    assert [record.in_flight for record in log] == [1, 1, 2, 3, 3, 0]
    assert [record.path for record in log[-2:]] == ["/v1/image-generation-models", "/v1/api-key"]


def test_the_in_flight_count_covers_refused_and_dropped_calls_until_they_are_answered(
    xai_emulator: XaiEmulator,
) -> None:
    xai_emulator.configure(rate_limit_rps=1, reset_connections=1)
    barrier = threading.Barrier(3)

    def send() -> int | None:
        barrier.wait()
        try:
            return generate(xai_emulator).status_code
        except requests.ConnectionError:
            return None

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: send(), range(3)))
    generate(xai_emulator)

    assert xai_emulator.backend.generations_in_flight() == 0
    assert xai_emulator.requests_log[-1].in_flight == 1
