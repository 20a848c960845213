"""The one event format of both triggers, and turning an event back into its result or its typed error.

An event is ``{"status": "success", **result}`` or ``{"status": "error", "error_type": <class name>,
"error": {fields}}``: the worker raises the same typed error the synchronous path would have raised.
Events of the previous version, fired before an upgrade and handed to the new ``execute_complete``, are
understood too: the batch trigger's ``{"status": "error"|"refused"|"timeout", "message"}``.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_xai_image.exceptions import (
    XaiBatchFailedError,
    XaiBatchRefusedError,
    XaiBatchTimeoutError,
    XaiError,
    error_from_event,
    error_to_event,
)

#: The previous batch trigger's failure statuses, and the error each stood for.
_OLD_BATCH_STATUSES: dict[str, type[XaiError]] = {
    "error": XaiBatchFailedError,
    "refused": XaiBatchRefusedError,
    "timeout": XaiBatchTimeoutError,
}


def success_event(**result: Any) -> dict[str, Any]:
    """A trigger's success event.

    :param result: What ``execute_complete`` needs (JSON values, no secrets).
    """
    return {"status": "success", **result}


def error_event(error: BaseException) -> dict[str, Any]:
    """A trigger's error event: the error's type and what it takes to raise it again.

    :param error: What stopped the trigger.
    """
    return {"status": "error", **error_to_event(error)}


def event_result(event: dict[str, Any]) -> dict[str, Any]:
    """The result fields of a success event; raise the typed error of any other.

    :param event: A trigger's event (this version's or the previous one's).
    :raises XaiError: the error the trigger reported, typed.
    """
    status = event.get("status")
    if status == "success":
        return {key: value for key, value in event.items() if key != "status"}
    if "error_type" in event:
        raise error_from_event(event)
    message = str(event.get("message", "unknown error"))
    if status == "timeout":
        message = f"Timed out waiting for the batch: {message}"
    raise _OLD_BATCH_STATUSES.get(str(status), XaiError)(message)
