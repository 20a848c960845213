"""xAI's Batch API objects (batches, their results and result pages) and the rule that says when a job is done.

A job is one batch or several; judging it says whether it is still running, finished well enough, or failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timezone
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from airflow_provider_xai_image.api.images import ImageGenerationResult, parse_image_response

#: Form fields of ``POST /files`` sent before the ``file`` part (xAI reads them first).
BATCH_FILE_FIELDS: dict[str, str] = {"purpose": "batch"}
#: A batch input file is kept under this size (xAI publishes no limit); a larger job becomes several batches.
BATCH_FILE_MAX_BYTES = 100_000_000


class BatchState(BaseModel):
    """Counters of a batch (``state`` of the Batch object)."""

    num_requests: int = 0
    num_pending: int = 0
    num_success: int = 0
    num_error: int = 0
    num_cancelled: int = 0


class Batch(BaseModel):
    """The Batch object of ``GET /batches/{id}`` (its cost is the sum of its results' ``usage``)."""

    model_config = ConfigDict(extra="allow")

    batch_id: str
    name: str | None = None
    create_time: str | None = None
    expire_time: str | None = None
    cancel_time: str | None = None
    cancel_by_xai_message: str | None = None
    state: BatchState = Field(default_factory=BatchState)

    @property
    def is_validating(self) -> bool:
        """Every counter is 0: xAI is still reading the input file."""
        return self.state == BatchState() and not self.cancel_time

    def expires_at(self) -> datetime | None:
        """``expire_time`` as a moment; a bare date (``YYYY-MM-DD``) means the end of that day, UTC."""
        if not self.expire_time:
            return None
        text = self.expire_time.strip()
        try:
            if len(text) == 10:
                day = datetime.strptime(text, "%Y-%m-%d").date()
                return datetime.combine(day, time.max, tzinfo=timezone.utc)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class BatchResult(BaseModel):
    """One result of a batch.

    ``result`` on success; ``error`` when xAI reports the request failed; ``unreadable`` when the item
    could not be read (a shape this client does not know): never a silent loss.
    """

    batch_request_id: str
    result: ImageGenerationResult | None = None
    error: str | None = None
    unreadable: str | None = None


def parse_batch_results_page(payload: dict[str, Any], requested_model: str) -> tuple[list[BatchResult], str | None]:
    """Read one results page; return its results and the next page's token (None on the last page).

    Each item is ``{"batch_request_id", "batch_result": {"response": {<kind>: <image response>}}}`` on
    success (whichever single kind key is there), ``{"batch_request_id", "batch_result": {"error":
    {code, message} | "text"}}`` or ``{"batch_request_id", "error_message"}`` on failure.
    """
    items = payload.get("results")
    if not isinstance(items, list):
        raise ValueError(f"a results page must hold a 'results' list; got the keys {sorted(payload)}")
    return [_batch_result(item, requested_model) for item in items], payload.get("pagination_token") or None


def _batch_result(item: Any, requested_model: str) -> BatchResult:
    request_id = str(item.get("batch_request_id", "")) if isinstance(item, dict) else ""
    try:
        outcome = item.get("batch_result") or {}
        response = outcome.get("response")
        if response is not None:
            (_kind, image_response), *others = response.items()
            if others or not isinstance(image_response, dict):
                raise ValueError(f"the response must hold one image response, got the keys {sorted(response)}")
            return BatchResult(
                batch_request_id=request_id, result=parse_image_response(image_response, requested_model)
            )
        error = _error_text(outcome.get("error")) or _error_text(item.get("error_message"))
        if error is None:
            raise ValueError(f"neither a response nor an error, got the keys {sorted(item)}")
        return BatchResult(batch_request_id=request_id, error=error)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        return BatchResult(batch_request_id=request_id, unreadable=f"{type(error).__name__}: {error}"[:300])


def _error_text(error: Any) -> str | None:
    """The text of an error object ``{code, message}`` or string; None for none (success items may carry
    ``{"code": 0, "message": ""}``)."""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if not code and not message:
            return None
        return f"{message or 'error'} (code {code})" if code else str(message)
    return str(error) if error else None


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
