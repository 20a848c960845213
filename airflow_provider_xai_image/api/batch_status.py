"""Judging a batch job (one or several batches): still running, finished well enough, or failed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal, NamedTuple

from airflow_provider_xai_image.api.images import Batch


class BatchOutcome(NamedTuple):
    status: Literal["pending", "success", "failed", "refused"]
    message: str


def split_batch_ids(batch_id: str | Sequence[str]) -> list[str]:
    """The batches of a job: ``batch_id`` may name several, comma-separated (a job split over file limits)."""
    ids = batch_id.split(",") if isinstance(batch_id, str) else list(batch_id)
    return [part.strip() for part in ids if part.strip()]


def progress(batch: Batch) -> str:
    state = batch.state
    if batch.is_validating:
        return f"batch {batch.batch_id}: xAI is validating the input file"
    return (
        f"batch {batch.batch_id}: {state.num_success} succeeded, {state.num_error} failed, "
        f"{state.num_cancelled} cancelled, {state.num_pending} pending of {state.num_requests}"
    )


def judge_one(batch: Batch, expected_requests: int | None = None, now: datetime | None = None) -> BatchOutcome:
    """One batch: done only when xAI counts every request submitted (``num_requests > 0``, equal to
    ``expected_requests`` when known) and none is pending. All counters 0: still validating."""
    state = batch.state
    if batch.cancel_by_xai_message:
        return BatchOutcome("refused", f"{progress(batch)}; xAI cancelled it: {batch.cancel_by_xai_message}")
    if batch.cancel_time:
        return BatchOutcome("refused", f"{progress(batch)}; cancelled at {batch.cancel_time}")
    expires = batch.expires_at()
    if (
        expires is not None
        and (now or datetime.now(timezone.utc)) >= expires
        and (state.num_pending or batch.is_validating)
    ):
        return BatchOutcome("failed", f"{progress(batch)}; expired at {batch.expire_time}")
    counted = state.num_requests > 0 and (expected_requests is None or state.num_requests == expected_requests)
    if not counted or state.num_pending:
        waiting = "" if counted or batch.is_validating else f" (xAI counts {state.num_requests} of {expected_requests})"
        return BatchOutcome("pending", progress(batch) + waiting)
    return BatchOutcome("success", progress(batch))


def judge(
    batches: Sequence[Batch],
    max_failed_fraction: float,
    expected_requests: Sequence[int] | None = None,
    now: datetime | None = None,
) -> BatchOutcome:
    """Whether a job is still pending, done, or failed (with a message that says why).

    :param max_failed_fraction: Share of the job's requests allowed to fail (0.0: none).
    :param expected_requests: How many requests each batch was given, when known.
    """
    now = now or datetime.now(timezone.utc)
    expected = list(expected_requests) if expected_requests is not None else [None] * len(batches)
    outcomes = [judge_one(batch, count, now) for batch, count in zip(batches, expected, strict=True)]
    message = "; ".join(outcome.message for outcome in outcomes)
    for status in ("refused", "failed"):
        if any(outcome.status == status for outcome in outcomes):
            return BatchOutcome(status, message)  # type: ignore[arg-type]
    requests = sum(batch.state.num_requests for batch in batches)
    errors = sum(batch.state.num_error for batch in batches)
    allowed = int(round(max_failed_fraction * requests, 9))  # 0.58 * 50 is 28.999...
    if errors > allowed:
        return BatchOutcome(
            "failed",
            f"{message}; {errors} failed requests, over max_failed_fraction={max_failed_fraction} ({allowed} allowed)",
        )
    if any(outcome.status == "pending" for outcome in outcomes):
        return BatchOutcome("pending", message)
    return BatchOutcome("success", message)
