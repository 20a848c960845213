"""The plan of one generation task, built once on the worker: every request with its sources as read, each
request's fingerprint, the price of one image and the task's limits.

The synchronous path runs it at once; the deferrable path writes it as ``plan.json`` into the task
instance's folder and hands the trigger only its URI and sha256 digest. The trigger and
``execute_complete`` read it back and refuse it when its digest differs (what storage returns is data,
and this data drives paid requests), so neither reads a source image again: a ``file://`` source local
to the worker need not exist on the triggerer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.engine.generation import ByPrompt
from airflow_provider_xai_image.engine.task_parameters import OnModeration
from airflow_provider_xai_image.exceptions import XaiPlanError
from airflow_provider_xai_image.ledger.records import FINGERPRINT_CHARS, request_fingerprint
from airflow_provider_xai_image.storage.layout import PLAN_NAME
from airflow_provider_xai_image.storage.publishing import publish

#: The largest plan read back: 100,000 prompts of 1,000 characters and three 10 MiB sources fit well.
MAX_PLAN_BYTES = 512 * 1024 * 1024

Fingerprint = Annotated[str, StringConstraints(pattern=rf"^[0-9a-f]{{{FINGERPRINT_CHARS}}}$")]


class PlannedRequests(BaseModel):
    """Every prompt's request, from one template, and its fingerprint: what resuming needs.

    :param template: The request of the first prompt, its source images as read (data URIs or https URLs);
        the others differ only in their prompt.
    :param prompts: Every prompt of the task, by index.
    :param fingerprints: Each prompt's request fingerprint, by index.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: ImageRequest
    prompts: list[str] = Field(min_length=1)
    fingerprints: list[Fingerprint]

    @model_validator(mode="after")
    def _one_fingerprint_per_prompt(self) -> PlannedRequests:
        if len(self.fingerprints) != len(self.prompts):
            raise ValueError(f"{len(self.fingerprints)} fingerprints for {len(self.prompts)} prompts")
        return self

    @classmethod
    def of(cls, requests: Mapping[int, ImageRequest], prompts: Sequence[str]) -> PlannedRequests:
        """The plan of ``requests`` (indices ``0..len-1``, as ``build_requests`` returns them); computes
        every fingerprint, the one time they are computed.

        :param requests: Every prompt's request, by index.
        :param prompts: The prompts of those requests.
        """
        return cls(
            template=requests[0],
            prompts=list(prompts),
            fingerprints=[request_fingerprint(requests[index]) for index in range(len(prompts))],
        )

    @property
    def by_index(self) -> Mapping[int, ImageRequest]:
        """Each prompt's request by index, built when asked for."""
        prompts, template = self.prompts, self.template
        return ByPrompt(len(prompts), lambda index: template.model_copy(update={"prompt": prompts[index]}))

    def fingerprint_of(self, index: int) -> str | None:
        """The fingerprint of prompt ``index``'s request; None for an index the task does not have."""
        return self.fingerprints[index] if 0 <= index < len(self.fingerprints) else None


class GenerationPlan(BaseModel):
    """What one generation task sends and within which limits; JSON both ways.

    :param requests: Every prompt's request and fingerprint.
    :param price_usd_ticks: The price of one image (the prompts share every priced parameter).
    :param max_cost_usd: The budget, or None.
    :param on_moderation: ``fail`` or ``skip``.
    :param max_concurrency: Most requests in flight at once; None: the safety cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: PlannedRequests
    price_usd_ticks: int = Field(ge=0)
    max_cost_usd: float | None = None
    on_moderation: OnModeration = "fail"
    max_concurrency: int | None = Field(default=None, ge=1)

    def save(self, folder: ObjectStoragePath) -> tuple[str, str]:
        """Publish the plan whole as ``plan.json`` in ``folder``; return its URI and sha256 digest.

        :param folder: The task instance's folder.
        :raises XaiPlanError: the plan is over :data:`MAX_PLAN_BYTES`, or storage refused it.
        """
        data = self.model_dump_json().encode()
        uri = plan_uri(folder)
        if len(data) > MAX_PLAN_BYTES:
            raise XaiPlanError(
                f"The plan of this task is {len(data)} bytes, over {MAX_PLAN_BYTES}: run it with deferrable=False "
                "or split its prompts over mapped tasks"
            )
        try:
            publish(folder.fs, _plan_path(folder), data=data)
        except Exception as error:
            raise XaiPlanError(f"Upload of {uri} failed: {type(error).__name__}: {error}") from error
        return uri, hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, uri: str, digest: str) -> GenerationPlan:
        """The plan at ``uri``, refused unless its sha256 digest is ``digest``.

        :param uri: Where the worker wrote it.
        :param digest: The sha256 digest the worker computed.
        :raises XaiPlanError: it cannot be read, is too large, or is not the plan the worker wrote.
        """
        try:
            with ObjectStoragePath(uri).open("rb") as stream:
                data = stream.read(MAX_PLAN_BYTES + 1)
        except Exception as error:
            raise XaiPlanError(f"The plan {uri} cannot be read: {type(error).__name__}; a retry plans again") from None
        if len(data) > MAX_PLAN_BYTES:
            raise XaiPlanError(f"The plan {uri} is over {MAX_PLAN_BYTES} bytes: refused")
        if hashlib.sha256(data).hexdigest() != digest:
            raise XaiPlanError(
                f"The plan {uri} is not the one the worker wrote (its sha256 differs): refused; a retry plans again"
            )
        try:
            return cls.model_validate_json(data)
        except ValidationError as error:
            raise XaiPlanError(f"The plan {uri} is not a plan: {error.error_count()} error(s)") from None


def plan_uri(folder: ObjectStoragePath) -> str:
    """Where a task instance's plan goes: ``plan.json`` in its folder.

    :param folder: The task instance's folder.
    """
    return f"{str(folder).rstrip('/')}/{PLAN_NAME}"


def _plan_path(folder: ObjectStoragePath) -> str:
    """The plan's path within its filesystem (what ``fs`` calls take)."""
    return f"{folder.path.rstrip('/')}/{PLAN_NAME}"


def remove_plan(folder: ObjectStoragePath, log: Any) -> None:
    """Remove a task instance's plan once its manifest is written (it holds the prompts and source images).
    Best effort: a plan left behind is a file no reader follows, and the next deferral replaces it.

    :param folder: The task instance's folder.
    :param log: The task's logger.
    """
    try:
        folder.fs.rm_file(_plan_path(folder))
    except FileNotFoundError:
        pass
    except Exception as error:
        log.warning("Could not remove %s: %s: %s", plan_uri(folder), type(error).__name__, error)
