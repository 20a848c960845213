"""The pacer's decisions (sans-IO core, the clock passed in): pace, back off, honour Retry-After, recover,
probe, share a limit fairly, give up; and the pace reports of the task log."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque

import pytest

from airflow_provider_xai_image.engine.pace_report import PaceReport
from airflow_provider_xai_image.engine.ratelimit import (
    DECREASE,
    HEADROOM,
    IN_FLIGHT_CAP,
    MIN_RATE,
    PROBE_ROUNDS,
    RETRY_AFTER_MAX,
    Change,
    RatePacer,
    Ticket,
    in_flight_cap,
)


def send_times(pacer: RatePacer, until: float, step: float = 0.001) -> list[float]:
    """When the pacer lets requests go, asked every ``step`` seconds from 0 to ``until``."""
    times = []
    for tick in range(round(until / step)):
        now = tick * step
        if pacer.admit(now) is not None:
            times.append(now)
    return times


def sent(pacer: RatePacer, now: float) -> Ticket:
    """A request let through at ``now``, or as soon after as the pace allows."""
    ticket = pacer.admit(now + pacer.wait_time(now))
    assert ticket is not None
    return ticket


def one_round(pacer: RatePacer, now: float) -> Change | None:
    """A round of successes (as many as the pace) answered at ``now``; the change it completes."""
    tickets = [sent(pacer, now - 1) for _ in range(math.ceil(pacer.rate))]
    changes = [pacer.succeeded(ticket, now) for ticket in tickets]
    return next((change for change in changes if change is not None), None)


def test_it_starts_just_under_the_limit_and_spaces_requests_by_the_pace() -> None:
    pacer = RatePacer(5.0)

    times = send_times(pacer, until=2.0)

    assert pacer.rate == pytest.approx(5.0 * HEADROOM)
    assert len(times) == 10  # 4.75 a second, the first at once
    assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 1 / pacer.rate - 0.001
    assert pacer.in_flight == 10  # nothing bounds requests in flight but the pace


def test_a_429_cuts_the_pace_once_per_event() -> None:
    pacer = RatePacer(5.0)
    before = [pacer.admit(now) for now in (0.0, 0.3, 0.6)]

    change = pacer.refused(before[0], 0.7, None)

    assert change == Change(before=4.75, after=pytest.approx(4.75 * DECREASE), refused=True, retry_after=None)
    assert pacer.refused(before[1], 0.71, None) is None  # sent before the cut: the same event
    assert pacer.rate == pytest.approx(4.75 * DECREASE)
    after = pacer.admit(1.0)
    assert after is not None
    assert pacer.refused(after, 1.1, None) is not None  # sent after the cut, still refused: cut again
    assert pacer.rate == pytest.approx(4.75 * DECREASE**2)


def test_the_pace_never_falls_below_its_minimum() -> None:
    pacer = RatePacer(5.0, give_up_after=math.inf)

    for second in range(100):
        pacer.refused(sent(pacer, float(second)), float(second), None)

    assert pacer.rate == MIN_RATE


def test_a_retry_after_of_one_second_holds_only_the_refused_request() -> None:
    pacer = RatePacer(5.0)
    ticket = pacer.admit(0.0)
    assert ticket is not None

    pacer.refused(ticket, 0.05, 1.0)

    assert pacer.resend_delay(1.0) == 1.0  # the refused request waits a second
    assert pacer.wait_time(0.05) <= 1 / (4.75 * DECREASE)  # the others keep the (cut) pace


def test_a_longer_retry_after_holds_every_request_and_is_capped() -> None:
    pacer = RatePacer(5.0)
    first, second = pacer.admit(0.0), pacer.admit(1.0)
    assert first is not None
    assert second is not None

    pacer.refused(first, 1.1, 3.0)

    assert pacer.admit(4.0) is None
    assert pacer.wait_time(4.0) == pytest.approx(0.1)
    pacer.refused(second, 1.2, 10_000.0)  # the same event, but its Retry-After still holds everything
    assert pacer.wait_time(1.2) == pytest.approx(RETRY_AFTER_MAX)
    assert pacer.resend_delay(10_000.0) == RETRY_AFTER_MAX
    assert pacer.resend_delay(None) == 0.0


def test_after_a_cut_rounds_of_successes_climb_halfway_back_to_just_under_the_pace_that_drew_it() -> None:
    pacer = RatePacer(5.0)
    pacer.refused(sent(pacer, 0.0), 0.1, None)  # 4.75 -> 3.8
    settled = 4.75 * HEADROOM

    rates = []
    for second in range(1, 6):
        one_round(pacer, float(second))
        rates.append(pacer.rate)

    assert rates[0] == pytest.approx(3.8 + (settled - 3.8) / 2)
    assert rates == sorted(rates)
    assert rates[-1] == pytest.approx(settled, abs=0.06)


def test_successes_of_requests_sent_before_a_cut_do_not_speed_it_up() -> None:
    pacer = RatePacer(5.0)
    old = [sent(pacer, 0.0) for _ in range(8)]
    pacer.refused(old[0], 2.0, None)
    cut = pacer.rate

    for ticket in old[1:]:
        assert pacer.succeeded(ticket, 3.0) is None

    assert pacer.rate == cut
    assert pacer.in_flight == 0


def test_near_the_limit_it_probes_upward_only_every_few_rounds() -> None:
    pacer = RatePacer(5.0)

    changes = [one_round(pacer, float(second)) for second in range(1, 2 * PROBE_ROUNDS + 1)]

    probes = [change for change in changes if change is not None]
    assert len(probes) == 2
    assert probes[0] == Change(before=4.75, after=pytest.approx(4.80), refused=False)
    assert pacer.rate == pytest.approx(4.85)


def test_past_the_pace_that_drew_the_last_429_it_probes_faster_and_faster() -> None:
    pacer = RatePacer(5.0)
    second = 0.0
    while pacer.rate <= 5.0:  # from 4.75 up to the limit given, slowly
        second += 1
        one_round(pacer, second)

    steps = []
    for _ in range(4):
        second += 1
        before = pacer.rate
        assert one_round(pacer, second) is not None  # every round now
        steps.append(round(pacer.rate - before, 4))

    assert steps == [0.05, 0.1, 0.2, 0.4]  # doubling from 1% of the limit given


def test_a_task_sharing_the_limit_grows_by_steps_doubling_since_its_last_429() -> None:
    pacer = RatePacer(5.0)
    for second in range(4):  # cut far below the limit given: other tasks share it
        pacer.refused(sent(pacer, float(second)), float(second), None)
    cut = pacer.rate

    rates = []
    for second in range(5, 9):
        one_round(pacer, float(second))
        rates.append(round(pacer.rate - cut, 4))

    assert rates == [0.05, 0.15, 0.35, 0.75]


def test_tasks_sharing_one_limit_converge_to_fair_shares() -> None:
    """Two pacers, one of them cut far down first, against one limit of 5 a second counted over a sliding
    second (simulated time, each request answered after 1 s): over the last 100 s neither serves less than
    half of the other, and together they use most of the limit."""
    limit = 5
    pacers = [RatePacer(5.0), RatePacer(5.0)]
    for _ in range(6):
        pacers[1].refused(sent(pacers[1], 0.0), 0.0, None)
    accepted: deque[float] = deque()
    answers: list[tuple[float, int, Ticket]] = []
    served = [0, 0]
    for tick in range(30_000):
        now = tick / 100
        while answers and answers[0][0] <= now:
            _, task, ticket = heapq.heappop(answers)
            pacers[task].succeeded(ticket, now)
        for task, pacer in enumerate(pacers):
            if (ticket := pacer.admit(now)) is None:
                continue
            while accepted and accepted[0] <= now - 1.0:
                accepted.popleft()
            if len(accepted) >= limit:
                pacer.refused(ticket, now, None)
                continue
            accepted.append(now)
            heapq.heappush(answers, (now + 1.0, task, ticket))
            served[task] += now >= 200.0

    assert min(served) >= max(served) / 2, served
    assert sum(served) >= 0.75 * limit * 100, served


def test_it_gives_up_after_a_long_stretch_of_429s_without_a_success() -> None:
    pacer = RatePacer(5.0, give_up_after=30.0)
    pacer.succeeded(sent(pacer, 0.0), 1.0)
    now = 1.0
    while not pacer.gave_up:
        now += 1.0
        pacer.refused(sent(pacer, now), now, None)

    assert now == pytest.approx(31.0)
    assert pacer.admit(1000.0) is None
    assert pacer.wait_time(1000.0) == 0.0  # the caller asks at once and stops


def test_a_success_restarts_the_stretch_that_leads_to_giving_up() -> None:
    pacer = RatePacer(5.0, give_up_after=30.0)
    pacer.refused(sent(pacer, 0.0), 20.0, None)
    pacer.succeeded(sent(pacer, 25.0), 25.0)
    pacer.refused(sent(pacer, 50.0), 50.0, None)

    assert not pacer.gave_up


def test_another_failure_frees_its_place_and_changes_nothing_else() -> None:
    pacer = RatePacer(5.0)
    pacer.admit(0.0)

    pacer.released()

    assert (pacer.in_flight, pacer.rate) == (0, 4.75)


@pytest.mark.parametrize("rate", [0, -1.0, math.inf, math.nan])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate: must be requests per second > 0"):
        RatePacer(rate)


def test_in_flight_is_bounded_by_max_concurrency_else_by_the_safety_cap() -> None:
    assert in_flight_cap(None) == IN_FLIGHT_CAP == 128
    assert in_flight_cap(3) == 3
    assert in_flight_cap(500) == 500  # a user's explicit choice


def test_the_report_tells_the_first_change_at_once_then_sums_up_at_most_every_interval() -> None:
    report = PaceReport(4.75, interval=10.0)
    cut = Change(4.75, 3.8, refused=True, retry_after=1.0)

    first = report.changed(cut, in_flight=3, now=0.0)
    quiet = [report.changed(Change(3.8, 4.0, refused=False), in_flight=3, now=float(t)) for t in range(1, 10)]
    report.refused()
    summed = report.changed(Change(4.0, 3.2, refused=True, retry_after=None), in_flight=2, now=10.5)

    assert first == (
        "Pace 3.80 requests/s (was 4.75): slowed down 1 time(s) by 429s from xAI (rate limited; Retry-After: "
        "1 s); 3 request(s) in flight, 0 429(s) so far"
    )
    assert quiet == [None] * 9
    assert summed == (
        "Pace 3.20 requests/s (was 3.80): slowed down 1 time(s) by 429s from xAI (rate limited; Retry-After: "
        "none) and sped up 9 time(s) after runs of successes; 2 request(s) in flight, 1 429(s) so far"
    )
    assert report.final(3.2) == (
        "Requests were paced at 3.20 requests/s at the end (started at 4.75); xAI answered 429 1 time(s) "
        "(never billed)."
    )
