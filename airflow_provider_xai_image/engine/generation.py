"""One task's image requests, shared by the worker path and the trigger: what is left to pay for,
the budget, and recording each outcome. What is sent comes from the task's plan
(:mod:`~airflow_provider_xai_image.engine.plan`), built once on the worker.

Both paths run the same steps, so a retried task and a trigger run a second time (after a
triggerer restart) behave alike: records and stored images are read first, only what is missing
is requested, and every outcome (images, a failed image, a request that may have been billed) is
recorded per image so a second run can neither duplicate nor lose one. Nothing is held per prompt but
its prompt, its fingerprint and a few bytes: requests are built from one template when sent
(:class:`ByPrompt`), records go to the store's ledger on local disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

from airflow_provider_xai_image.api.images import ImageGenerationResult, ImageRequest
from airflow_provider_xai_image.engine.budget import CostBudget
from airflow_provider_xai_image.exceptions import XaiBudgetExceededError, XaiPossiblyBilledError
from airflow_provider_xai_image.ledger.progress import Remaining, check_moderation
from airflow_provider_xai_image.ledger.records import RequestRecord

if TYPE_CHECKING:
    from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests
    from airflow_provider_xai_image.storage.image_store import ImageStore

Value = TypeVar("Value")


def estimate_usd_ticks(price_per_image: int, request: ImageRequest) -> int:
    """What ``request`` may cost: its images and its source images, each at ``price_per_image``."""
    return price_per_image * (request.n + len(request.source_images or ()))


class ByPrompt(Mapping[int, Value]):
    """``{index: value_of(index)}`` for every prompt index ``0..count-1``, each value computed when asked
    for and never kept: a task of 100,000 prompts holds its prompts, not 100,000 requests.

    :param count: How many prompts.
    :param value_of: The value of a prompt index.
    """

    def __init__(self, count: int, value_of: Callable[[int], Value]) -> None:
        self._indices = range(count)
        self._value_of = value_of

    def __getitem__(self, index: int) -> Value:
        if index not in self._indices:
            raise KeyError(index)
        return self._value_of(index)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


def resume(store: ImageStore, requests: PlannedRequests, on_moderation: str) -> Remaining:
    """Read what earlier runs stored; return what is left: ``{prompt_index: (request, first image index)}``.

    Comes before a :class:`GenerationRun` (whose budget counts what earlier runs spent, possibly paid
    included) and before the price is asked: a task with nothing left asks xAI nothing.

    :param store: The task instance's store, prepared.
    :param requests: Every prompt's request and fingerprint.
    :param on_moderation: ``fail`` (raise when an earlier run had an image filtered) or ``skip``.
    """
    progress = store.load_records(requests.fingerprint_of, requests.prompts)
    check_moderation(progress.filtered_prompts(), on_moderation)
    return Remaining(requests.by_index, progress)


class GenerationRun:
    """
    The image requests of one task instance against its :class:`ImageStore`, after :func:`resume`.

    :param store: Where images and records go, its records loaded by :func:`resume`.
    :param plan: What the task sends, at which price, within which limits.
    """

    def __init__(self, store: ImageStore, plan: GenerationPlan) -> None:
        self.store = store
        self.plan = plan
        self.budget = CostBudget(plan.max_cost_usd, store.ledger.progress.spent_usd_ticks)

    def estimate(self, request: ImageRequest) -> int:
        """What ``request`` may cost at the plan's price."""
        return estimate_usd_ticks(self.plan.price_usd_ticks, request)

    def reserve(self, request: ImageRequest) -> int:
        """Before sending ``request``: hold its estimate in the budget (or refuse); return the estimate."""
        estimate = self.estimate(request)
        self.budget.reserve(estimate)
        return estimate

    def stored(
        self, index: int, request: ImageRequest, first_image_index: int, result: ImageGenerationResult, estimate: int
    ) -> RequestRecord:
        """After an answer (blocking: downloads and uploads): store its images, record it (with earlier sends
        that may have been billed besides), settle the budget."""
        fingerprint = self.plan.requests.fingerprints[index]
        possibly_billed = estimate * result.possibly_billed_attempts
        record = self.store.store_result(index, request.prompt, result, fingerprint, first_image_index, possibly_billed)
        self.budget.settle(estimate, result.cost_usd_ticks + possibly_billed)
        check_moderation([index] if record.filtered else [], self.plan.on_moderation)
        return record

    def failed(self, index: int, request: ImageRequest, estimate: int, error: BaseException) -> None:
        """After a request failed: a possibly billed one is recorded and counted as spent; others free their hold."""
        if not isinstance(error, XaiPossiblyBilledError):
            self.budget.settle(estimate, 0)
            return
        possibly_billed = estimate * error.attempts
        with suppress(XaiBudgetExceededError):  # the request's own error is what the task reports
            self.budget.settle(estimate, possibly_billed)
        self.store.add_record(
            RequestRecord(
                prompt_index=index,
                prompt=request.prompt,
                model=request.model,
                fingerprint=self.plan.requests.fingerprints[index],
                possibly_billed_usd_ticks=possibly_billed,
                error=str(error),
            )
        )
