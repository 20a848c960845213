"""XaiBatchTrigger: polls the batches of an xAI batch job from the triggerer until they are done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.engine.batch_waiting import check_job, raise_for_outcome
from airflow_provider_xai_image.exceptions import XaiBatchTimeoutError, XaiError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.triggers.events import error_event, success_event


class XaiBatchTrigger(BaseTrigger):
    """
    Poll ``GET /batches/{batch_id}`` of each batch every ``poll_interval`` seconds without holding a worker.

    Only polls (free calls), so running it twice costs nothing. Fires one event
    (:mod:`~airflow_provider_xai_image.triggers.events`): ``{"status": "success", "batch_ids", "message",
    "batches": [...]}`` when every batch is done, else ``{"status": "error", "error_type", "error"}`` with
    :class:`XaiBatchRefusedError`, :class:`XaiBatchFailedError`, :class:`XaiBatchTimeoutError` or the
    API's own error.

    :param batch_ids: The batches of the job.
    :param expected_requests: How many requests each batch was given, when known (the done rule).
    :param xai_conn_id: The ``xai`` Airflow connection.
    :param poll_interval: Seconds between polls.
    :param timeout: Seconds (monotonic clock, from the trigger's start) before giving up; None waits forever.
    :param max_failed_fraction: Share of requests allowed to fail.
    """

    def __init__(
        self,
        batch_ids: list[str],
        expected_requests: list[int] | None = None,
        xai_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        timeout: float | None = None,
        max_failed_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.batch_ids = list(batch_ids)
        self.expected_requests = expected_requests
        self.xai_conn_id = xai_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_failed_fraction = max_failed_fraction

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": self.batch_ids,
                "expected_requests": self.expected_requests,
                "xai_conn_id": self.xai_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "max_failed_fraction": self.max_failed_fraction,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = success_event(**await self._wait_until_done())
        except XaiError as error:
            event = error_event(error)
        yield TriggerEvent(event)

    async def _wait_until_done(self) -> dict[str, Any]:
        """Poll until every batch is done; return the result, or raise the job's (or the API's) typed error."""
        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        started = time.monotonic()
        async with hook.async_client() as client:
            while True:
                batches = [await hook.aget_batch(client, batch_id) for batch_id in self.batch_ids]
                outcome = check_job(batches, self.max_failed_fraction, self.log, self.expected_requests)
                raise_for_outcome(outcome)
                if outcome.status == "success":
                    batches_json = [batch.model_dump(mode="json") for batch in batches]
                    return {"batch_ids": self.batch_ids, "message": outcome.message, "batches": batches_json}
                if self.timeout is not None and time.monotonic() - started >= self.timeout:
                    raise XaiBatchTimeoutError(
                        f"Timed out waiting for the batch: {outcome.message}; still pending after {self.timeout:g} s"
                    )
                await asyncio.sleep(self.poll_interval)
