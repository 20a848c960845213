"""The limiter's decisions (sans-IO core): slow down on a 429, pause, pace, speed up, give up."""

from __future__ import annotations

import pytest

from airflow_provider_xai_image.ratelimit import CAUTIOUS_RUNS, AdaptiveConcurrency, Change, Ticket
from airflow_provider_xai_image.retry import BACKOFF_INITIAL, BACKOFF_MAX, RETRY_AFTER_MAX


def admit_all(core: AdaptiveConcurrency, now: float) -> list[Ticket]:
    """Every request the core lets through at ``now``."""
    tickets = []
    while (ticket := core.admit(now)) is not None:
        tickets.append(ticket)
    return tickets


def slowed_down(max_concurrency: int = 8, **kwargs: object) -> tuple[AdaptiveConcurrency, list[Ticket]]:
    """A core whose first burst drew one 429 (Retry-After 1 s) at t=0.1; the rest of the burst still in flight."""
    core = AdaptiveConcurrency(max_concurrency, **kwargs)  # type: ignore[arg-type]
    first, *others = admit_all(core, 0.0)
    core.refused(first, 0.1, 1.0)
    return core, others


def test_it_starts_at_full_speed_and_waits_for_a_free_slot() -> None:
    core = AdaptiveConcurrency(4)

    assert len(admit_all(core, 0.0)) == 4
    assert core.in_flight == core.limit == 4
    assert core.wait_time(0.0) is None  # until a slot is freed


def test_a_429_halves_the_concurrency_and_pauses_every_new_request_for_retry_after() -> None:
    core = AdaptiveConcurrency(8)
    first, *_ = admit_all(core, 0.0)

    change = core.refused(first, 0.1, 2.0)

    assert change == Change(before=8, after=4, in_flight=7, maximum=8, pause=2.0, retry_after=2.0)
    assert core.limit == 4
    assert core.admit(1.0) is None  # 7 in flight but, above all, paused
    assert core.wait_time(1.0) == pytest.approx(1.1)
    assert core.admit(2.1) is None  # the pause is over; 7 are still in flight, 4 allowed


def test_429s_of_requests_sent_before_the_slowdown_are_the_same_event() -> None:
    core = AdaptiveConcurrency(8)
    tickets = admit_all(core, 0.0)
    core.refused(tickets[0], 0.1, 1.0)

    assert core.refused(tickets[1], 0.2, 1.0) is None
    assert core.refused(tickets[2], 0.3, 3.0) is None
    assert core.limit == 4  # halved once
    assert core.wait_time(0.3) == pytest.approx(3.0)  # but a later Retry-After still extends the pause


def test_a_requests_slot_comes_back_after_its_429_and_it_is_sent_again_after_the_pause() -> None:
    core, others = slowed_down(2)  # 2 -> 1

    assert core.in_flight == 1
    core.succeeded(others[0], 0.5)
    assert core.in_flight == 0
    assert core.admit(0.5) is None  # a slot is free, but new requests wait until 1.1
    assert core.admit(1.1) is not None  # the refused request goes again


def test_the_concurrency_never_falls_below_one_and_a_429_at_one_still_pauses() -> None:
    core = AdaptiveConcurrency(2)
    changes = []
    for second in range(3):
        ticket = core.admit(float(second * 10))
        assert ticket is not None
        changes.append(core.refused(ticket, second * 10 + 0.1, 1.0))
    assert [(change.before, change.after) for change in changes if change] == [(2, 1), (1, 1), (1, 1)]
    assert core.limit == 1
    last = changes[-1]
    assert last is not None
    assert last.describe().startswith("xAI answered 429 (rate limited, Retry-After 1 s): slowing down to stay at 1")
    assert core.wait_time(20.5) == pytest.approx(0.6)


def test_a_long_retry_after_is_capped() -> None:
    core = AdaptiveConcurrency(2)
    ticket = core.admit(0.0)
    assert ticket is not None

    core.refused(ticket, 0.0, 3600.0)

    assert core.wait_time(0.0) == RETRY_AFTER_MAX


def test_without_retry_after_the_pause_is_a_backoff_doubling_per_slowdown_and_reset_by_a_success() -> None:
    core = AdaptiveConcurrency(64, jitter=lambda: 0.999999)  # the whole backoff (jitter takes up to half)
    pauses = []
    now = 0.0
    for _ in range(9):
        ticket = core.admit(now)
        assert ticket is not None
        change = core.refused(ticket, now, None)
        assert change is not None
        pauses.append(round(change.pause, 3))
        now += BACKOFF_MAX + 1  # past the pause
    ticket = core.admit(now)
    assert ticket is not None
    core.succeeded(ticket, now + 1.0)
    after_success = core.admit(now + 2.0)
    assert after_success is not None
    change = core.refused(after_success, now + 2.0, None)

    assert pauses == [min(BACKOFF_INITIAL * 2**step, BACKOFF_MAX) for step in range(9)]
    assert change is not None
    assert change.pause == pytest.approx(BACKOFF_INITIAL)
    assert change.describe().startswith("xAI answered 429 (rate limited, no Retry-After): slowing down to stay at 1")


