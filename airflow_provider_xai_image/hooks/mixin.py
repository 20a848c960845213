"""What every operator and the sensor share, like amazon's ``AwsBaseHookMixin``: one hook per task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_xai_image.exceptions import XaiPermanentError

if TYPE_CHECKING:
    from airflow_provider_xai_image.hooks.xai import XaiHook


class XaiHookMixin:
    """One :class:`~airflow_provider_xai_image.hooks.xai.XaiHook` per task, built from the (templated)
    ``xai_conn_id`` once templates are rendered."""

    xai_conn_id: str

    @cached_property
    def hook(self) -> XaiHook:
        """The task's one :class:`XaiHook` (built after templates are rendered)."""
        # Imported here: DAG files import the operators on every parse, and the hook brings the HTTP clients.
        from airflow_provider_xai_image.hooks.xai import XaiHook

        return XaiHook(xai_conn_id=self.xai_conn_id)


@contextmanager
def failing_without_retry(log: Any) -> Iterator[None]:
    """Turn a :class:`XaiPermanentError` (bad key, bad request, budget, moderation, refused batch) into
    ``AirflowFailException``: the task fails at once instead of spending its retries."""
    try:
        yield
    except XaiPermanentError as error:
        log.error("%s cannot be fixed by a retry: failing the task without retrying.", type(error).__name__)
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error
