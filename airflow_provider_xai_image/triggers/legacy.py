"""The generate trigger as the previous version serialized it, still run after an upgrade.

A task deferred before the upgrade has a trigger row holding its requests (without their sources), their
fingerprints and prices, every prompt and the source image URIs. Its plan is rebuilt here, on the
triggerer, the way the previous version did: the sources are read again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests
from airflow_provider_xai_image.engine.sources import read_source_images
from airflow_provider_xai_image.engine.task_parameters import OnModeration
from airflow_provider_xai_image.exceptions import XaiPlanError
from airflow_provider_xai_image.ledger.records import request_fingerprint


class LegacyTriggerKwargs(BaseModel):
    """The previous version's serialized ``XaiGenerateImagesTrigger`` (its ``serialize()`` kwargs).

    :param requests: ``{prompt_index: request body fields}`` of the prompts left (full ``n``; no sources).
    :param fingerprints: ``{prompt_index: request fingerprint}`` of those prompts.
    :param prices: ``{prompt_index: price of one image}``.
    :param folder: The task instance's output folder URI.
    :param prompts: Every prompt of the task.
    :param source_images: Source image URIs for edits, or None.
    :param max_concurrency: Most requests in flight at once, or None.
    :param on_moderation: ``fail`` or ``skip``.
    :param max_cost_usd: The budget, or None.
    """

    model_config = ConfigDict(extra="forbid")

    requests: dict[int, dict[str, Any]]
    fingerprints: dict[int, str]
    prices: dict[int, int]
    folder: str
    prompts: list[str]
    source_images: list[str] | None = None
    max_concurrency: int | None = None
    on_moderation: OnModeration = "fail"
    max_cost_usd: float | None = None

    def plan(self) -> GenerationPlan:
        """The plan the previous version's worker would have built (blocking: reads the source images).

        :raises XaiSourceImageError: a source image cannot be read here.
        """
        if not self.requests or max(self.requests) >= len(self.prompts):
            raise XaiPlanError("The trigger of the previous version holds no request, or one of no prompt")
        sources = read_source_images(self.source_images) if self.source_images else None
        body = next(iter(self.requests.values()))
        if any({**other, "prompt": ""} != {**body, "prompt": ""} for other in self.requests.values()):
            raise XaiPlanError("The requests of the previous version's trigger differ in more than their prompt")
        template = ImageRequest.build(**{**body, "prompt": self.prompts[0]}, source_images=sources)
        fingerprints = [
            self.fingerprints.get(index) or request_fingerprint(template.model_copy(update={"prompt": prompt}))
            for index, prompt in enumerate(self.prompts)
        ]
        return GenerationPlan(
            requests=PlannedRequests(template=template, prompts=self.prompts, fingerprints=fingerprints),
            price_usd_ticks=max(self.prices.values(), default=0),
            max_cost_usd=self.max_cost_usd,
            on_moderation=self.on_moderation,
            max_concurrency=self.max_concurrency,
        )

    def serialize(self) -> dict[str, Any]:
        """The kwargs as the previous version wrote them (prompt indices as text)."""
        fields = self.model_dump()
        for name in ("requests", "fingerprints", "prices"):
            fields[name] = {str(index): value for index, value in fields[name].items()}
        return fields