def test_the_jitter_spreads_the_backoff_over_its_upper_half() -> None:
    core = AdaptiveConcurrency(4, jitter=lambda: 0.0)
    ticket = core.admit(0.0)
    assert ticket is not None

    change = core.refused(ticket, 0.0, None)

    assert change is not None
    assert change.pause == BACKOFF_INITIAL / 2


def test_a_run_of_successes_as_long_as_the_concurrency_adds_one_up_to_the_maximum() -> None:
    core, others = slowed_down(16)  # 16 -> 8
    now = 2.0
    for ticket in others:  # sent before the slowdown: they do not count
        assert core.succeeded(ticket, 1.0) is None
    changes = []
    while core.limit < 12:
        tickets = admit_all(core, now)
        now += 1.0
        changes += [change for ticket in tickets if (change := core.succeeded(ticket, now)) is not None]
        now += 1.0

    assert [(change.before, change.after, change.successes) for change in changes] == [
        (8, 9, 8),
        (9, 10, 9),
        (10, 11, 10),
        (11, 12, 11),
    ]
    assert changes[0].describe() == (
        "8 request(s) in a row succeeded: speeding up from 8 to 9 request(s) in flight (at most 16)"
    )


def test_the_step_back_to_the_concurrency_that_drew_the_429_waits_for_many_runs() -> None:
    core, others = slowed_down(4)  # 4 -> 2; the ceiling is 4
    for ticket in others:
        core.succeeded(ticket, 1.0)
    successes = 0
    now = 2.0
    while core.limit < 4:
        for ticket in admit_all(core, now):
            now += 1.0
            successes += 1
            change = core.succeeded(ticket, now)
    assert change is not None
    assert change.describe().endswith("from 3 to 4 request(s) in flight (full speed)")
    assert successes == 2 + 3 * CAUTIOUS_RUNS


def test_at_full_speed_requests_are_not_paced() -> None:
    core = AdaptiveConcurrency(4)
    ticket = core.admit(0.0)
    assert ticket is not None
    core.succeeded(ticket, 2.0)

    assert len(admit_all(core, 2.0)) == 4


def test_while_slowed_down_requests_are_spread_over_the_round_trip() -> None:
    core, others = slowed_down(8)  # 8 -> 4, paused until 1.1
    for ticket in others:
        core.succeeded(ticket, 1.0)  # a round trip of 1 s

    sent = [core.admit(1.1), core.admit(1.1)]
    assert sent[0] is not None
    assert sent[1] is None
    assert core.wait_time(1.1) == pytest.approx(1.0 / 4)
    assert core.admit(1.35) is not None


def test_successes_of_requests_sent_before_a_slowdown_do_not_speed_it_up() -> None:
    core, others = slowed_down(8)

    assert all(core.succeeded(ticket, 1.0) is None for ticket in others)
    assert core.limit == 4


def test_another_failure_frees_its_slot_and_changes_nothing_else() -> None:
    core = AdaptiveConcurrency(2)
    admit_all(core, 0.0)

    core.released()

    assert core.in_flight == 1
    assert core.limit == 2
    assert core.admit(0.0) is not None


def test_it_gives_up_after_a_long_stretch_of_429s_without_a_success() -> None:
    core = AdaptiveConcurrency(2, give_up_after=60.0)
    ticket = core.admit(0.0)
    assert ticket is not None
    core.succeeded(ticket, 5.0)
    refused_at = []
    for now in range(15, 200, 10):
        ticket = core.admit(now)
        assert ticket is not None
        core.refused(ticket, now, 1.0)
        refused_at.append(now)
        if core.gave_up:
            break

    assert refused_at[-1] == 65  # 60 s after the last success
    assert core.gave_up
    assert core.admit(300.0) is None
    assert core.wait_time(300.0) == 0.0


def test_a_success_restarts_the_stretch_that_leads_to_giving_up() -> None:
    core = AdaptiveConcurrency(2, give_up_after=60.0)
    for now in (0.0, 50.0, 100.0, 150.0):
        refused, answered = core.admit(now), core.admit(now)
        assert refused is not None
        assert answered is not None
        core.refused(refused, now + 49.0, 0.0)
        core.succeeded(answered, now + 49.0)
        core.limit = 2  # as if it had sped up again

    assert not core.gave_up


def test_a_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        AdaptiveConcurrency(0)
