"""What the gallery tests share (imported as ``gallery_support``; no fixtures here): their users, the run
the tests look at, and the gallery's settings in these tests.

The API server (:class:`support.api_server.ApiServer`) runs with the session's AIRFLOW_HOME (so it sees
the runs of ``airflow dags test``) and three SimpleAuthManager users (:data:`ROLES`): the viewers
``reader`` and ``outsider`` and the user ``author`` (both denied the gallery test DAG by
:mod:`support.auth_manager`).
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from support.api_server import ApiServer
from support.auth_manager import AUTHOR, DENIED_DAG_ID, OUTSIDER
from support.dag_runner import DagTestResult

GALLERY_TESTS = Path(__file__).resolve().parent
READER = "reader"
#: Each test user and their SimpleAuthManager role.
ROLES = {READER: "viewer", OUTSIDER: "viewer", AUTHOR: "user"}
USERS = tuple(ROLES)
#: The gallery's cap on manifests in these tests (150,000 images take 80 MiB).
MAX_MANIFEST_MIB = 100
#: The DAG every test user may read (see ``gallery_open_dag.py``).
OPEN_DAG_ID = "xai_gallery_open"
#: Where the plugin's app is mounted, as the plugin says (checked by a test through /api/v2/plugins).
GALLERY_PREFIX = "/xai-image-gallery"
#: A file beside the task folders, in the output root: never to be served.
SECRET_NAME = "secret.txt"
SECRET = b"not for the gallery"


@dataclass
class GalleryRun:
    """The API server, the DAG runs it shows (of ``gallery_dag.py`` and ``gallery_open_dag.py``), the
    output folder and a token per user."""

    server: ApiServer
    result: DagTestResult
    open_result: DagTestResult
    output: Path
    tokens: dict[str, str]

    def path(self, task_id: str, route: str, *, dag_id: str = DENIED_DAG_ID, map_index: int | None = None) -> str:
        """The URL path of a gallery route of a task instance of the run, quoted as the UI quotes it."""
        run_id = quote(self.run_id(dag_id), safe="")
        path = f"{GALLERY_PREFIX}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/{route}"
        return path if map_index is None else f"{path}?map_index={map_index}"

    def run_id(self, dag_id: str) -> str:
        """The run of ``dag_id`` (of the gallery test DAG for any DAG but :data:`OPEN_DAG_ID`)."""
        run_id = (self.open_result if dag_id == OPEN_DAG_ID else self.result).run_id
        assert run_id is not None
        return run_id

    def set_manifest_xcom(self, task_id: str, value: str, user: str = AUTHOR) -> None:
        """Set the XCom ``manifest`` of a task instance of the open DAG, as ``user`` through Airflow's REST API.

        :param task_id: A task of ``gallery_open_dag.py``.
        :param value: The XCom's value.
        :param user: Who sets it.
        """
        run_id = quote(self.run_id(OPEN_DAG_ID), safe="")
        entries = f"/api/v2/dags/{OPEN_DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        response = httpx.post(
            f"{self.server.base_url}{entries}", json={"key": "manifest", "value": value}, headers=headers, timeout=30
        )
        if response.status_code == 409:
            response = httpx.patch(
                f"{self.server.base_url}{entries}/manifest", json={"value": value}, headers=headers, timeout=30
            )
        assert response.status_code in (200, 201), response.text

    def get(self, path: str, user: str | None = READER, **kwargs: Any) -> httpx.Response:
        """GET ``path`` as ``user`` (a bearer token), or without credentials when ``user`` is None."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.get(f"{self.server.base_url}{path}", headers=headers, **{"timeout": 30, **kwargs})

    def get_raw(self, path: str, user: str = READER) -> tuple[int, bytes]:
        """GET ``path`` sent exactly as given (no client normalising dot segments or quoting)."""
        address = urlsplit(self.server.base_url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
        try:
            connection.request("GET", path, headers={"Authorization": f"Bearer {self.tokens[user]}"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()
