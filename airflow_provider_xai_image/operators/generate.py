"""XaiGenerateImagesOperator: prompts to images in object storage, image paths to XCom."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.engine.concurrency import map_concurrently
from airflow_provider_xai_image.engine.generation import GenerationRun, resume
from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests, plan_uri, remove_plan
from airflow_provider_xai_image.engine.task_parameters import OnModeration, TaskParameters
from airflow_provider_xai_image.exceptions import XaiError
from airflow_provider_xai_image.hooks.mixin import failing_without_retry
from airflow_provider_xai_image.ledger.records import RequestRecord
from airflow_provider_xai_image.operators.base import XaiImageRequestOperator
from airflow_provider_xai_image.storage.image_store import ImageStore
from airflow_provider_xai_image.triggers.events import event_result

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_xai_image.engine.ratelimit import RateLimiter
    from airflow_provider_xai_image.hooks.xai import XaiHook


class XaiGenerateImagesOperator(XaiImageRequestOperator):
    """
    Generate images with xAI's Grok Imagine models (or edit source images) and store them.

    Each prompt gets ``n`` images, stored under ``output_uri`` as
    ``<run_id>/<task_id>[/map-<i>]/p<prompt>-i<image>-<fingerprint>.<ext>`` with a ``manifest.json``
    written last. Returns the list of image URIs (XCom ``return_value``); the manifest URI goes to XCom
    ``manifest``. A retried task reuses the images an earlier try stored and pays only for the rest.

    Before any paid request the task checks its parameters, that the output location is writable, and
    the API key (free ``GET /api-key``); failures a retry cannot fix fail the task without retries.

    :param prompt: One prompt or a list of prompts (templated). Requests start at the pace xAI's rate
        limit allows (the connection's ``requests_per_second``, slower on 429s), however long each takes.
    :param output_uri: Where images go, an object-storage URI such as ``s3://<conn_id>@bucket/prefix/``
        or ``file:///data/images/`` (templated).
    :param n: Images per prompt, 1..10 (templated).
    :param model: Model id; default the connection's ``default_model`` (templated).
    :param aspect_ratio: One of ``1:1 16:9 9:16 4:3 3:4 3:2 2:3 2:1 1:2 19.5:9 9:19.5 20:9 9:20 auto`` (templated).
    :param resolution: ``1k`` or ``2k`` (templated).
    :param quality: ``low`` or ``medium`` (``grok-imagine-image-2.0``; templated).
    :param response_format: ``url`` (images downloaded from a temporary URL) or ``b64_json`` (inline).
    :param source_images: 1..3 images to edit: object-storage URIs (``s3://...``, ``file://...``),
        https URLs or data URIs; typically an upstream task's XCom (templated).
    :param max_concurrency: Most requests in flight at once; None (default): a safety cap of 128 that
        rarely binds (the pace decides). Set it to keep a task smaller than the rate limit allows.
    :param on_moderation: ``fail`` fails the task naming the prompt index when an image is filtered;
        ``skip`` records the filtered image in the manifest and goes on.
    :param max_cost_usd: Refuse before any request when the estimate is over this, and stop once the
        cost reported by xAI (plus what may have been billed) would pass it. None for no limit.
    :param user: End-user id passed to xAI for abuse monitoring (templated).
    :param xai_conn_id: The ``xai`` Airflow connection (templated).
    :param deferrable: Run the requests on the triggerer (``XaiGenerateImagesTrigger``), freeing the
        worker while xAI works; default ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("prompt", *XaiImageRequestOperator.template_fields)
    ui_color = "#e8e0f8"

    def __init__(
        self,
        *,
        prompt: str | list[str],
        max_concurrency: int | None = None,
        on_moderation: OnModeration = "fail",
        max_cost_usd: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        TaskParameters.check(max_concurrency=max_concurrency, on_moderation=on_moderation, max_cost_usd=max_cost_usd)
        super().__init__(**kwargs)
        self.prompt = prompt
        self.max_concurrency = max_concurrency
        self.on_moderation = on_moderation
        self.max_cost_usd = max_cost_usd
        self.deferrable = deferrable

    @property
    def prompts(self) -> list[str]:
        """The prompts, checked: a string or a non-empty list of non-blank strings (the list itself, not a copy)."""
        TaskParameters.check(required=("prompt",), prompt=self.prompt)
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def parameters(self) -> dict[str, Any]:
        """The request parameters recorded in the manifest (no secrets, no image bytes)."""
        return {
            **super().parameters(),
            "max_concurrency": self.max_concurrency,
            "on_moderation": self.on_moderation,
            "max_cost_usd": self.max_cost_usd,
        }

    # -- running -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[str]:
        with failing_without_retry(self.log):
            return self._execute(context)

    def _execute(self, context: Context) -> list[str]:
        started = time.monotonic()
        prompts = self.prompts
        requests = PlannedRequests.of(self.build_requests(prompts), prompts)
        store = self.image_store(context)
        store.prepare()
        todo = resume(store, requests, self.on_moderation)
        if len(todo) < len(prompts):
            self.log.info(
                "Reusing the images of %d of %d prompts stored by an earlier try under %s; generating %d.",
                len(prompts) - len(todo),
                len(prompts),
                store.folder,
                len(todo),
            )
        if not todo:
            self.check_complete(requests.by_index, store)
            return self.finish(context, store, time.monotonic() - started)
        self.hook.check_api_key()
        plan = GenerationPlan(
            requests=requests,
            price_usd_ticks=self.hook.price_per_image_usd_ticks(requests.template),
            max_cost_usd=self.max_cost_usd,
            on_moderation=self.on_moderation,
            max_concurrency=self.max_concurrency,
        )
        run = GenerationRun(store, plan)
        run.budget.check_estimate(sum(run.estimate(request) for request, _ in todo.values()))
        if self.deferrable:
            # Imported here: DAG files import this module on every parse, and the trigger brings the HTTP clients.
            from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

            saved_uri, digest = plan.save(store.folder)
            self.log.info("Deferring %d request(s) to the triggerer; images are stored from there.", len(todo))
            self.defer(
                trigger=XaiGenerateImagesTrigger(plan_uri=saved_uri, plan_digest=digest, xai_conn_id=self.xai_conn_id),
                method_name="execute_complete",
            )
        from airflow_provider_xai_image.engine.ratelimit import RateLimiter, in_flight_cap  # not on every DAG parse

        limiter = RateLimiter(self.hook.settings.requests_per_second, self.log)
        in_flight = min(in_flight_cap(self.max_concurrency), len(todo))
        self.log.info(
            "Generating %d image(s) for %d prompt(s) with %s into %s, starting at %.2f requests/s "
            "(at most %d in flight)",
            sum(request.n for request, _ in todo.values()),
            len(todo),
            requests.template.model,
            store.folder,
            limiter.core.rate,
            in_flight,
        )
        with store:
            generate = partial(_generate_one, self.hook, run, limiter)
            try:
                deque(map_concurrently(generate, todo.items(), in_flight), maxlen=0)  # records: in the store
            finally:
                limiter.log_final()
        self.check_complete(requests.by_index, store)
        return self.finish(context, store, time.monotonic() - started)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        """Back from the triggerer: the images are stored; write the manifest from their records."""
        with failing_without_retry(self.log):
            result = event_result(event)
            store = self.image_store(context)
            requests = self.requests_after_trigger(store, result.get("plan_digest"))
            store.load_records(requests.fingerprint_of, requests.prompts)
            self.check_complete(requests.by_index, store)
            uris = self.finish(context, store, float(result.get("elapsed_seconds", 0.0)))
            remove_plan(store.folder, self.log)
            return uris

    def requests_after_trigger(self, store: ImageStore, plan_digest: str | None) -> PlannedRequests:
        """The requests the trigger ran: from the plan this task wrote (checked against its digest), or
        rebuilt, sources read again, after a trigger of the previous version (which wrote no plan).

        :param store: The task instance's store.
        :param plan_digest: The plan's digest, as the trigger's event reports it (None: no plan).
        """
        if plan_digest:
            return GenerationPlan.load(plan_uri(store.folder), plan_digest).requests
        prompts = self.prompts
        return PlannedRequests.of(self.build_requests(prompts), prompts)

    def check_complete(self, requests: Mapping[int, ImageRequest], store: ImageStore) -> None:
        """Fail (a retry resumes) when a prompt has fewer images stored or filtered than ``n``.

        :param requests: Every prompt's request, by index.
        :param store: The task instance's store, its records loaded.
        """
        progress = store.ledger.progress
        short = [index for index in requests if progress.done_images(index) < requests[index].n]
        if short:
            shown = {index: store.ledger.current_record(index) for index in short[:10]}
            details = "; ".join(
                f"prompt {index}: {record.error if record else 'no record'}" for index, record in shown.items()
            )
            raise XaiError(
                f"{len(short)} of {len(requests)} prompt(s) lack images: {details}. "
                "A retry generates only the missing images."
            )


def _generate_one(
    hook: XaiHook, run: GenerationRun, limiter: RateLimiter, item: tuple[int, tuple[ImageRequest, int]]
) -> RequestRecord:
    index, (request, first_image_index) = item
    estimate = run.reserve(request)
    try:
        result = hook.run_image_request(request, limiter)
    except BaseException as error:
        run.failed(index, request, estimate, error)
        raise
    return run.stored(index, request, first_image_index, result, estimate)
