"""Helpers of the compatibility tests (imported as ``compat_support``): what must work on every supported
Airflow, run by ``make test-compat`` on the oldest one (``.ci/compat-requirements.txt``, in
``.venv-compat``) and by ``make test`` on the dev venv's.

Nothing here may rely on what only a newer Airflow has, such as the ``task_state_store`` table
(Airflow 3.3) or ``airflow dags test`` putting the DAG folder on ``sys.path`` (3.3; before, only the dag
processor and the task runner do, so :func:`dags_test` does it).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from support.dag_runner import airflow_executable, pycache_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
COMPAT_REQUIREMENTS = ROOT / ".ci" / "compat-requirements.txt"
#: Set by ``make test-compat``: this session runs in .venv-compat, on the oldest supported Airflow.
IN_COMPAT_VENV = os.environ.get("XAI_TEST_COMPAT") == "1"
#: Seconds one ``airflow`` command may take.
CLI_TIMEOUT = 300


def oldest_supported_airflow() -> str:
    """The Airflow version ``make test-compat`` installs (its pin in .ci/compat-requirements.txt)."""
    match = re.search(r"^apache-airflow==(\S+)$", COMPAT_REQUIREMENTS.read_text(), re.MULTILINE)
    assert match, f"no apache-airflow==X.Y.Z pin in {COMPAT_REQUIREMENTS}"
    return match.group(1)


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The session's environment (tests/conftest.py: AIRFLOW_HOME, sqlite DB, ...) for a subprocess,
    without any connection of the test process, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW_HOME"] = str(home)
    env.update(extra)
    return pycache_env(env)


@dataclass
class DagsTestRun:
    """One ``airflow dags test``: its exit code and output, and the states of its task instances."""

    dag_id: str
    returncode: int
    output: str
    task_states: dict[str, str | None]

    def describe(self) -> str:
        return f"airflow dags test {self.dag_id}: exit {self.returncode}, {self.task_states}\n{self.output[-15000:]}"


def dags_test(home: Path, dags_folder: Path, dag_id: str, env: Mapping[str, str]) -> DagsTestRun:
    """``airflow dags test <dag_id>`` with ``dags_folder`` as DAGS_FOLDER (and on ``sys.path``, as Airflow's
    dag processor and task runner put a bundle's folder), then the states of the run's task instances."""
    proc = subprocess.run(
        [*airflow_executable(), "dags", "test", dag_id],
        env=airflow_env(
            home,
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
            PYTHONPATH=os.pathsep.join(filter(None, [str(dags_folder), os.environ.get("PYTHONPATH")])),
            **env,
        ),
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=CLI_TIMEOUT,
        check=False,
    )
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        ).fetchall()
    states = {task_id if index < 0 else f"{task_id}[{index}]": state for task_id, index, state in rows}
    return DagsTestRun(dag_id, proc.returncode, proc.stdout, states)
