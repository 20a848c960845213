"""XaiGenerateImagesOperator: prompts to images in object storage, image paths to XCom."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow.providers.common.compat.sdk import conf

from airflow_provider_xai_image.budget import CostBudget
from airflow_provider_xai_image.concurrency import map_concurrently
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.exceptions import XaiError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.models import ImageRequest
from airflow_provider_xai_image.operators.base import XaiImageRequestOperator
from airflow_provider_xai_image.sources import check_source_count, to_data_uri
from airflow_provider_xai_image.storage import (
    ImageStore,
    RequestRecord,
    check_moderation,
    merge_records,
    remaining_requests,
)
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

OnModeration = Literal["fail", "skip"]
ON_MODERATION_CHOICES: tuple[str, ...] = get_args(OnModeration)


class XaiGenerateImagesOperator(XaiImageRequestOperator):
    """
    Generate images with xAI's Grok Imagine models (or edit source images) and store them.

    Each prompt gets ``n`` images, stored under ``output_uri`` as
    ``<run_id>/<task_id>[/map-<i>]/p<prompt>-i<image>.<ext>`` with a ``manifest.json`` written last.
    Returns the list of image URIs (XCom ``return_value``); the manifest URI goes to XCom ``manifest``.
    A retried task reuses the images an earlier try stored and pays only for the rest.

    :param prompt: One prompt or a list of prompts (templated). Prompts run concurrently.
    :param output_uri: Where images go, an object-storage URI such as ``s3://<conn_id>@bucket/prefix/``
        or ``file:///data/images/`` (templated).
    :param n: Images per prompt, 1..10 (templated).
    :param model: Model id; default the connection's ``default_model`` (templated).
    :param aspect_ratio: One of ``1:1 16:9 9:16 4:3 3:4 3:2 2:3 2:1 1:2 19.5:9 9:19.5 20:9 9:20 auto`` (templated).
    :param resolution: ``1k`` or ``2k`` (templated).
    :param quality: ``low``, ``medium`` or ``high``.
    :param response_format: ``url`` (images downloaded from a temporary URL) or ``b64_json`` (inline).
    :param source_images: 1..3 images to edit: object-storage URIs (``s3://...``, ``file://...``) or
        https URLs; typically an upstream task's XCom (templated).
    :param max_concurrency: Most requests in flight at once.
    :param on_moderation: ``fail`` fails the task naming the prompt index when an image is filtered;
        ``skip`` records the filtered image in the manifest and goes on.
    :param max_cost_usd: Refuse before any request when the estimate is over this, and stop once the
        cost reported by xAI would pass it. None for no limit.
    :param user: End-user id passed to xAI for abuse monitoring.
    :param xai_conn_id: The ``xai`` Airflow connection.
    :param deferrable: Run the requests on the triggerer (``XaiGenerateImagesTrigger``), freeing the
        worker while xAI works; default ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "output_uri",
        "model",
        "source_images",
        "aspect_ratio",
        "resolution",
        "n",
    )
    ui_color = "#e8e0f8"

    def __init__(
        self,
        *,
        prompt: str | list[str],
        output_uri: str,
        n: int = 1,
        model: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        response_format: str = "url",
        source_images: str | list[str] | None = None,
        max_concurrency: int = 4,
        on_moderation: OnModeration = "fail",
        max_cost_usd: float | None = None,
        user: str | None = None,
        xai_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency: must be an integer >= 1, got {max_concurrency!r}")
        if on_moderation not in ON_MODERATION_CHOICES:
            raise ValueError(f"on_moderation: must be one of {ON_MODERATION_CHOICES}, got {on_moderation!r}")
        if max_cost_usd is not None and max_cost_usd < 0:
            raise ValueError(f"max_cost_usd: must be >= 0 or None, got {max_cost_usd!r}")
        super().__init__(
            output_uri=output_uri,
            xai_conn_id=xai_conn_id,
            n=n,
            model=model,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            **kwargs,
        )
        self.prompt = prompt
        self.response_format = response_format
        self.source_images = source_images
        self.max_concurrency = max_concurrency
        self.on_moderation = on_moderation
        self.max_cost_usd = max_cost_usd
        self.user = user
        self.deferrable = deferrable

    # -- preparing: everything checked before any paid request ------------------------------------

    @property
    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt or [])
        if not prompts or not all(isinstance(prompt, str) for prompt in prompts):
            raise ValueError(f"prompt: give a prompt or a non-empty list of prompt strings, got {self.prompt!r}")
        return prompts

    @property
    def sources(self) -> list[str] | None:
        if self.source_images is None:
            return None
        return [self.source_images] if isinstance(self.source_images, str) else list(self.source_images)

    def build_requests(self, hook: XaiHook) -> list[ImageRequest]:
        """Validate every parameter, read the source images, and build one request per prompt."""
        params = {**self.request_parameters(), "response_format": self.response_format, "user": self.user}
        requests = [hook.build_request(prompt, **params) for prompt in self.prompts]
        sources = self.sources
        if sources is None:
            return requests
        check_source_count(sources)
        data_uris = tuple(to_data_uri(source) for source in sources)
        return [hook.build_request(request.prompt, **params, source_images=data_uris) for request in requests]

    def parameters(self) -> dict[str, Any]:
        """The request parameters recorded in the manifest (no secrets, no image bytes)."""
        return {
            **super().parameters(),
            "response_format": self.response_format,
            "source_images": self.sources,
            "max_concurrency": self.max_concurrency,
            "on_moderation": self.on_moderation,
            "max_cost_usd": self.max_cost_usd,
        }

    # -- running -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[str]:
        started = time.monotonic()
        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        requests = self.build_requests(hook)
        store = self.image_store(context, hook)
        records = store.load_records(self.prompts)
        check_moderation(records.values(), self.on_moderation)
        todo = remaining_requests(requests, records)
        if records:
            self.log.info(
                "Reusing the images of %d of %d prompts stored by an earlier try under %s; generating %d.",
                len(requests) - len(todo),
                len(requests),
                store.folder,
                len(todo),
            )
        budget = CostBudget(self.max_cost_usd, sum(record.cost_usd_ticks for record in records.values()))
        estimate = 0
        if self.max_cost_usd is not None and todo:
            estimate = hook.image_price_usd_ticks(requests[0].model) * requests[0].n
            budget.check_estimate(estimate * len(todo))
        if todo and self.deferrable:
            self.log.info("Deferring %d request(s) to the triggerer; images are stored from there.", len(todo))
            self.defer(
                trigger=XaiGenerateImagesTrigger(
                    requests={
                        index: request.model_dump(exclude={"source_images"}, exclude_none=True)
                        for index, (request, _) in todo.items()
                    },
                    first_image_indexes={index: first for index, (_, first) in todo.items() if first},
                    folder=str(store.folder),
                    xai_conn_id=self.xai_conn_id,
                    source_images=self.sources,
                    max_concurrency=self.max_concurrency,
                    on_moderation=self.on_moderation,
                    max_cost_usd=self.max_cost_usd,
                    spent_usd_ticks=budget.spent,
                    estimate_usd_ticks=estimate,
                ),
                method_name="execute_complete",
            )
        if todo:
            self.log.info(
                "Generating %d image(s) for %d prompt(s) with %s, %d at a time, into %s",
                sum(request.n for request, _ in todo.values()),
                len(todo),
                requests[0].model,
                min(self.max_concurrency, len(todo)),
                store.folder,
            )
            with store:
                for record in self._generate(hook, store, budget, estimate, todo):
                    records[record.prompt_index] = merge_records(records.get(record.prompt_index), record)
        return self.finish(context, store, records, time.monotonic() - started)

    def _generate(
        self,
        hook: XaiHook,
        store: ImageStore,
        budget: CostBudget,
        estimate: int,
        todo: dict[int, tuple[ImageRequest, int]],
    ) -> Iterator[RequestRecord]:
        def generate_one(item: tuple[int, tuple[ImageRequest, int]]) -> RequestRecord:
            index, (request, first_image_index) = item
            budget.reserve(estimate)
            try:
                result = hook.run_image_request(request)
            except BaseException:
                budget.settle(estimate, 0)
                raise
            record = store.store_result(index, request.prompt, result, first_image_index)
            budget.settle(estimate, result.cost_usd_ticks)
            return record

        for record in map_concurrently(generate_one, todo.items(), self.max_concurrency):
            check_moderation([record], self.on_moderation)
            yield record

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        """Back from the triggerer: the images are stored; write the manifest from their records."""
        if event.get("status") != "success":
            raise XaiError(f"Deferred image generation failed: {event.get('message')}")
        store = self.image_store(context, XaiHook(xai_conn_id=self.xai_conn_id))
        return self.finish(context, store, store.load_records(self.prompts), float(event.get("elapsed_seconds", 0.0)))

    def finish(
        self, context: Context, store: ImageStore, records: dict[int, RequestRecord], elapsed: float
    ) -> list[str]:
        missing = sorted(set(range(len(self.prompts))) - records.keys())
        if missing:
            raise XaiError(f"No images were stored for prompt index(es) {missing}; the task can be retried.")
        check_moderation(records.values(), self.on_moderation)
        return super().finish(context, store, records, elapsed)
