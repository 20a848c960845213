"""A stand-in for the task context, to run an operator's ``execute`` in the test process."""

from __future__ import annotations

import json
from typing import Any


class FakeTaskInstance:
    """The bits of a task instance the operators use: ids and XCom pushes (checked to be JSON-able)."""

    def __init__(self, dag_id: str, task_id: str, map_index: int = -1) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))


class FakeStateStore:
    """``context["task_state_store"]``: ``get``/``set`` of JSON values kept across tries."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))


class OutletEvent:
    """The accessor of one outlet: ``.extra`` for an Asset; ``.add(asset, extra)`` for an AssetAlias."""

    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}
        self.added: list[tuple[Any, dict[str, Any] | None]] = []

    def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
        self.added.append((asset, extra))


class OutletEvents(dict):
    """``context["outlet_events"]``: an accessor (with ``.extra``) per asset, created on first use."""

    def __missing__(self, key: Any) -> OutletEvent:
        self[key] = OutletEvent()
        return self[key]


def make_task_context(
    task_id: str,
    *,
    dag_id: str,
    run_id: str,
    map_index: int = -1,
    state_store: FakeStateStore | None = None,
) -> dict[str, Any]:
    """A context for ``operator.execute(context)`` outside Airflow (no ``task_state_store`` unless given)."""
    context: dict[str, Any] = {
        "ti": FakeTaskInstance(dag_id, task_id, map_index),
        "run_id": run_id,
        "outlet_events": OutletEvents(),
    }
    if state_store is not None:
        context["task_state_store"] = state_store
    return context
