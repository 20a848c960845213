"""XaiBatchTrigger: polls an xAI batch from the triggerer until no request is pending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_xai_image.batch_state import judge
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.exceptions import XaiError
from airflow_provider_xai_image.hooks.xai import XaiHook


class XaiBatchTrigger(BaseTrigger):
    """
    Poll ``GET /batches/{batch_id}`` every ``poll_interval`` seconds without holding a worker.

    Fires one event: ``{"status": "success", "batch": {...}}`` when nothing is pending, or
    ``{"status": "error"|"timeout", "message": ...}``.

    :param batch_id: The batch to watch.
    :param xai_conn_id: The ``xai`` Airflow connection.
    :param poll_interval: Seconds between polls.
    :param timeout: Seconds (monotonic clock, from the trigger's start) before giving up; None waits forever.
    :param max_failed_fraction: Share of requests allowed to fail.
    """

    def __init__(
        self,
        batch_id: str,
        xai_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        timeout: float | None = None,
        max_failed_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.batch_id = batch_id
        self.xai_conn_id = xai_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_failed_fraction = max_failed_fraction

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_id": self.batch_id,
                "xai_conn_id": self.xai_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "max_failed_fraction": self.max_failed_fraction,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        started = time.monotonic()
        try:
            async with hook.async_client() as client:
                while True:
                    batch = await hook.aget_batch(client, self.batch_id)
                    outcome = judge(batch, self.max_failed_fraction)
                    self.log.info("%s", outcome.message)
                    if outcome.status != "pending":
                        yield TriggerEvent(
                            {
                                "status": "success" if outcome.status == "success" else "error",
                                "batch_id": self.batch_id,
                                "message": outcome.message,
                                "batch": batch.model_dump(mode="json"),
                            }
                        )
                        return
                    if self.timeout is not None and time.monotonic() - started >= self.timeout:
                        yield TriggerEvent(
                            {
                                "status": "timeout",
                                "batch_id": self.batch_id,
                                "message": f"{outcome.message}; still pending after {self.timeout:g} s",
                            }
                        )
                        return
                    await asyncio.sleep(self.poll_interval)
        except XaiError as error:
            yield TriggerEvent({"status": "error", "batch_id": self.batch_id, "message": str(error)})
