"""Judging a batch's state: still running, finished well enough, or failed (cancelled, expired, too many errors)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, NamedTuple

from airflow_provider_xai_image.budget import usd
from airflow_provider_xai_image.models import Batch


class BatchOutcome(NamedTuple):
    status: Literal["pending", "success", "failed"]
    message: str


def progress(batch: Batch) -> str:
    state = batch.state
    return (
        f"batch {batch.batch_id}: {state.num_success} succeeded, {state.num_error} failed, "
        f"{state.num_cancelled} cancelled, {state.num_pending} pending of {state.num_requests}; "
        f"cost so far {usd(batch.cost_usd_ticks)}"
    )


def judge(batch: Batch, max_failed_fraction: float, now: datetime | None = None) -> BatchOutcome:
    """Whether ``batch`` is still pending, done, or failed (with a message that says why).

    :param max_failed_fraction: Share of requests allowed to fail (0.0: none).
    """
    state = batch.state
    if batch.cancel_by_xai_message or (batch.cancel_time and state.num_cancelled):
        reason = batch.cancel_by_xai_message or "cancelled"
        return BatchOutcome("failed", f"{progress(batch)}; cancelled: {reason}")
    if state.num_pending and _expired(batch, now or datetime.now(timezone.utc)):
        return BatchOutcome("failed", f"{progress(batch)}; expired at {batch.expire_time}")
    allowed = int(round(max_failed_fraction * state.num_requests, 9))  # 0.58 * 50 is 28.999...
    if state.num_error > allowed:
        return BatchOutcome(
            "failed",
            f"{progress(batch)}; {state.num_error} failed requests, over max_failed_fraction="
            f"{max_failed_fraction} ({allowed} allowed)",
        )
    if state.num_pending:
        return BatchOutcome("pending", progress(batch))
    return BatchOutcome("success", progress(batch))


def _expired(batch: Batch, now: datetime) -> bool:
    if not batch.expire_time:
        return False
    try:
        expires = datetime.fromisoformat(batch.expire_time.replace("Z", "+00:00"))
    except ValueError:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    return now >= expires
