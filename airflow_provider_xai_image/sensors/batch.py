"""XaiBatchSensor: waits for an xAI batch job to finish, in poke, reschedule or deferrable mode."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_xai_image.api.batches import split_batch_ids
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.engine.batch_waiting import check_job, raise_for_outcome
from airflow_provider_xai_image.engine.task_parameters import TaskParameters
from airflow_provider_xai_image.exceptions import XaiBatchTimeoutError
from airflow_provider_xai_image.hooks.mixin import XaiHookMixin, failing_without_retry
from airflow_provider_xai_image.triggers.events import event_result

if TYPE_CHECKING:
    from airflow.sdk import Context


class XaiBatchSensor(XaiHookMixin, BaseSensorOperator):
    """
    Wait until every batch of a job is done; return the final batch states (XCom).

    A batch is done when xAI has counted its requests (all counters 0 means it is still validating
    the input file) and none is pending. Fails with a clear message when a batch was cancelled or
    refused by xAI (with xAI's own message), expired, or more requests failed than
    ``max_failed_fraction`` allows. Logs progress on every poke.

    :param batch_id: The batch (templated), e.g. ``"{{ ti.xcom_pull('submit', key='batch_id') }}"``;
        several comma-separated for a job split in parts.
    :param xai_conn_id: The ``xai`` Airflow connection (templated).
    :param max_failed_fraction: Share of requests allowed to fail.
    :param deferrable: Wait on the triggerer (``XaiBatchTrigger``) without holding a worker slot;
        default ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("batch_id", "xai_conn_id")
    ui_color = "#e8e0f8"

    def __init__(
        self,
        *,
        batch_id: str,
        xai_conn_id: str = DEFAULT_CONN_ID,
        max_failed_fraction: float = 0.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = 60.0,
        timeout: float = timedelta(hours=25).total_seconds(),
        **kwargs: Any,
    ) -> None:
        TaskParameters.check(max_failed_fraction=max_failed_fraction)
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.batch_id = batch_id
        self.xai_conn_id = xai_conn_id
        self.max_failed_fraction = max_failed_fraction
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue:
        with failing_without_retry(self.log):
            batches = [self.hook.get_batch(batch_id) for batch_id in split_batch_ids(self.batch_id)]
            outcome = check_job(batches, self.max_failed_fraction, self.log)
            raise_for_outcome(outcome)
            done = outcome.status == "success"
            return PokeReturnValue(
                is_done=done, xcom_value=[batch.model_dump(mode="json") for batch in batches] if done else None
            )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_xai_image.triggers.batch import XaiBatchTrigger  # see hook: kept off DAG parsing

        self.defer(
            trigger=XaiBatchTrigger(
                batch_ids=split_batch_ids(self.batch_id),
                xai_conn_id=self.xai_conn_id,
                poll_interval=self.poke_interval,
                timeout=self.timeout,
                max_failed_fraction=self.max_failed_fraction,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            with failing_without_retry(self.log):
                result = event_result(event)
        except XaiBatchTimeoutError as error:
            raise AirflowSensorTimeout(f"Batch {self.batch_id} still pending: {error}") from error
        self.log.info("%s", result["message"])
        return result["batches"]
