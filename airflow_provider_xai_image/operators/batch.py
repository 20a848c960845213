"""Operators for xAI's Batch API: submit prompts as a batch job, and store a finished job's images.

A job is one batch, or several when its input file would pass ~100 MB; ``batch_id`` (XCom and
parameters) then names them all, comma-separated. A large job's images can be stored by several mapped
tasks in parallel, each a share of the results (``share``/``shares``), with
:class:`XaiAssembleManifestOperator` writing the job's one manifest from theirs last.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.api.batch_files import batch_files
from airflow_provider_xai_image.api.batches import Batch, judge_one, split_batch_ids
from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.engine.batch_results import EXPIRED_URLS_HINT, finished_batches, store_batch_results
from airflow_provider_xai_image.engine.batch_waiting import check_job, raise_for_outcome
from airflow_provider_xai_image.engine.task_parameters import TaskParameters
from airflow_provider_xai_image.exceptions import (
    XaiBadRequestError,
    XaiBatchTimeoutError,
    XaiError,
    XaiPossiblyBilledError,
    XaiRequestValidationError,
)
from airflow_provider_xai_image.hooks.mixin import failing_without_retry
from airflow_provider_xai_image.ledger.records import batch_fingerprint
from airflow_provider_xai_image.operators.base import (
    XaiImageOutputOperator,
    XaiImageRequestOperator,
)
from airflow_provider_xai_image.storage.layout import MANIFEST_NAME, safe_segment
from airflow_provider_xai_image.triggers.events import event_result

if TYPE_CHECKING:
    from airflow.sdk import Context


#: task_state_store key of the job's batch ids (renaming it breaks reconnection of in-flight retries).
BATCH_IDS_STATE_KEY = "xai_batch_ids"
DEFAULT_BATCH_TIMEOUT = timedelta(hours=25)


class XaiStoreBatchResultsOperator(XaiImageOutputOperator):
    """
    Store the images of a finished xAI batch job; return their URIs (the "fetch" of submit/sense/fetch).

    Same layout and manifest as :class:`XaiGenerateImagesOperator`; requests xAI reports failed are
    listed under ``errors`` in the manifest. Any result xAI reports as succeeded that cannot be read or
    stored (an expired URL among them) fails the task with counts and ids, after the rest are stored.

    A large job can be stored by several workers at once: map the task over its shares,
    ``XaiStoreBatchResultsOperator.partial(..., shares=4).expand(share=[0, 1, 2, 3])``. Each mapped task
    stores the results of the prompt indices ``index % shares == share`` into its own folder (each reads
    every results page, xAI has no other way to list them), resumes on its own, and writes the manifest
    of its share; :class:`XaiAssembleManifestOperator` then writes the job's manifest and records the
    job's Asset event (shares record none, so that nothing downstream starts on a part of the job).

    :param batch_id: The batch (templated), e.g. ``"{{ ti.xcom_pull('submit', key='batch_id') }}"``;
        several comma-separated for a job split in parts.
    :param output_uri: Where images go (templated).
    :param prompts: The batch's prompts, to record them in the manifest (optional, templated).
    :param max_concurrency: Most images downloaded and stored at once.
    :param share: Which share of the results this task stores, ``0..shares-1`` (what a mapped task expands).
    :param shares: Into how many shares the results are split (1: this task stores them all).
    :param xai_conn_id: The ``xai`` Airflow connection (templated).
    """

    template_fields: Sequence[str] = ("batch_id", "prompts", *XaiImageOutputOperator.template_fields)

    def __init__(
        self,
        *,
        batch_id: str,
        output_uri: str,
        prompts: list[str] | None = None,
        max_concurrency: int = 16,
        share: int = 0,
        shares: int = 1,
        xai_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        TaskParameters.check(max_concurrency=max_concurrency, shares=shares)
        if not 0 <= share < shares:
            raise XaiRequestValidationError(
                f"Invalid operator parameter: share: must be 0..{shares - 1} (shares={shares}) (got {share!r})"
            )
        super().__init__(output_uri=output_uri, xai_conn_id=xai_conn_id, **kwargs)
        self.batch_id = batch_id
        self.prompts = prompts
        self.max_concurrency = max_concurrency
        self.share = share
        self.shares = shares

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "batch_id": self.batch_id, "share": self.share, "shares": self.shares}

    def announces_output(self) -> bool:
        """A share records no Asset event: the job's manifest, written last, does."""
        return self.shares == 1

    def execute(self, context: Context) -> list[str]:
        with failing_without_retry(self.log):
            started = time.monotonic()
            prompts = TaskParameters.check(prompts=self.prompts).prompts
            store = self.image_store(context)
            store.prepare()
            batches = finished_batches(self.hook, split_batch_ids(self.batch_id))
            store_batch_results(
                self.hook, store, batches, prompts, self.max_concurrency, share=self.share, shares=self.shares
            )
            return self.finish(context, store, time.monotonic() - started)


