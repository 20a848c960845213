"""Airflow's services for the review tests (imported as ``review_support``; no fixtures here).

:class:`AirflowServices` starts ``airflow api-server`` (every app: the UI, the REST API and the
execution API the workers report to), ``scheduler`` (LocalExecutor), ``dag-processor`` and
``triggerer`` as subprocesses with a private AIRFLOW_HOME and free loopback port, and the gallery
tests' auth manager with three SimpleAuthManager users: ``reviewer`` (role ``user``: may trigger runs
and answer required actions), and the viewers ``reader`` and ``outsider`` (the outsider is denied the
review test DAG). Each service writes to its own log, whose tail is shown when something fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from support.api_server import ApiServer, auth_manager_env, free_port
from support.auth_manager import OUTSIDER
from support.dag_runner import airflow_base_env, airflow_executable, migrate_db, pycache_env

REVIEW_TESTS = Path(__file__).resolve().parent
REVIEWER = "reviewer"
READER = "reader"
#: Each user's SimpleAuthManager role.
ROLES = {REVIEWER: "user", READER: "viewer", OUTSIDER: "viewer"}
#: Services besides the API server.
SERVICES = ("scheduler", "dag-processor", "triggerer")
#: The state of a task waiting for a person: Airflow 3.3+ parks it, older versions defer it to a trigger.
WAITING_FOR_INPUT = ("awaiting_input", "deferred")
#: The DAG of review_dag.py.
DAG_ID = "xai_review_test"
T = TypeVar("T")


@dataclass
class AirflowServices:
    """Running Airflow services sharing one private AIRFLOW_HOME, and a REST client per user."""

    home: Path
    api: ApiServer
    processes: dict[str, subprocess.Popen[bytes]]
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path, dag_files: list[Path], env: dict[str, str], denied_dag_id: str) -> AirflowServices:
        """Migrate a fresh metadata DB, then start every service (and wait for the API server).

        :param workdir: A folder for AIRFLOW_HOME, the passwords file and the logs.
        :param dag_files: The DAG files (copied into the DAGS_FOLDER).
        :param env: More environment for every service (connections, DAG settings).
        :param denied_dag_id: The DAG the outsider may not read.
        """
        home = workdir / "home"
        for folder in ("dags", "plugins", "logs"):
            (home / folder).mkdir(parents=True)
        for dag_file in dag_files:
            shutil.copy2(dag_file, home / "dags" / dag_file.name)
        passwords = {user: secrets.token_urlsafe(16) for user in ROLES}
        passwords_file = workdir / "passwords.json"
        passwords_file.write_text(json.dumps(passwords))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        service_env = pycache_env(
            {
                **os.environ,
                **airflow_base_env(home),
                **env,
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__API__BASE_URL": base_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
                **auth_manager_env(),
                "XAI_TEST_DENIED_DAG_ID": denied_dag_id,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in ROLES.items()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                # How often the scheduler resolves Human-in-the-loop tasks whose response timed out.
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
            }
        )
        migrate_db(service_env)
        api_log = workdir / "api-server.log"
        api_process = _start(
            [*airflow_executable(), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            service_env,
            workdir,
            api_log,
        )
        services = cls(home, ApiServer(api_process, base_url, api_log, passwords), {})
        try:
            for name in SERVICES:
                services.processes[name] = _start(
                    [*airflow_executable(), name], service_env, workdir, workdir / f"{name}.log"
                )
            services.api.wait_ready(timeout=240)
            services.tokens = {user: services.api.token(user) for user in ROLES}
        except BaseException:
            services.stop()
            raise
        return services

    def stop(self) -> None:
        """Stop every service (SIGTERM to each process group, SIGKILL after 20 s)."""
        for process in self.processes.values():
            _stop(process)
        self.api.stop()

    def logs(self, chars: int = 4000) -> str:
        """The end of every service's log."""
        parts = [f"--- api-server ---\n{self.api.log_tail(chars)}"]
        for name in self.processes:
            path = self.api.log_path.parent / f"{name}.log"
            parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def request(self, method: str, path: str, user: str = REVIEWER, **kwargs: Any) -> httpx.Response:
        """Call the API server as ``user`` (a bearer token)."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.request(method, f"{self.api.base_url}{path}", headers=headers, timeout=60, **kwargs)

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = 300) -> T:
        """Poll ``probe`` every second until it returns a value other than None.

        :param what: What is waited for (for the failure message).
        :param probe: Returns None while waiting.
        :param timeout: Seconds to wait at most.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"airflow {name} exited ({process.returncode}):\n{self.logs()}")
            value = probe()
            if value is not None:
                return value
            time.sleep(1)
        raise AssertionError(f"Timed out waiting for {what}:\n{self.logs()}")

    # -- the REST API, as the tests use it --------------------------------------------------------------

    def trigger(self, dag_id: str) -> str:
        """Wait until the DAG is parsed, trigger a run; return its run id."""

        def parsed() -> bool | None:
            return True if self.request("GET", f"/api/v2/dags/{dag_id}").status_code == 200 else None

        self.wait_for(f"the DAG {dag_id} to be parsed", parsed)
        response = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]

    def run_path(self, dag_id: str, run_id: str) -> str:
        """The REST path of a DAG run."""
        return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        """A task instance's state (None before it exists)."""
        response = self.request("GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}")
        return response.json().get("state") if response.status_code == 200 else None

    def wait_for_task_state(self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...]) -> None:
        """Wait until the task instance is in one of ``states`` (fail early when the run failed)."""

        def reached() -> bool | None:
            if self.run_state(dag_id, run_id) == "failed":
                raise AssertionError(f"The run failed while waiting for {task_id} in {states}:\n{self.logs()}")
            return True if self.task_state(dag_id, run_id, task_id) in states else None

        self.wait_for(f"{task_id} to be in {states}", reached)

    def run_state(self, dag_id: str, run_id: str) -> str:
        """A DAG run's state."""
        return self.request("GET", self.run_path(dag_id, run_id)).json()["state"]

    def wait_for_run_end(self, dag_id: str, run_id: str) -> str:
        """Wait until the DAG run ends; return its state."""

        def ended() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return self.wait_for(f"the run {run_id} to end", ended)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """An XCom value of a task instance (not mapped)."""
        path = f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        response = self.request("GET", path, params={"deserialize": "true", "stringify": "false"})
        assert response.status_code == 200, response.text
        return response.json()["value"]

    def asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The Asset events a DAG run recorded."""
        response = self.request("GET", "/api/v2/assets/events", params={"source_dag_id": dag_id, "limit": 100})
        assert response.status_code == 200, response.text
        return [event for event in response.json()["asset_events"] if event["source_run_id"] == run_id]


def _start(command: list[str], env: dict[str, str], workdir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
