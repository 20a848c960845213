"""A real ``airflow api-server`` for the gallery tests (imported as ``gallery_support``; no fixtures here).

The server runs on a free loopback port with the session's AIRFLOW_HOME (so it sees the runs of
``airflow dags test``), the core apps only, one worker, and :mod:`gallery_auth`'s auth manager: three
SimpleAuthManager users, the viewers ``reader`` and ``outsider`` and the user ``author`` (both denied
the gallery test DAG), whose passwords are written to the passwords file before it starts. Its output
goes to a log file whose tail is shown when it fails to start.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from gallery_auth import AUTHOR, DENIED_DAG_ID, OUTSIDER
from support.dag_runner import DagTestResult, airflow_executable, pycache_env

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


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ApiServer:
    """A started ``airflow api-server``: its process, URL, log and users' passwords."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    passwords: dict[str, str]

    @classmethod
    def start(cls, workdir: Path, config: dict[str, str] | None = None) -> ApiServer:
        """Start the server (without waiting for it: see :meth:`wait_ready`).

        :param workdir: A folder for its passwords file and log.
        :param config: Airflow configuration for it, as ``AIRFLOW__<SECTION>__<KEY>`` variables.
        """
        passwords = {user: secrets.token_urlsafe(16) for user in USERS}
        passwords_file = workdir / "simple_auth_manager_passwords.json"
        passwords_file.write_text(json.dumps(passwords))
        port = free_port()
        env = pycache_env(
            {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(GALLERY_TESTS), os.environ.get("PYTHONPATH")])),
                "AIRFLOW__CORE__AUTH_MANAGER": "gallery_auth.GalleryTestAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in ROLES.items()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                **(config or {}),
            }
        )
        log_path = workdir / "api-server.log"
        command = [*airflow_executable(), "api-server", "--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "--apps", "core", "--workers", "1"],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, f"http://127.0.0.1:{port}", log_path, passwords)

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the server answers its health check.

        :param timeout: Seconds to wait at most.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"airflow api-server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"airflow api-server not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and its workers (SIGTERM to its process group, SIGKILL after 20 s)."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def token(self, user: str) -> str:
        """A JWT for ``user``, the way Airflow's API hands them out (``POST /auth/token``).

        :param user: One of :data:`USERS`.
        """
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()["access_token"]

    def log_size(self) -> int:
        """How many bytes the server has logged so far (for :meth:`log_since`)."""
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """What the server logged after ``offset`` bytes.

        :param offset: A :meth:`log_size` taken earlier.
        """
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log_tail(self, chars: int = 5000) -> str:
        """The end of the server's output."""
        return self.log_path.read_text(errors="replace")[-chars:]


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
