"""Operators for xAI's Batch API: submit prompts as one batch, and store a finished batch's images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf

from airflow_provider_xai_image.batch_state import judge
from airflow_provider_xai_image.concurrency import map_concurrently
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.exceptions import XaiBadRequestError, XaiBatchFailedError, XaiError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.models import Batch, BatchResult, ImageRequest
from airflow_provider_xai_image.operators.base import XaiImageOutputOperator, XaiImageRequestOperator
from airflow_provider_xai_image.storage import ImageStore, RequestRecord, safe_segment
from airflow_provider_xai_image.triggers.batch import XaiBatchTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: task_state_store key of the batch id (renaming it breaks reconnection of in-flight retries).
BATCH_ID_STATE_KEY = "xai_batch_id"
DEFAULT_BATCH_TIMEOUT = timedelta(hours=25)


def store_batch_results(
    hook: XaiHook,
    store: ImageStore,
    batch_id: str,
    prompts: Sequence[str] | None,
    max_concurrency: int,
) -> dict[int, RequestRecord]:
    """
    Page through a finished batch's results and store each image; failed requests become error records.

    Results an earlier try stored are skipped, so nothing is lost and nothing is downloaded twice.
    ``batch_request_id`` is the prompt index.
    """
    records = store.load_records(prompts)

    def store_one(result: BatchResult) -> RequestRecord:
        index = _prompt_index(result.batch_request_id)
        prompt = prompts[index] if prompts is not None and index < len(prompts) else None
        if result.result is None:
            record = RequestRecord(prompt_index=index, prompt=prompt, model="", error=result.error)
            store.add_record(record)
            return record
        return store.store_result(index, prompt, result.result)

    def not_stored(result: BatchResult) -> bool:
        # Images recovered after a crash lack their record's details; storing them again costs nothing.
        record = records.get(_prompt_index(result.batch_request_id))
        return record is None or record.recovered

    with store:
        results = filter(not_stored, hook.iter_batch_results(batch_id))
        for record in map_concurrently(store_one, results, max_concurrency):
            records[record.prompt_index] = record
    return records


def _prompt_index(batch_request_id: str) -> int:
    try:
        return int(batch_request_id)
    except ValueError:
        raise XaiError(
            f"batch_request_id {batch_request_id!r} is not a prompt index; this batch was not submitted "
            "by XaiBatchGenerateImagesOperator"
        ) from None


def raise_for_event(event: dict[str, Any]) -> None:
    """Turn a failed :class:`XaiBatchTrigger` event into the matching error."""
    if event.get("status") == "timeout":
        raise XaiBatchFailedError(f"Timed out waiting for the batch: {event.get('message')}")
    if event.get("status") != "success":
        raise XaiBatchFailedError(str(event.get("message")))


class XaiStoreBatchResultsOperator(XaiImageOutputOperator):
    """
    Store the images of a finished xAI batch; return their URIs (the "fetch" of submit/sense/fetch).

    Same layout and manifest as :class:`XaiGenerateImagesOperator`; failed requests are listed
    under ``errors`` in the manifest.

    :param batch_id: The batch (templated), e.g. ``"{{ ti.xcom_pull('submit', key='batch_id') }}"``.
    :param output_uri: Where images go (templated).
    :param prompts: The batch's prompts, to record them in the manifest (optional, templated).
    :param max_concurrency: Most images downloaded and stored at once.
    :param xai_conn_id: The ``xai`` Airflow connection.
    """

    template_fields: Sequence[str] = ("batch_id", "output_uri", "prompts")

    def __init__(
        self,
        *,
        batch_id: str,
        output_uri: str,
        prompts: list[str] | None = None,
        max_concurrency: int = 16,
        xai_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(output_uri=output_uri, xai_conn_id=xai_conn_id, **kwargs)
        self.batch_id = batch_id
        self.prompts = prompts
        self.max_concurrency = max_concurrency

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "batch_id": self.batch_id}

    def execute(self, context: Context) -> list[str]:
        started = time.monotonic()
        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        pending = hook.get_batch(self.batch_id).state.num_pending
        if pending:
            raise XaiBatchFailedError(
                f"Batch {self.batch_id} still has {pending} pending request(s); wait for it with XaiBatchSensor."
            )
        store = self.image_store(context, hook)
        records = store_batch_results(hook, store, self.batch_id, self.prompts, self.max_concurrency)
        return self.finish(context, store, records, time.monotonic() - started)


class XaiBatchGenerateImagesOperator(XaiImageRequestOperator):
    """
    Generate images through xAI's Batch API (lower price, no rate limits, done within hours).

    Creates a batch, adds one request per prompt (``batch_request_id`` = prompt index; calls of at most
    25 MB, at most 100 per 30 s), and pushes ``batch_id`` to XCom. A retried task reconnects to its
    batch (id kept in ``task_state_store``, else found by its deterministic name) instead of paying
    for a second one. With ``wait_for_completion`` it waits (deferring, or polling) and stores every
    image like :class:`XaiGenerateImagesOperator`, returning the image URIs; otherwise it returns the
    batch id for :class:`~airflow_provider_xai_image.sensors.batch.XaiBatchSensor`.

    :param prompts: The prompts (templated; may come from an upstream XCom; thousands are fine).
    :param output_uri: Where images go (templated).
    :param n: Images per prompt, 1..10 (templated).
    :param model: Model id; default the connection's ``default_model`` (templated).
    :param aspect_ratio: See :class:`XaiGenerateImagesOperator` (templated).
    :param resolution: ``1k`` or ``2k`` (templated).
    :param quality: ``low``, ``medium`` or ``high``.
    :param batch_name: Name of the batch (templated); default from dag, task, run and map index.
    :param wait_for_completion: Wait for the batch and store its images.
    :param deferrable: Wait on the triggerer; default ``[operators] default_deferrable``.
    :param poll_interval: Seconds between polls while waiting.
    :param timeout: How long to wait for the batch (seconds or timedelta).
    :param max_failed_fraction: Share of requests allowed to fail before the task fails.
    :param max_concurrency: Most images downloaded and stored at once.
    :param xai_conn_id: The ``xai`` Airflow connection.
    """

    template_fields: Sequence[str] = (
        "prompts",
        "output_uri",
        "n",
        "model",
        "aspect_ratio",
        "resolution",
        "batch_name",
    )

    def __init__(
        self,
        *,
        prompts: list[str],
        output_uri: str,
        n: int = 1,
        model: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        batch_name: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        timeout: float | timedelta = DEFAULT_BATCH_TIMEOUT,
        max_failed_fraction: float = 0.0,
        max_concurrency: int = 16,
        xai_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise ValueError(f"max_failed_fraction: must be between 0.0 and 1.0, got {max_failed_fraction!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval: must be > 0 seconds, got {poll_interval!r}")
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
        self.prompts = prompts
        self.batch_name = batch_name
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout_seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.max_failed_fraction = max_failed_fraction
        self.max_concurrency = max_concurrency
        self.submitted_batch_id: str | None = None

    def parameters(self) -> dict[str, Any]:
        return {
            **super().parameters(),
            "batch_id": self.submitted_batch_id,
            "max_failed_fraction": self.max_failed_fraction,
        }

    def build_requests(self, hook: XaiHook) -> list[ImageRequest]:
        """Validate every prompt and parameter before anything is sent."""
        if isinstance(self.prompts, str) or not self.prompts:
            raise ValueError(f"prompts: give a non-empty list of prompt strings, got {self.prompts!r}")
        return [hook.build_request(prompt, **self.request_parameters()) for prompt in self.prompts]

    def default_batch_name(self, context: Context) -> str:
        ti = context["ti"]
        parts = ["airflow", ti.dag_id, ti.task_id, context["run_id"]]
        if getattr(ti, "map_index", -1) >= 0:
            parts.append(f"map-{ti.map_index}")
        return safe_segment("/".join(parts))

    def execute(self, context: Context) -> Any:
        hook = XaiHook(xai_conn_id=self.xai_conn_id)
        requests = self.build_requests(hook)
        batch = self.submit(context, hook, requests)
        context["ti"].xcom_push(key="batch_id", value=batch.batch_id)
        if not self.wait_for_completion:
            return batch.batch_id
        if self.deferrable:
            self.defer(
                trigger=XaiBatchTrigger(
                    batch_id=batch.batch_id,
                    xai_conn_id=self.xai_conn_id,
                    poll_interval=self.poll_interval,
                    timeout=self.timeout_seconds,
                    max_failed_fraction=self.max_failed_fraction,
                ),
                method_name="execute_complete",
            )
        self.wait(hook, batch.batch_id)
        return self.store(context, hook, batch.batch_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        raise_for_event(event)
        self.submitted_batch_id = event["batch_id"]
        return self.store(context, XaiHook(xai_conn_id=self.xai_conn_id), event["batch_id"])

    def submit(self, context: Context, hook: XaiHook, requests: list[ImageRequest]) -> Batch:
        """Create the batch and add the requests, or reconnect to the batch an earlier try created."""
        name = self.batch_name or self.default_batch_name(context)
        state_store = context.get("task_state_store")
        batch = self._earlier_batch(hook, name, state_store.get(BATCH_ID_STATE_KEY) if state_store else None)
        if batch is None:
            batch = hook.create_batch(name)
            self.log.info("Created batch %s (%r) for %d prompt(s)", batch.batch_id, name, len(requests))
            if state_store is not None:
                state_store.set(BATCH_ID_STATE_KEY, batch.batch_id)
        self.submitted_batch_id = batch.batch_id  # from here on, on_kill cancels it
        added = batch.state.num_requests
        if added < len(requests):
            calls = hook.add_batch_requests(
                batch.batch_id, [(str(index), requests[index]) for index in range(added, len(requests))]
            )
            self.log.info("Added %d request(s) to batch %s in %d call(s)", len(requests) - added, batch.batch_id, calls)
        return batch

    def _earlier_batch(self, hook: XaiHook, name: str, stored_id: Any) -> Batch | None:
        """The live batch of an earlier try: by the id kept in task_state_store, else by name."""
        candidates: list[Batch] = []
        if stored_id:
            try:
                candidates.append(hook.get_batch(str(stored_id)))
            except XaiBadRequestError:
                self.log.warning("Batch %s from an earlier try is gone; looking it up by name.", stored_id)
        if not candidates:
            candidates = [batch for batch in hook.list_batches() if batch.name == name]
        for batch in candidates:
            if judge(batch, max_failed_fraction=1.0).status != "failed":
                self.log.info("Reconnecting to batch %s (%r) from an earlier try", batch.batch_id, name)
                return batch
        return None

    def wait(self, hook: XaiHook, batch_id: str) -> Batch:
        """Poll the batch on this worker until nothing is pending."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            batch = hook.get_batch(batch_id)
            outcome = judge(batch, self.max_failed_fraction)
            self.log.info("%s", outcome.message)
            if outcome.status == "failed":
                raise XaiBatchFailedError(outcome.message)
            if outcome.status == "success":
                return batch
            if time.monotonic() >= deadline:
                raise XaiBatchFailedError(f"Timed out after {self.timeout_seconds:g} s: {outcome.message}")
            time.sleep(self.poll_interval)

    def store(self, context: Context, hook: XaiHook, batch_id: str) -> list[str]:
        started = time.monotonic()
        store = self.image_store(context, hook)
        records = store_batch_results(hook, store, batch_id, self.prompts, self.max_concurrency)
        return self.finish(context, store, records, time.monotonic() - started)

    def on_kill(self) -> None:
        """Cancel the batch when the task is killed, so its pending requests are not paid for."""
        if self.submitted_batch_id:
            try:
                XaiHook(xai_conn_id=self.xai_conn_id).cancel_batch(self.submitted_batch_id)
                self.log.info("Cancelled batch %s", self.submitted_batch_id)
            except XaiError as error:
                self.log.warning("Could not cancel batch %s: %s", self.submitted_batch_id, error)
