"""XaiGenerateImagesTrigger: runs a generation plan on the triggerer and stores the images from there."""

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
from airflow_provider_xai_image.engine.generation import GenerationRun, resume
from airflow_provider_xai_image.engine.plan import GenerationPlan
from airflow_provider_xai_image.engine.ratelimit import AsyncRateLimiter, in_flight_cap
from airflow_provider_xai_image.exceptions import XaiPlanError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.storage.image_store import ImageStore
from airflow_provider_xai_image.triggers.events import error_event, success_event
from airflow_provider_xai_image.triggers.legacy import LegacyTriggerKwargs

Result = TypeVar("Result")

#: Threads that download and store images at most (at 5 requests/s a few are busy).
STORAGE_THREADS = 16


class XaiGenerateImagesTrigger(BaseTrigger):
    """
    Run a generation plan from the triggerer's event loop at the pace of xAI's rate limit and store each image
    as it comes.

    Safe to run more than once (Airflow runs a trigger again after a triggerer restart or failover):
    before sending anything it reads the records and stored images, exactly as a retried task does,
    and requests only what is missing. Images are stored here, not on the worker, so temporary URLs
    cannot expire in between; blocking storage work runs on a thread pool of the trigger's own.
    Serialized state is the URI and sha256 digest of the plan the worker wrote into the task's folder
    (:mod:`~airflow_provider_xai_image.engine.plan`: requests with their sources, fingerprints, price,
    limits) and the connection id; never the key, a prompt or image bytes. A plan whose digest differs is
    refused before anything is sent. The event (:mod:`~airflow_provider_xai_image.triggers.events`) holds
    counts and the plan's digest, or the error's type and fields so that the worker raises the same
    typed error the synchronous path would. A cancelled trigger stops its requests and fires no event.

    Requests start at the pace of the connection's ``requests_per_second``, slower on 429s (see
    :mod:`airflow_provider_xai_image.engine.ratelimit`), at most the plan's ``max_concurrency`` in flight.

    :param plan_uri: Where the worker wrote the plan: ``plan.json`` in the task instance's folder.
    :param plan_digest: The plan's sha256 digest (hex).
    :param xai_conn_id: The ``xai`` Airflow connection.
    :param legacy: The kwargs of a trigger the previous version serialized (requests, fingerprints, prices,
        folder, prompts, source_images, ...), run as that version ran them.
    """

    def __init__(
        self,
        *,
        plan_uri: str | None = None,
        plan_digest: str | None = None,
        xai_conn_id: str = DEFAULT_CONN_ID,
        **legacy: Any,
    ) -> None:
        super().__init__()
        self.plan_uri = plan_uri
        self.plan_digest = plan_digest
        self.xai_conn_id = xai_conn_id
        self.legacy = LegacyTriggerKwargs.model_validate(legacy) if legacy else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.legacy is not None:
            return classpath, {**self.legacy.serialize(), "xai_conn_id": self.xai_conn_id}
        return classpath, {"plan_uri": self.plan_uri, "plan_digest": self.plan_digest, "xai_conn_id": self.xai_conn_id}

    def _plan(self) -> tuple[GenerationPlan, str]:
        """The plan and the task's folder (blocking: reads storage, or the sources of a legacy trigger)."""
        if self.legacy is not None:
            return self.legacy.plan(), self.legacy.folder
        if not self.plan_uri or not self.plan_digest:
            raise XaiPlanError("The trigger names no plan (plan_uri and plan_digest are required)")
        return GenerationPlan.load(self.plan_uri, self.plan_digest), self.plan_uri.rpartition("/")[0]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        try:
            plan, folder = await asyncio.to_thread(self._plan)
            requests = await self._generate_and_store(plan, folder)
        except Exception as error:
            yield TriggerEvent(error_event(error))
            return
        elapsed = time.monotonic() - started
        yield TriggerEvent(success_event(requests=requests, elapsed_seconds=elapsed, plan_digest=self.plan_digest))

    async def _generate_and_store(self, plan: GenerationPlan, folder: str) -> int:
        loop = asyncio.get_running_loop()
        storage_threads = min(in_flight_cap(plan.max_concurrency), STORAGE_THREADS)
        pool = ThreadPoolExecutor(max_workers=storage_threads, thread_name_prefix="xai-trigger-storage")

        def blocking(func: Callable[..., Result], *args: Any) -> asyncio.Future[Result]:
            return loop.run_in_executor(pool, partial(func, *args))

        try:
            hook = XaiHook(xai_conn_id=self.xai_conn_id)
            await hook.aload_settings()
            # Storage is built in a thread: an fsspec filesystem built inside the running event loop (s3fs
            # is set up with asyncio.run) would silently lose the Airflow connection's settings.
            store = await blocking(lambda: ImageStore(ObjectStoragePath(folder), hook))
            try:
                return await self._run_plan(hook, store, plan, blocking)
            finally:
                # The worker that finishes the task is elsewhere: this machine's spool folder goes now.
                await blocking(store.remove_spool_if_empty)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    async def _run_plan(
        self, hook: XaiHook, store: ImageStore, plan: GenerationPlan, blocking: Callable[..., asyncio.Future[Any]]
    ) -> int:
        await blocking(store.prepare)
        todo = await blocking(resume, store, plan.requests, plan.on_moderation)
        prompts = len(plan.requests.prompts)
        if len(todo) < prompts:
            self.log.info("%d of %d prompt(s) were already stored by an earlier run.", prompts - len(todo), prompts)
        if not todo:
            return 0
        run = GenerationRun(store, plan)
        slots = asyncio.Semaphore(in_flight_cap(plan.max_concurrency))
        limiter = AsyncRateLimiter(hook.settings.requests_per_second, self.log)
        failures: list[Exception] = []
        async with hook.async_client() as client:
            await hook.acheck_api_key(client)

            async def generate_one(index: int, request: ImageRequest, first_image_index: int) -> None:
                async with slots:
                    if failures:
                        return  # after a failure nothing new starts; running requests finish and are stored
                    try:
                        estimate = run.reserve(request)
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
