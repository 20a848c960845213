"""The Batch API half of :class:`~airflow_provider_xai_image.hooks.xai.XaiHook`: files, batches, their results."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from airflow_provider_xai_image.api.batches import BATCH_FILE_FIELDS, Batch, BatchResult, parse_batch_results_page
from airflow_provider_xai_image.api.images import BATCHES_PATH, FILES_PATH, MAX_PAGE_LIMIT
from airflow_provider_xai_image.exceptions import XaiServerError

if TYPE_CHECKING:
    import httpx

#: Results per page: a page of base64 images is held in memory whole, so not xAI's maximum of 1000.
RESULTS_PAGE_LIMIT = 100


def _page(limit: int, token: str | None) -> dict[str, Any]:
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit: must be 1..{MAX_PAGE_LIMIT}, got {limit!r}")
    return {"limit": limit, **({"pagination_token": token} if token else {})}


def _batches_page(payload: dict[str, Any]) -> tuple[list[Batch], str | None]:
    return [Batch.model_validate(item) for item in payload.get("batches", [])], payload.get("pagination_token") or None


def _results_page(batch_id: str, payload: dict[str, Any], model: str) -> tuple[list[BatchResult], str | None]:
    try:
        return parse_batch_results_page(payload, model)
    except ValueError as error:
        raise XaiServerError("GET", f"{BATCHES_PATH}/{batch_id}/results", 200, str(error)) from None


class XaiBatchApi:
    """xAI's Batch API, sent through the hook's :meth:`call` / :meth:`acall` (mixed into ``XaiHook``)."""

    call: Callable[..., dict[str, Any]]
    acall: Callable[..., Coroutine[Any, Any, dict[str, Any]]]

    def upload_batch_file(self, filename: str, content: bytes) -> str:
        """Upload a batch input file (JSON Lines) with ``POST /files``; return its file id. Free to retry."""
        payload = self.call(
            "POST", FILES_PATH, data=BATCH_FILE_FIELDS, files={"file": (filename, content, "application/jsonl")}
        )
        return str(payload["id"])

    def create_batch(self, name: str, input_file_id: str) -> Batch:
        """Create a batch from an uploaded input file. Paid: an ambiguous failure is not re-sent (look the
        batch up by name with :meth:`find_batch_by_name` before creating another)."""
        body = {"name": name, "input_file_id": input_file_id}
        return Batch.model_validate(self.call("POST", BATCHES_PATH, json_body=body, paid=True))

    def get_batch(self, batch_id: str) -> Batch:
        """The batch's state."""
        return Batch.model_validate(self.call("GET", f"{BATCHES_PATH}/{batch_id}"))

    def iter_batch_results(
        self, batch_id: str, *, model: str = "", limit: int = RESULTS_PAGE_LIMIT
    ) -> Iterator[BatchResult]:
        """Every result of the batch, page by page (unordered: match by ``batch_request_id``)."""
        token: str | None = None
        while True:
            payload = self.call("GET", f"{BATCHES_PATH}/{batch_id}/results", params=_page(limit, token))
            results, token = _results_page(batch_id, payload, model)
            yield from results
            if not token:
                return

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel the batch's pending requests."""
        return Batch.model_validate(self.call("POST", f"{BATCHES_PATH}/{batch_id}:cancel"))

    def list_batches(self, *, limit: int = MAX_PAGE_LIMIT) -> Iterator[Batch]:
        """The team's batches, as xAI lists them."""
        token: str | None = None
        while True:
            batches, token = _batches_page(self.call("GET", BATCHES_PATH, params=_page(limit, token)))
            yield from batches
            if not token:
                return

    def find_batch_by_name(self, name: str) -> Batch | None:
        """The team's batch called ``name``, if any."""
        return next((batch for batch in self.list_batches() if batch.name == name), None)

    async def aget_batch(self, client: httpx.AsyncClient, batch_id: str) -> Batch:
        """The async :meth:`get_batch`."""
        return Batch.model_validate(await self.acall(client, "GET", f"{BATCHES_PATH}/{batch_id}"))
