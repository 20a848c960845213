"""XaiBatchSensor: waits for an xAI batch to finish, in poke, reschedule or deferrable mode."""

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

from airflow_provider_xai_image.batch_state import judge
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.exceptions import XaiBatchFailedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.operators.batch import raise_for_event
from airflow_provider_xai_image.triggers.batch import XaiBatchTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class XaiBatchSensor(BaseSensorOperator):
    """
    Wait until no request of an xAI batch is pending; return the final batch state (XCom).

    Fails with a clear message when the batch was cancelled (with xAI's own message), expired, or
    more requests failed than ``max_failed_fraction`` allows. Logs progress (succeeded, failed,
    pending, cost so far) on every poke.

    :param batch_id: The batch (templated), e.g. ``"{{ ti.xcom_pull('submit', key='batch_id') }}"``.
    :param xai_conn_id: The ``xai`` Airflow connection.
    :param max_failed_fraction: Share of requests allowed to fail.
    :param deferrable: Wait on the triggerer (``XaiBatchTrigger``) without holding a worker slot;
        default ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("batch_id",)
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
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise ValueError(f"max_failed_fraction: must be between 0.0 and 1.0, got {max_failed_fraction!r}")
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.batch_id = batch_id
        self.xai_conn_id = xai_conn_id
        self.max_failed_fraction = max_failed_fraction
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue:
        batch = XaiHook(xai_conn_id=self.xai_conn_id).get_batch(self.batch_id)
        outcome = judge(batch, self.max_failed_fraction)
        self.log.info("%s", outcome.message)
        if outcome.status == "failed":
            raise XaiBatchFailedError(outcome.message)
        done = outcome.status == "success"
        return PokeReturnValue(is_done=done, xcom_value=batch.model_dump(mode="json") if done else None)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=XaiBatchTrigger(
                batch_id=self.batch_id,
                xai_conn_id=self.xai_conn_id,
                poll_interval=self.poke_interval,
                timeout=self.timeout,
                max_failed_fraction=self.max_failed_fraction,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(f"Batch {self.batch_id} still pending: {event.get('message')}")
        raise_for_event(event)
        self.log.info("%s", event["message"])
        return event["batch"]