class XaiAssembleManifestOperator(XaiImageOutputOperator):
    """
    Write one manifest for a batch job that several mapped :class:`XaiStoreBatchResultsOperator` tasks
    stored in shares; return the job's image URIs, in prompt order.

    It reads the records each share saved next to its manifest, one small object at a time, and streams
    the job's ``manifest.json`` (same format; every image listed once, where its share stored it) into
    its own folder, ``<output_uri>/<run id>/<task id>/``. It calls no xAI API. Its Asset event on the
    output location, with the job's image count and manifest, says the whole job is stored.

    :param batch_id: The job's batch id(s) (templated): the same as the shares'.
    :param share_manifests: The manifest URIs of the shares (templated), typically
        ``XComArg(store, key="manifest")`` of the mapped store task.
    :param output_uri: Where the manifest goes (templated); the shares' output URI.
    :param xai_conn_id: The ``xai`` Airflow connection, for lineage (templated).
    """

    template_fields: Sequence[str] = ("batch_id", "share_manifests", *XaiImageOutputOperator.template_fields)

    def __init__(
        self,
        *,
        batch_id: str,
        share_manifests: Any,
        output_uri: str,
        xai_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(output_uri=output_uri, xai_conn_id=xai_conn_id, **kwargs)
        self.batch_id = batch_id
        self.share_manifests = share_manifests

    def manifest_uris(self) -> list[str]:
        """The shares' manifest URIs, as rendered (one URI, or a sequence of them)."""
        given = self.share_manifests
        return [given] if isinstance(given, str) else [str(uri) for uri in given]

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "batch_id": self.batch_id, "share_manifests": self.manifest_uris()}

    def execute(self, context: Context) -> list[str]:
        with failing_without_retry(self.log):
            started = time.monotonic()
            manifests = self.manifest_uris()
            not_manifests = [uri for uri in manifests if not uri.endswith(f"/{MANIFEST_NAME}")]
            if not manifests or not_manifests:
                raise XaiRequestValidationError(
                    "Invalid operator parameter: share_manifests: must be the shares' manifest URIs (their "
                    f"XCom 'manifest') (got {not_manifests or manifests})"
                )
            fingerprint = batch_fingerprint(split_batch_ids(self.batch_id))
            store = self.image_store(context)
            store.load_records(lambda _: fingerprint)
            for manifest in manifests:
                store.read_records(ObjectStoragePath(manifest.rpartition("/")[0]))
            self.log.info("Assembling the manifest of %d share(s) of batch job %s", len(manifests), self.batch_id)
            return self.finish(context, store, time.monotonic() - started)


