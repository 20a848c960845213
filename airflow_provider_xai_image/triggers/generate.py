"""XaiGenerateImagesTrigger: runs image requests on the triggerer and stores the images from there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from airflow.sdk import ObjectStoragePath
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.engine.generation import GenerationRun
from airflow_provider_xai_image.engine.ratelimit import AsyncRateLimiter, in_flight_cap
from airflow_provider_xai_image.engine.sources import read_source_images
from airflow_provider_xai_image.exceptions import error_to_event
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.storage.image_store import ImageStore

Result = TypeVar("Result")

#: Threads that download and store images at most (at 5 requests/s a few are busy).
STORAGE_THREADS = 16


class XaiGenerateImagesTrigger(BaseTrigger):
    """
    Send image requests from the triggerer's event loop at the pace of xAI's rate limit and store each image
    as it comes.

    Safe to run more than once (Airflow runs a trigger again after a triggerer restart or failover):
    before sending anything it reads the records and stored images, exactly as a retried task does,
    and requests only what is missing. Images are stored here, not on the worker, so temporary URLs
    cannot expire in between; blocking storage work runs on a thread pool of the trigger's own.
    Serialized state holds the connection id, the validated requests, their fingerprints and prices,
    and source image *URIs* (never the key or image bytes); the event holds counts, or the error's
    type and fields so that the worker raises the same typed error the synchronous path would.
    A cancelled trigger stops its requests and fires no event.

    :param requests: ``{prompt_index: request body fields}`` of the prompts to generate (full ``n``; no sources).
    :param fingerprints: ``{prompt_index: request fingerprint}``.
    :param prices: ``{prompt_index: price of one image}`` (budget and possibly billed requests).
    :param prompts: Every prompt of the task (names the prompt of images recovered from storage).
    :param folder: The task instance's output folder URI.
    :param xai_conn_id: The ``xai`` Airflow connection.
    :param source_images: Source image URIs for edits (read here, on the triggerer), or None.
    :param max_concurrency: Most requests in flight at once; None: ``ratelimit.IN_FLIGHT_CAP``. Requests
        start at the pace of the connection's ``requests_per_second``, slower on 429s (see
        :mod:`airflow_provider_xai_image.engine.ratelimit`).
    :param on_moderation: ``fail`` or ``skip``.
    :param max_cost_usd: The budget, or None.
    """

    def __init__(
        self,
        *,
        requests: dict[int, dict[str, Any]],
        fingerprints: dict[int, str],
        prices: dict[int, int],
        folder: str,
        prompts: list[str] | None = None,
        xai_conn_id: str = DEFAULT_CONN_ID,
        source_images: list[str] | None = None,
        max_concurrency: int | None = None,
        on_moderation: str = "fail",
        max_cost_usd: float | None = None,
    ) -> None:
        super().__init__()
        self.requests = {int(index): body for index, body in requests.items()}
        self.fingerprints = {int(index): fingerprint for index, fingerprint in fingerprints.items()}
        self.prices = {int(index): price for index, price in prices.items()}
        self.folder = folder
        self.prompts = prompts
        self.xai_conn_id = xai_conn_id
        self.source_images = source_images
        self.max_concurrency = max_concurrency
        self.on_moderation = on_moderation
        self.max_cost_usd = max_cost_usd

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "requests": {str(index): body for index, body in self.requests.items()},
                "fingerprints": {str(index): value for index, value in self.fingerprints.items()},
                "prices": {str(index): value for index, value in self.prices.items()},
                "folder": self.folder,
                "prompts": self.prompts,
                "xai_conn_id": self.xai_conn_id,
                "source_images": self.source_images,
                "max_concurrency": self.max_concurrency,
                "on_moderation": self.on_moderation,
                "max_cost_usd": self.max_cost_usd,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        storage_threads = min(in_flight_cap(self.max_concurrency), STORAGE_THREADS)
        pool = ThreadPoolExecutor(max_workers=storage_threads, thread_name_prefix="xai-trigger-storage")
        try:
            requests = await self._generate_and_store(pool)
        except Exception as error:
            yield TriggerEvent({"status": "error", **error_to_event(error)})
            return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        yield TriggerEvent({"status": "success", "requests": requests, "elapsed_seconds": time.monotonic() - started})

    async def _generate_and_store(self, pool: ThreadPoolExecutor) -> int:
        loop = asyncio.get_running_loop()

        def blocking(func: Callable[..., Result], *args: Any) -> asyncio.Future[Result]:
            return loop.run_in_executor(pool, partial(func, *args))

        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        await hook.aload_settings()
        # Storage is built in a thread: an fsspec filesystem built inside the running event loop (s3fs
        # is set up with asyncio.run) would silently lose the Airflow connection's settings.
        store = await blocking(lambda: ImageStore(ObjectStoragePath(self.folder), hook))
        try:
            return await self._run_requests(hook, store, blocking)
        finally:
            # The worker that finishes the task is elsewhere: this machine's spool folder goes now.
            await blocking(store.remove_spool_if_empty)

    async def _run_requests(
        self, hook: XaiHook, store: ImageStore, blocking: Callable[..., asyncio.Future[Any]]
    ) -> int:
        sources = await blocking(read_source_images, self.source_images) if self.source_images else None
        requests = {index: ImageRequest.build(**body, source_images=sources) for index, body in self.requests.items()}
        run = GenerationRun(
            store, requests, self.fingerprints, self.prices, self.max_cost_usd, self.on_moderation, self.prompts
        )
        await blocking(store.prepare)
        todo = await blocking(run.resume)
        if len(todo) < len(requests):
            self.log.info(
                "%d of %d prompt(s) were already stored by an earlier run.", len(requests) - len(todo), len(requests)
            )
        if not todo:
            return 0
        slots = asyncio.Semaphore(in_flight_cap(self.max_concurrency))
        limiter = AsyncRateLimiter(hook.settings.requests_per_second, self.log)
        failures: list[Exception] = []
        async with hook.async_client() as client:
            await hook.acheck_api_key(client)

            async def generate_one(index: int, request: ImageRequest, first_image_index: int) -> None:
                async with slots:
                    if failures:
                        return  # after a failure nothing new starts; running requests finish and are stored
                    try:
                        estimate = run.reserve(index, request)
                        try:
                            result = await hook.arun_image_request(client, request, limiter)
                        except BaseException as error:
                            run.failed(index, request, estimate, error)
                            raise
                        await blocking(run.stored, index, request, first_image_index, result, estimate)
                    except Exception as error:
                        failures.append(error)

            try:
                await asyncio.gather(*(generate_one(index, *item) for index, item in todo.items()))
            finally:
                limiter.log_final()
                await blocking(store.save_records)
        if failures:
            raise failures[0]
        return len(todo)
