"""Waiting for a batch job: one poll judged and logged, and the error a failed or refused job raises.

The operator (polling on its worker), the sensor (one poll per poke) and the trigger (polling on the
triggerer) fetch the batches their own way and judge them here, so the three cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_xai_image.api.batches import Batch, BatchOutcome, judge
from airflow_provider_xai_image.exceptions import XaiBatchFailedError, XaiBatchRefusedError


def check_job(
    batches: Sequence[Batch], max_failed_fraction: float, log: Any, expected_requests: Sequence[int] | None = None
) -> BatchOutcome:
    """Judge one poll of a job's batches and log how far they are.

    :param batches: The job's batches, as just fetched.
    :param max_failed_fraction: Share of the job's requests allowed to fail.
    :param log: The task's (or trigger's) logger.
    :param expected_requests: How many requests each batch was given, when known.
    """
    outcome = judge(batches, max_failed_fraction, expected_requests)
    log.info("%s", outcome.message)
    return outcome


def raise_for_outcome(outcome: BatchOutcome) -> None:
    """Raise the error of a job xAI refused (or cancelled) or that failed; return when pending or done.

    :param outcome: The judgement of a poll.
    """
    if outcome.status == "refused":
        raise XaiBatchRefusedError(outcome.message)
    if outcome.status == "failed":
        raise XaiBatchFailedError(outcome.message)