class XaiBatchGenerateImagesOperator(XaiImageRequestOperator):
    """
    Generate images through xAI's Batch API (half price, no rate limits, done within hours).

    Writes one JSON line per prompt (``custom_id`` = prompt index) to an input file, uploads it and
    creates a batch from it (a job whose file would pass ~100 MB becomes several batches), and pushes
    ``batch_id`` to XCom. A retried task reconnects to its batches (ids kept in ``task_state_store``,
    else found by their deterministic names) instead of paying for new ones. With
    ``wait_for_completion`` it waits (deferring, or polling) and stores every image like
    :class:`XaiGenerateImagesOperator`, returning the image URIs; otherwise it returns the batch id
    for :class:`~airflow_provider_xai_image.sensors.batch.XaiBatchSensor`.

    Results come back as base64 by default (``response_format="b64_json"``): result URLs expire one
    hour after the batch completes, so with ``response_format="url"`` the store step must run within
    the hour.

    :param prompts: The prompts (templated; may come from an upstream XCom; thousands are fine).
    :param output_uri: Where images go (templated).
    :param n: Images per prompt, 1..10 (templated).
    :param model: Model id; default the connection's ``default_model`` (templated).
    :param aspect_ratio: See :class:`XaiGenerateImagesOperator` (templated).
    :param resolution: ``1k`` or ``2k`` (templated).
    :param quality: ``low`` or ``medium`` (templated).
    :param response_format: ``b64_json`` (default) or ``url`` (templated).
    :param source_images: 1..3 images every prompt edits (object-storage URIs, https URLs or data URIs; templated).
    :param batch_name: Name of the batch (templated); default from dag, task, run and map index.
    :param wait_for_completion: Wait for the batch and store its images.
    :param deferrable: Wait on the triggerer; default ``[operators] default_deferrable``.
    :param poll_interval: Seconds between polls while waiting.
    :param timeout: How long to wait for the batch (seconds or timedelta).
    :param max_failed_fraction: Share of requests xAI may report failed before the task fails.
    :param max_concurrency: Most images downloaded and stored at once.
    :param xai_conn_id: The ``xai`` Airflow connection (templated).
    """

    template_fields: Sequence[str] = ("prompts", "batch_name", *XaiImageRequestOperator.template_fields)

    def __init__(
        self,
        *,
        prompts: list[str],
        output_uri: str,
        response_format: str = "b64_json",
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
        TaskParameters.check(
            max_failed_fraction=max_failed_fraction, poll_interval=poll_interval, max_concurrency=max_concurrency
        )
        super().__init__(output_uri=output_uri, xai_conn_id=xai_conn_id, response_format=response_format, **kwargs)
        self.prompts = prompts
        self.batch_name = batch_name
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout_seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.max_failed_fraction = max_failed_fraction
        self.max_concurrency = max_concurrency
        self.submitted_batch_ids: list[str] = []

    def parameters(self) -> dict[str, Any]:
        return {
            **super().parameters(),
            "batch_id": ",".join(self.submitted_batch_ids) or None,
            "max_failed_fraction": self.max_failed_fraction,
        }

    def default_batch_name(self, context: Context) -> str:
        ti = context["ti"]
        parts = ["airflow", ti.dag_id, ti.task_id, context["run_id"]]
        if getattr(ti, "map_index", -1) >= 0:
            parts.append(f"map-{ti.map_index}")
        return safe_segment("/".join(parts))

    def execute(self, context: Context) -> Any:
        with failing_without_retry(self.log):
            prompts = list(TaskParameters.check(required=("prompts",), prompts=self.prompts).prompts or [])
            requests = self.build_requests(prompts)
            if self.response_format == "url":
                self.log.warning(
                    "response_format='url': store the results within 1 hour of completion (%s).", EXPIRED_URLS_HINT
                )
            store = self.image_store(context)
            store.prepare()
            self.hook.check_api_key()
            batches, counts = self.submit(context, requests)
            batch_id = ",".join(batch.batch_id for batch in batches)
            context["ti"].xcom_push(key="batch_id", value=batch_id)
            if not self.wait_for_completion:
                return batch_id
            if self.deferrable:
                # Imported here: DAG files import this module on every parse, and the trigger brings the HTTP clients.
                from airflow_provider_xai_image.triggers.batch import XaiBatchTrigger

                self.defer(
                    trigger=XaiBatchTrigger(
                        batch_ids=[batch.batch_id for batch in batches],
                        expected_requests=counts,
                        xai_conn_id=self.xai_conn_id,
                        poll_interval=self.poll_interval,
                        timeout=self.timeout_seconds,
                        max_failed_fraction=self.max_failed_fraction,
                    ),
                    method_name="execute_complete",
                )
            return self.store(context, self.wait(batches, counts))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[str]:
        with failing_without_retry(self.log):
            result = event_result(event)
            self.submitted_batch_ids = list(result["batch_ids"])
            return self.store(context, [Batch.model_validate(batch) for batch in result["batches"]])

    def submit(self, context: Context, requests: Mapping[int, ImageRequest]) -> tuple[list[Batch], list[int]]:
        """Upload the input file(s) and create the batch(es), or reconnect to those an earlier try created;
        return the batches and how many requests each was given."""
        name = self.batch_name or self.default_batch_name(context)
        files = list(batch_files((str(index), request) for index, request in requests.items()))
        names = [name] if len(files) == 1 else [f"{name}-part{part + 1}of{len(files)}" for part in range(len(files))]
        state_store = context.get("task_state_store")
        stored_ids = split_batch_ids(str((state_store.get(BATCH_IDS_STATE_KEY) if state_store else None) or ""))
        batches: list[Batch] = []
        for part, ((content, count), part_name) in enumerate(zip(files, names, strict=True)):
            batch = self._earlier_batch(part_name, stored_ids[part] if part < len(stored_ids) else None)
            if batch is None:
                batch = self._create(part_name, content)
                self.log.info("Created batch %s (%r) for %d request(s)", batch.batch_id, part_name, count)
            batches.append(batch)
            self.submitted_batch_ids = [batch.batch_id for batch in batches]  # from here on, on_kill cancels them
            if state_store is not None:
                state_store.set(BATCH_IDS_STATE_KEY, ",".join(self.submitted_batch_ids))
        return batches, [count for _, count in files]

    def _create(self, name: str, content: bytes) -> Batch:
        file_id = self.hook.upload_batch_file(f"{name}.jsonl", content)
        try:
            return self.hook.create_batch(name, file_id)
        except XaiPossiblyBilledError:
            # The creation may have gone through: never leave two batches for one task.
            found = self.hook.find_batch_by_name(name)
            if found is None:
                raise
            self.log.warning("Batch creation got no answer, but batch %s (%r) exists: using it.", found.batch_id, name)
            return found

    def _earlier_batch(self, name: str, stored_id: Any) -> Batch | None:
        """The live batch of an earlier try: by the id kept in task_state_store, else by name."""
        candidates: list[Batch] = []
        if stored_id:
            try:
                candidates.append(self.hook.get_batch(str(stored_id)))
            except XaiBadRequestError:
                self.log.warning("Batch %s from an earlier try is gone; looking it up by name.", stored_id)
        if not candidates:
            candidates = [batch for batch in self.hook.list_batches() if batch.name == name]
        for batch in candidates:
            if judge_one(batch).status not in ("refused", "failed"):
                self.log.info("Reconnecting to batch %s (%r) from an earlier try", batch.batch_id, name)
                return batch
        return None

    def wait(self, batches: list[Batch], counts: list[int]) -> list[Batch]:
        """Poll the job's batches on this worker until they are done."""
        deadline = time.monotonic() + self.timeout_seconds
        ids = [batch.batch_id for batch in batches]
        while True:
            batches = [self.hook.get_batch(batch_id) for batch_id in ids]
            outcome = check_job(batches, self.max_failed_fraction, self.log, counts)
            raise_for_outcome(outcome)
            if outcome.status == "success":
                return batches
            if time.monotonic() >= deadline:
                raise XaiBatchTimeoutError(f"Timed out after {self.timeout_seconds:g} s: {outcome.message}")
            time.sleep(self.poll_interval)

    def store(self, context: Context, batches: list[Batch]) -> list[str]:
        started = time.monotonic()
        store = self.image_store(context)
        prompts = list(TaskParameters.check(required=("prompts",), prompts=self.prompts).prompts or [])
        store_batch_results(self.hook, store, batches, prompts, self.max_concurrency)
        return self.finish(context, store, time.monotonic() - started)

    def on_kill(self) -> None:
        """Cancel the job's batches when the task is killed, so their pending requests are not paid for."""
        for batch_id in self.submitted_batch_ids:
            try:
                self.hook.cancel_batch(batch_id)
                self.log.info("Cancelled batch %s", batch_id)
            except XaiError as error:
                self.log.warning("Could not cancel batch %s: %s", batch_id, error)
