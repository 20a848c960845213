"""XaiGenerateImagesTrigger: runs image requests on the triggerer and stores the images from there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import ObjectStoragePath
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_xai_image.budget import CostBudget
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.models import ImageRequest
from airflow_provider_xai_image.sources import to_data_uri
from airflow_provider_xai_image.storage import ImageStore, check_moderation


class XaiGenerateImagesTrigger(BaseTrigger):
    """
    Send image requests concurrently from the triggerer's event loop and store each image as it comes.

    Images are stored here, not on the worker, so temporary URLs cannot expire in between; the
    worker then only writes the manifest from the stored records. Serialized state holds the
    connection id, the validated requests and source image *URIs* (never the key or image bytes);
    the event holds counts only, whatever the number of images.

    :param xai_conn_id: The ``xai`` Airflow connection.
    :param requests: ``{prompt_index: request body fields}`` of the requests still to run (no source images).
    :param first_image_indexes: ``{prompt_index: index of its first image}`` where not 0 (after a recovery).
    :param source_images: Source image URIs for edits (read here, on the triggerer), or None.
    :param folder: The task instance's output folder URI.
    :param max_concurrency: Most requests in flight at once.
    :param on_moderation: ``fail`` or ``skip``.
    :param max_cost_usd: The budget, or None.
    :param spent_usd_ticks: Already spent by earlier tries.
    :param estimate_usd_ticks: Estimated cost of one request.
    """

    def __init__(
        self,
        *,
        requests: dict[int, dict[str, Any]],
        folder: str,
        first_image_indexes: dict[int, int] | None = None,
        xai_conn_id: str = DEFAULT_CONN_ID,
        source_images: list[str] | None = None,
        max_concurrency: int = 4,
        on_moderation: str = "fail",
        max_cost_usd: float | None = None,
        spent_usd_ticks: int = 0,
        estimate_usd_ticks: int = 0,
    ) -> None:
        super().__init__()
        self.requests = {int(index): body for index, body in requests.items()}
        self.folder = folder
        self.first_image_indexes = {int(index): first for index, first in (first_image_indexes or {}).items()}
        self.xai_conn_id = xai_conn_id
        self.source_images = source_images
        self.max_concurrency = max_concurrency
        self.on_moderation = on_moderation
        self.max_cost_usd = max_cost_usd
        self.spent_usd_ticks = spent_usd_ticks
        self.estimate_usd_ticks = estimate_usd_ticks

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "requests": {str(index): body for index, body in self.requests.items()},
                "folder": self.folder,
                "first_image_indexes": {str(index): first for index, first in self.first_image_indexes.items()},
                "xai_conn_id": self.xai_conn_id,
                "source_images": self.source_images,
                "max_concurrency": self.max_concurrency,
                "on_moderation": self.on_moderation,
                "max_cost_usd": self.max_cost_usd,
                "spent_usd_ticks": self.spent_usd_ticks,
                "estimate_usd_ticks": self.estimate_usd_ticks,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        try:
            stored = await self._generate_and_store()
        except Exception as error:
            yield TriggerEvent({"status": "error", "message": f"{type(error).__name__}: {error}"})
            return
        yield TriggerEvent({"status": "success", "requests": stored, "elapsed_seconds": time.monotonic() - started})

    async def _generate_and_store(self) -> int:
        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        await hook.aload_settings()
        # Storage work runs in threads: an fsspec filesystem built inside the running event loop (s3fs
        # is set up with asyncio.run) would silently lose the Airflow connection's settings.
        store = await asyncio.to_thread(lambda: ImageStore(ObjectStoragePath(self.folder), hook))
        budget = CostBudget(self.max_cost_usd, self.spent_usd_ticks)
        sources = None
        if self.source_images:
            sources = await asyncio.to_thread(lambda: tuple(to_data_uri(uri) for uri in self.source_images or ()))
        requests = {index: ImageRequest.build(**body, source_images=sources) for index, body in self.requests.items()}
        slots = asyncio.Semaphore(self.max_concurrency)
        failures: list[BaseException] = []
        async with hook.async_client() as client:

            async def generate_one(index: int, request: ImageRequest) -> None:
                async with slots:
                    if failures:
                        return  # after a failure nothing new starts; running requests finish and are stored
                    try:
                        budget.reserve(self.estimate_usd_ticks)
                        try:
                            result = await hook.arun_image_request(client, request)
                        except BaseException:
                            budget.settle(self.estimate_usd_ticks, 0)
                            raise
                        first_image_index = self.first_image_indexes.get(index, 0)
                        record = await asyncio.to_thread(
                            store.store_result, index, request.prompt, result, first_image_index
                        )
                        budget.settle(self.estimate_usd_ticks, result.cost_usd_ticks)
                        check_moderation([record], self.on_moderation)
                    except BaseException as error:
                        failures.append(error)

            try:
                await asyncio.gather(*(generate_one(index, request) for index, request in requests.items()))
            finally:
                await asyncio.to_thread(store.save_records)
        if failures:
            raise failures[0]
        return len(requests)
