"""One task's image requests, shared by the worker path and the trigger: what is left to pay for,
the budget, and recording each outcome.

Both paths run the same steps, so a retried task and a trigger run a second time (after a
triggerer restart) behave alike: records and stored images are read first, only what is missing
is requested, and every outcome (images, a failed image, a request that may have been billed) is
recorded per image so a second run can neither duplicate nor lose one. Nothing is held per prompt but
a few bytes: requests are built from one template when sent (:class:`ByPrompt`), records go to the
store's ledger on local disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import TypeVar

from airflow_provider_xai_image.api.images import ImageGenerationResult, ImageRequest
from airflow_provider_xai_image.engine.budget import CostBudget
from airflow_provider_xai_image.exceptions import XaiBudgetExceededError, XaiPossiblyBilledError
from airflow_provider_xai_image.ledger.progress import Remaining, check_moderation
from airflow_provider_xai_image.ledger.records import RequestRecord, request_fingerprint
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


def request_fingerprints(requests: Mapping[int, ImageRequest]) -> Mapping[int, str]:
    """Each request's fingerprint by prompt index, computed when asked for.

    :param requests: Every prompt's request (e.g. from ``build_requests``: indices ``0..len-1``).
    """
    return ByPrompt(len(requests), lambda index: request_fingerprint(requests[index]))


class GenerationRun:
    """
    The image requests of one task instance against its :class:`ImageStore`.

    :param store: Where images and records go.
    :param requests: The full request of each prompt, by prompt index.
    :param fingerprints: Each request's fingerprint, by prompt index.
    :param prices: Price of one image of each request (for the budget and possibly billed requests).
    :param max_cost_usd: The budget, or None.
    :param on_moderation: ``fail`` or ``skip``.
    :param prompts: Every prompt of the task (names the prompt of images recovered from storage).
    """

    def __init__(
        self,
        store: ImageStore,
        requests: Mapping[int, ImageRequest],
        fingerprints: Mapping[int, str],
        prices: Mapping[int, int],
        max_cost_usd: float | None,
        on_moderation: str,
        prompts: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.requests = requests
        self.fingerprints = fingerprints
        self.prices = prices
        self.on_moderation = on_moderation
        self.prompts = prompts
        self.max_cost_usd = max_cost_usd
        self.budget = CostBudget(max_cost_usd)

    def resume(self) -> Remaining:
        """Read what earlier runs stored; return what is left: ``{prompt_index: (request, first image index)}``.

        Counts what earlier runs spent (also what they possibly paid) against the budget.
        """
        progress = self.store.load_records(self.fingerprints.get, self.prompts)
        check_moderation(progress.filtered_prompts(), self.on_moderation)
        self.budget = CostBudget(self.max_cost_usd, progress.spent_usd_ticks)
        return Remaining(self.requests, progress)

    def estimate(self, index: int, request: ImageRequest) -> int:
        return estimate_usd_ticks(self.prices[index], request)

    def reserve(self, index: int, request: ImageRequest) -> int:
        """Before sending ``request``: hold its estimate in the budget (or refuse); return the estimate."""
        estimate = self.estimate(index, request)
        self.budget.reserve(estimate)
        return estimate

    def stored(
        self, index: int, request: ImageRequest, first_image_index: int, result: ImageGenerationResult, estimate: int
    ) -> RequestRecord:
        """After an answer (blocking: downloads and uploads): store its images, record it, settle the budget."""
        record = self.store.store_result(index, request.prompt, result, self.fingerprints[index], first_image_index)
        self.budget.settle(estimate, result.cost_usd_ticks)
        check_moderation([index] if record.filtered else [], self.on_moderation)
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
                fingerprint=self.fingerprints[index],
                possibly_billed_usd_ticks=possibly_billed,
                error=str(error),
            )
        )
