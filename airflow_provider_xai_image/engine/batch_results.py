"""Storing a finished batch job's images: the whole job, or one share of it when several tasks store in parallel."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_xai_image.api.batches import Batch, BatchResult
from airflow_provider_xai_image.engine.concurrency import map_concurrently
from airflow_provider_xai_image.exceptions import XaiBatchFailedError
from airflow_provider_xai_image.ledger.records import RequestRecord, batch_fingerprint

if TYPE_CHECKING:
    from airflow_provider_xai_image.hooks.xai import XaiHook
    from airflow_provider_xai_image.storage.image_store import ImageStore

#: What a store step says when temporary result URLs had expired.
EXPIRED_URLS_HINT = (
    "batch result URLs expire 1 hour after the batch completes: submit with response_format='b64_json' "
    "(the default) or store within the hour"
)


def store_batch_results(
    hook: XaiHook,
    store: ImageStore,
    batches: Sequence[Batch],
    prompts: Sequence[str] | None,
    max_concurrency: int,
    model: str = "",
    share: int = 0,
    shares: int = 1,
) -> None:
    """
    Page through a finished job's results and store each image of this share into ``store``; requests xAI
    reports failed become error records. Results an earlier try stored are skipped. ``batch_request_id``
    is the prompt index; a share takes the prompt indices ``index % shares == share`` (and share 0 the
    ids that are no prompt index), so shares are disjoint and together take every result.

    Nothing is lost silently: a result that cannot be read or stored, or fewer successes listed than
    xAI counts, fails with counts and ids after everything else was stored.

    :param hook: Reads the results.
    :param store: The task instance's store (records go to its ledger; the caller writes the manifest).
    :param batches: The job's finished batches.
    :param prompts: The job's prompts, to record them (optional).
    :param max_concurrency: Most images downloaded and stored at once.
    :param model: The model asked for (recorded when a result names none).
    :param share: Which share of the results to store, ``0..shares-1``.
    :param shares: Into how many shares the results are split.
    """
    fingerprint = batch_fingerprint([batch.batch_id for batch in batches])
    progress = store.load_records(lambda _: fingerprint, prompts)
    #: Prompt indices of the job: its prompts, else the requests xAI counted.
    job_size = len(prompts) if prompts is not None else sum(batch.state.num_requests for batch in batches)
    lost: dict[str, str] = {}
    succeeded = 0

    def prompt_index(result: BatchResult) -> int | None:
        request_id = result.batch_request_id
        return int(request_id) if request_id.isdigit() and int(request_id) < job_size else None

    def counted(result: BatchResult) -> BatchResult:
        nonlocal succeeded
        succeeded += result.result is not None
        return result

    def mine(result: BatchResult) -> bool:
        index = prompt_index(result)
        return share == 0 if index is None else index % shares == share

    def todo(result: BatchResult) -> bool:
        index = prompt_index(result)
        if index is None or not progress.recorded(index):
            return True
        if result.result is not None:  # images an earlier try could not store
            return progress.done_images(index) < len(result.result.images)
        return not progress.done_images(index) and not progress.failed(index)

    def store_one(result: BatchResult) -> None:
        index = prompt_index(result)
        if index is None:
            lost[result.batch_request_id] = "its batch_request_id is not a prompt index of this job"
            return
        if result.unreadable:
            lost[result.batch_request_id] = f"unreadable result ({result.unreadable})"
            return
        prompt = prompts[index] if prompts is not None else None
        if result.result is None:
            failed = RequestRecord(
                prompt_index=index, prompt=prompt, model=model, fingerprint=fingerprint, error=result.error
            )
            store.add_record(failed)
            return
        # Stored again after an earlier try lost some of its images: its cost is recorded already.
        recorded = progress.recorded(index)
        stored = result.result.model_copy(update={"cost_usd_ticks": 0}) if recorded else result.result
        record = store.store_result(index, prompt, stored, fingerprint)
        for image in record.images:
            if image.error:
                lost[f"{result.batch_request_id}/image {image.image_index}"] = image.error

    results = (counted(result) for batch in batches for result in hook.iter_batch_results(batch.batch_id, model=model))
    with store:
        work = (result for result in results if mine(result) and todo(result))
        deque(map_concurrently(store_one, work, max_concurrency), maxlen=0)
    reported = sum(batch.state.num_success for batch in batches)
    if succeeded < reported:
        lost["(missing)"] = f"xAI counts {reported} succeeded requests but its results listed {succeeded}"
    if lost:
        raise XaiBatchFailedError(_lost_message(lost, reported))


def _lost_message(lost: dict[str, str], reported: int) -> str:
    expired = sum("expired" in reason for reason in lost.values())
    shown = "; ".join(f"{request_id}: {reason}" for request_id, reason in sorted(lost.items())[:20])
    hint = f" {expired} of them because their temporary URLs expired ({EXPIRED_URLS_HINT})." if expired else ""
    return (
        f"{len(lost)} result(s) of {reported} that xAI reports as succeeded could not be read or stored.{hint} "
        f"The rest are stored; a retry stores only what is missing. {shown}"
    )


def finished_batches(hook: XaiHook, batch_ids: Sequence[str]) -> list[Batch]:
    """The job's batches, refusing (naming what is left) when one is still pending or validating."""
    batches = [hook.get_batch(batch_id) for batch_id in batch_ids]
    for batch in batches:
        if batch.is_validating or batch.state.num_pending:
            raise XaiBatchFailedError(
                f"Batch {batch.batch_id} is not finished ({batch.state.num_pending} pending of "
                f"{batch.state.num_requests}); wait for it with XaiBatchSensor."
            )
    return batches
