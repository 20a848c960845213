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
            parts.append(f"--- {name} ---\n{self.service_log(name)[-chars:]}")
        return "\n".join(parts)

    def service_log(self, name: str) -> str:
        """What a service (one of :data:`SERVICES`) has logged so far."""
        return (self.api.log_path.parent / f"{name}.log").read_text(errors="replace")

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

    def wait_for_input(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Wait until the task instance waits for input, and the scheduler has seen the worker that parked it
        finish (fail early when the run failed).

        A response must not come before: the resumed task runs under the same executor key (same try
        number), so when the parked worker's exit (the supervisor lingers up to a heartbeat interval after
        the task parked) reached the executor while the resumed task was queued or running, the scheduler
        took it for the resumed task's end ("finished with state success, but the task instance's state
        attribute is running") and failed it. The scheduler's log is the only place that records the exit.
        """
        finished = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id}, map_index=-1,"

        def parked() -> bool | None:
            if self.run_state(dag_id, run_id) == "failed":
                raise AssertionError(f"The run failed while waiting for {task_id} to wait for input:\n{self.logs()}")
            state = self.task_state(dag_id, run_id, task_id)
            if state not in WAITING_FOR_INPUT:
                return None
            exits = (line for line in self.service_log("scheduler").splitlines() if finished in line)
            return True if any(f" state={state}," in line for line in exits) else None

        self.wait_for(f"{task_id} to wait for input, its worker done", parked)

    def run_state(self, dag_id: str, run_id: str) -> str:
        """A DAG run's state."""
        return self.request("GET", self.run_path(dag_id, run_id)).json()["state"]

    def assert_run_ends(self, dag_id: str, run_id: str, expected: str = "success") -> None:
        """Wait until the DAG run ends; unless it ended ``expected``, fail with :meth:`run_report`."""

        def ended() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        state = self.wait_for(f"the run {run_id} to end", ended)
        assert state == expected, f"The run {run_id} ended {state}, not {expected}:\n{self.run_report(dag_id, run_id)}"

    def run_report(self, dag_id: str, run_id: str, chars: int = 6000) -> str:
        """A DAG run's task instances with their states, the end of the task logs of those that failed, and
        what the scheduler logged about the run.

        :param chars: How much of the end of each log.
        """
        response = self.request("GET", f"{self.run_path(dag_id, run_id)}/taskInstances")
        task_instances = response.json().get("task_instances", []) if response.status_code == 200 else []
        parts = [f"{ti['task_id']}: {ti['state']} (try {ti['try_number']})" for ti in task_instances]
        for ti in task_instances:
            if ti["state"] in ("failed", "up_for_retry"):
                folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
                for log in sorted(folder.rglob("attempt=*.log")):
                    parts.append(f"--- {log.relative_to(folder)} of {ti['task_id']} ---")
                    parts.append(log.read_text(errors="replace")[-chars:])
        task_lines = ("[task]", "[airflow.task")  # the tasks' own, shown above
        about_run = [
            line
            for line in self.service_log("scheduler").splitlines()
            if run_id in line and not any(marker in line for marker in task_lines)
        ]
        parts.append("--- the scheduler about the run ---")
        parts.append("\n".join(about_run)[-chars:])
        return "\n".join(parts)

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
