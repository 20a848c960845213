"""Run DAGs with ``airflow dags test`` (and single tasks with ``airflow tasks test``) in a subprocess.

The runner is used through the ``dag_runner`` / ``run_dag_test`` fixtures in ``conftest.py``; it is a
plain module so that it can be read, and reused, without pytest.

What one call does:

1. builds a fresh DAGS_FOLDER holding only the given DAG file(s) (or uses a directory as given);
2. runs ``<venv>/bin/airflow dags test <dag_id> [<logical_date>] [-c <conf>]`` with the session's
   AIRFLOW_HOME, the current ``os.environ`` (fake AWS credentials, ``AIRFLOW_CONN_AWS_MOTO`` once the
   ``moto_s3`` fixture has started, ...) plus the caller's ``env``;
3. reads back, with ``sqlite3``, the run it created from the metadata DB: the dag run state, every task
   instance's state/try number, the XComs, the ``task_state_store`` rows and the asset events.

Behaviour of Airflow 3.3 worth knowing (verified here, see ``test_harness.py``):

* ``airflow dags test`` needs a migrated DB (``airflow db migrate``); it registers the DAG itself.
* It runs every task in-process (no executor, no scheduler, no triggerer). Deferred tasks have their
  trigger run inline (first event only, ``asyncio.run``), reschedule-mode sensors are re-run after their
  reschedule date (the loop polls once a second), retries are honoured and ``retry_delay`` is waited
  for (default 300 s: give test DAGs a small ``retry_delay``). A trigger's ``timeout`` is not enforced.
* A second ``airflow dags test`` for the *same logical date* deletes the previous run (cascading to its
  task instances, XComs and ``task_state_store`` rows) and creates a new run with a new run id.
* ``airflow tasks test <dag_id> <task_id> <run_id>`` re-runs one task *inside an existing run*: the task
  instance state and XCom are updated in the DB, ``task_state_store`` rows of that run are kept, the try
  number is not incremented. See :meth:`DagTestRunner.run_task`.
* The exit code is 1 when the dag run ends ``failed`` (``SystemExit("DagRun failed")``), else 0. All
  output (Airflow's structlog lines, task logs, ``print()`` from tasks) goes to stdout; no log files.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: Where compiled bytecode goes when ``PYTHONDONTWRITEBYTECODE`` is set (see :func:`pycache_env`).
#: Override with ``XAI_TESTS_PYCACHE_PREFIX``; set it to an empty string to switch the cache off.
DEFAULT_PYCACHE_PREFIX = Path(tempfile.gettempdir()) / f"airflow-provider-xai-image-pycache-{os.getuid()}"

MOTO_CONN_ID = "aws_moto"
AWS_REGION = "us-east-1"

#: Characters of output kept in assertion messages (the tail; the head is Airflow start-up noise).
OUTPUT_TAIL_CHARS = 30_000


def airflow_executable() -> list[str]:
    """The venv's ``airflow`` console script (falls back to ``python -m airflow``)."""
    script = Path(sys.executable).parent / "airflow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "airflow"]


def pycache_prefix() -> Path | None:
    """Directory for a bytecode cache outside the source tree, or ``None`` when not wanted.

    Only used when ``PYTHONDONTWRITEBYTECODE`` is set: without bytecode every ``airflow`` subprocess
    recompiles ~2,000 modules (~3 s of each ``airflow dags test``).
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return None
    configured = os.environ.get("XAI_TESTS_PYCACHE_PREFIX")
    if configured is not None:
        return Path(configured) if configured else None
    return DEFAULT_PYCACHE_PREFIX


def pycache_env(env: dict[str, str]) -> dict[str, str]:
    """Let a subprocess write/read bytecode under :func:`pycache_prefix` instead of not at all."""
    prefix = pycache_prefix()
    if prefix is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def airflow_base_env(airflow_home: Path) -> dict[str, str]:
    """Environment for an isolated, fast Airflow on sqlite under ``airflow_home``.

    ``AIRFLOW__CORE__UNIT_TEST_MODE`` is deliberately *not* set: it swaps in ``unit_tests.cfg``
    (LocalExecutor, example DAGs on, ...) and generates a random Fernet key and JWT secret in *each*
    process, which is the opposite of what a multi-process harness needs.
    """
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(airflow_home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(airflow_home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Fixed per session so that every process (pytest, db migrate, each dags test) agrees.
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
    }


def migrate_db(env: Mapping[str, str] | None = None, *, timeout: float = 300) -> float:
    """Run ``airflow db migrate`` in a subprocess; return the seconds it took."""
    started = time.monotonic()
    proc = subprocess.run(
        [*airflow_executable(), "db", "migrate"],
        env=pycache_env(dict(os.environ if env is None else env)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`airflow db migrate` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started


def _json_value(value: Any) -> Any:
    """Decode a JSON column read through sqlite3 (JSON numbers come back already converted)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass
class TaskInstanceRow:
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    next_method: str | None
    next_kwargs: Any


@dataclass
class AssetEventRow:
    asset_name: str
    asset_uri: str
    extra: dict[str, Any]
    source_task_id: str | None
    source_map_index: int | None


@dataclass
class DagTestResult:
    """What one ``airflow dags test`` / ``airflow tasks test`` produced."""

    command: list[str]
    returncode: int
    output: str
    duration: float
    dag_id: str
    dags_folder: Path
    run_id: str | None = None
    dag_run_state: str | None = None
    logical_date: str | None = None
    conf: Any = None
    task_instances: list[TaskInstanceRow] = field(default_factory=list)
    #: ``{(task_id, map_index, key): value}`` with values JSON-decoded (serde dicts are left as dicts).
    xcoms: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    #: ``{(task_id, map_index): {key: value}}`` from the ``task_state_store`` table.
    task_state_store: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    #: Asset events emitted by this run (``outlets`` + ``context["outlet_events"][asset].extra``).
    asset_events: list[AssetEventRow] = field(default_factory=list)

    @property
    def task_states(self) -> dict[str, str | None]:
        """``{task_id: state}``; mapped task instances appear as ``"task_id[map_index]"``."""
        return {
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state for ti in self.task_instances
        }

    def ti(self, task_id: str, map_index: int = -1) -> TaskInstanceRow:
        for row in self.task_instances:
            if row.task_id == task_id and row.map_index == map_index:
                return row
        raise AssertionError(f"no task instance {task_id}[{map_index}] in run {self.run_id}\n{self.describe()}")

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1, *, deserialize: bool = False):
        """The XCom value (JSON-decoded). ``deserialize=True`` turns serde payloads back into objects."""
        try:
            value = self.xcoms[(task_id, map_index, key)]
        except KeyError:
            raise AssertionError(
                f"no XCom {key!r} for {task_id}[{map_index}] in run {self.run_id}\n{self.describe()}"
            ) from None
        if deserialize:
            from airflow.sdk.serde import deserialize as serde_deserialize

            return serde_deserialize(value)
        return value

    def state_store(self, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return self.task_state_store.get((task_id, map_index), {})

    @property
    def output_tail(self) -> str:
        if len(self.output) <= OUTPUT_TAIL_CHARS:
            return self.output
        return f"[... {len(self.output) - OUTPUT_TAIL_CHARS} characters cut ...]\n{self.output[-OUTPUT_TAIL_CHARS:]}"

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.command)}\n"
            f"returncode={self.returncode} duration={self.duration:.1f}s dag_id={self.dag_id} "
            f"run_id={self.run_id} dag_run_state={self.dag_run_state}\n"
            f"task_states={self.task_states}\n"
            f"--- output ---\n{self.output_tail}"
        )

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and self.dag_run_state in (None, "success")

    def assert_success(self) -> DagTestResult:
        if not self.succeeded:
            raise AssertionError(f"Airflow run did not succeed\n{self.describe()}")
        return self

    def assert_task_states(self, **expected: str) -> DagTestResult:
        actual = {task_id: self.task_states.get(task_id) for task_id in expected}
        if actual != expected:
            raise AssertionError(f"task states {actual} != expected {expected}\n{self.describe()}")
        return self

    def assert_in_output(self, *needles: str) -> DagTestResult:
        missing = [n for n in needles if n not in self.output]
        if missing:
            raise AssertionError(f"{missing} not found in output\n{self.describe()}")
        return self


class DagTestRunner:
    """Runs ``airflow dags test`` / ``airflow tasks test`` against one AIRFLOW_HOME (see module doc)."""

    def __init__(self, airflow_home: Path, *, default_timeout: float = 600) -> None:
        self.airflow_home = Path(airflow_home)
        self.db_path = self.airflow_home / "airflow.db"
        self.default_timeout = default_timeout
        self._runs_root = self.airflow_home / "dag-runs"
        self._runs_root.mkdir(parents=True, exist_ok=True)
        #: ``(command, seconds)`` of every subprocess run, for the timing summary.
        self.history: list[tuple[str, float]] = []

    # ------------------------------------------------------------------ public API

    def run(
        self,
        dag_file_or_dag_id: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        env: Mapping[str, str | None] | None = None,
        conf: Mapping[str, Any] | None = None,
        logical_date: datetime | str | None = None,
        dag_id: str | None = None,
        dags_folder: str | os.PathLike[str] | None = None,
        extra_args: Iterable[str] = (),
        check: bool = True,
        timeout: float | None = None,
    ) -> DagTestResult:
        """Run one DAG with ``airflow dags test`` and read the run back from the metadata DB.

        ``dag_file_or_dag_id`` is one of:

        * a ``.py`` file, or a list of files: copied into a fresh DAGS_FOLDER (nothing else is parsed);
          ``dag_id`` defaults to the stem of the first file;
        * a directory: used as DAGS_FOLDER as is (for DAGs importing sibling modules); pass ``dag_id``;
        * a dag id: run from ``dags_folder`` (default: the session's ``$AIRFLOW_HOME/dags``).

        ``env`` is added to the subprocess environment (a ``None`` value removes a variable).
        ``logical_date`` is passed on the command line (re-using one replaces the earlier run of it).
        With ``check=True`` (default) a non-successful run raises ``AssertionError`` showing the output.
        """
        dag_id, folder = self._resolve_dags(dag_file_or_dag_id, dag_id=dag_id, dags_folder=dags_folder)
        cmd = [*airflow_executable(), "dags", "test", dag_id]
        logical = _format_date(logical_date)
        if logical is not None:
            cmd.append(logical)
        if conf is not None:
            cmd += ["-c", json.dumps(conf)]
        cmd += list(extra_args)

        before = self._run_ids(dag_id)
        returncode, output, duration = self._execute(cmd, folder, env, timeout, f"dags test {dag_id}")
        new_runs = [r for r in self._runs(dag_id) if r["run_id"] not in before]
        run_id = new_runs[-1]["run_id"] if new_runs else None
        result = self._result(cmd, returncode, output, duration, dag_id, folder, run_id)
        if check:
            result.assert_success()
        return result

    def run_task(
        self,
        dag_or_result: str | DagTestResult,
        task_id: str,
        logical_date_or_run_id: str | datetime | None = None,
        *,
        env: Mapping[str, str | None] | None = None,
        dags_folder: str | os.PathLike[str] | None = None,
        map_index: int | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> DagTestResult:
        """Re-run one task of an existing run with ``airflow tasks test <dag_id> <task_id> <run_id>``.

        Pass the :class:`DagTestResult` of an earlier :meth:`run` to target its run and DAGS_FOLDER.
        The task instance's state and XCom are updated in the DB; ``task_state_store`` rows of the run
        are kept (so this simulates "the worker died and the task is run again"); the try number is not
        incremented. Without a run id/logical date, Airflow creates a throw-away run and deletes it.
        The returned result describes the (whole) run after the task ran.
        """
        if isinstance(dag_or_result, DagTestResult):
            dag_id = dag_or_result.dag_id
            folder = Path(dags_folder) if dags_folder else dag_or_result.dags_folder
            if logical_date_or_run_id is None:
                logical_date_or_run_id = dag_or_result.run_id
        else:
            dag_id = dag_or_result
            folder = Path(dags_folder) if dags_folder else self.airflow_home / "dags"
        cmd = [*airflow_executable(), "tasks", "test", dag_id, task_id]
        target = _format_date(logical_date_or_run_id)
        if target is not None:
            cmd.append(target)
        if map_index is not None:
            cmd += ["--map-index", str(map_index)]

        returncode, output, duration = self._execute(cmd, folder, env, timeout, f"tasks test {dag_id}.{task_id}")
        run_id = self._find_run_id(dag_id, target) if target is not None else None
        result = self._result(cmd, returncode, output, duration, dag_id, folder, run_id)
        # ``airflow tasks test`` exits 0 even when the task fails: judge by the task instance state.
        if returncode == 0 and run_id is not None:
            states = [ti.state for ti in result.task_instances if ti.task_id == task_id]
            if states and any(s != "success" for s in states):
                result.returncode = 1
        if check:
            result.assert_success()
        return result

    # ------------------------------------------------------------------ internals

    def _resolve_dags(
        self,
        target: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        dag_id: str | None,
        dags_folder: str | os.PathLike[str] | None,
    ) -> tuple[str, Path]:
        if isinstance(target, (str, os.PathLike)):
            path = Path(target)
            if path.is_dir():
                if not dag_id:
                    raise ValueError(f"pass dag_id= when running from a directory ({path})")
                return dag_id, path.resolve()
            if path.suffix == ".py" or path.exists():
                files = [path]
            else:  # a dag id
                folder = Path(dags_folder) if dags_folder else self.airflow_home / "dags"
                folder.mkdir(parents=True, exist_ok=True)
                return str(target), folder.resolve()
        else:
            files = [Path(p) for p in target]
            if not files:
                raise ValueError("no DAG files given")
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f)
        folder = Path(tempfile.mkdtemp(prefix=f"{files[0].stem}-", dir=self._runs_root))
        for f in files:
            shutil.copy2(f, folder / f.name)
        return dag_id or files[0].stem, folder

    def _subprocess_env(self, folder: Path, env: Mapping[str, str | None] | None) -> dict[str, str]:
        full = dict(os.environ)
        full["AIRFLOW__CORE__DAGS_FOLDER"] = str(folder)
        pycache_env(full)
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = str(value)
        return full

    def _execute(
        self,
        cmd: list[str],
        folder: Path,
        env: Mapping[str, str | None] | None,
        timeout: float | None,
        label: str,
    ) -> tuple[int, str, float]:
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            env=self._subprocess_env(folder, env),
            cwd=self.airflow_home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout or self.default_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            raise AssertionError(
                f"$ {' '.join(cmd)}\ntimed out after {timeout or self.default_timeout}s\n--- output ---\n"
                f"{output[-OUTPUT_TAIL_CHARS:]}"
            ) from None
        duration = time.monotonic() - started
        self.history.append((label, duration))
        return proc.returncode, output, duration

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def _runs(self, dag_id: str) -> list[sqlite3.Row]:
        if not self.db_path.exists():
            return []
        with self._connect() as conn:
            return conn.execute(
                "SELECT id, run_id, state, logical_date, conf FROM dag_run WHERE dag_id = ? ORDER BY id",
                (dag_id,),
            ).fetchall()

    def _run_ids(self, dag_id: str) -> set[str]:
        return {r["run_id"] for r in self._runs(dag_id)}

    def _find_run_id(self, dag_id: str, run_id_or_logical_date: str) -> str | None:
        runs = self._runs(dag_id)
        for r in runs:
            if r["run_id"] == run_id_or_logical_date:
                return r["run_id"]
        try:
            wanted = datetime.fromisoformat(run_id_or_logical_date)
        except ValueError:
            return None
        if wanted.tzinfo is not None:
            wanted = wanted.astimezone(timezone.utc).replace(tzinfo=None)
        for r in runs:  # sqlite stores naive UTC "YYYY-MM-DD HH:MM:SS.ffffff"
            if r["logical_date"] and datetime.fromisoformat(r["logical_date"]) == wanted:
                return r["run_id"]
        return None

    def _result(
        self,
        cmd: list[str],
        returncode: int,
        output: str,
        duration: float,
        dag_id: str,
        folder: Path,
        run_id: str | None,
    ) -> DagTestResult:
        """The result of one command, with the run's task instances and XComs read back from the DB."""
        result = DagTestResult(
            command=cmd,
            returncode=returncode,
            output=output,
            duration=duration,
            dag_id=dag_id,
            dags_folder=folder,
            run_id=run_id,
        )
        self._read_back(result)
        return result

    def _read_back(self, result: DagTestResult) -> None:
        if result.run_id is None or not self.db_path.exists():
            return
        args = (result.dag_id, result.run_id)
        with self._connect() as conn:
            run = conn.execute(
                "SELECT state, logical_date, conf FROM dag_run WHERE dag_id = ? AND run_id = ?", args
            ).fetchone()
            if run is None:
                return
            result.dag_run_state = run["state"]
            result.logical_date = run["logical_date"]
            result.conf = _json_value(run["conf"])
            result.task_instances = [
                TaskInstanceRow(
                    task_id=r["task_id"],
                    map_index=r["map_index"],
                    state=r["state"],
                    try_number=r["try_number"],
                    next_method=r["next_method"],
                    next_kwargs=_json_value(r["next_kwargs"]),
                )
                for r in conn.execute(
                    "SELECT task_id, map_index, state, try_number, next_method, next_kwargs FROM task_instance "
                    "WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index",
                    args,
                )
            ]
            result.xcoms = {
                (r["task_id"], r["map_index"], r["key"]): _json_value(r["value"])
                for r in conn.execute(
                    "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ?", args
                )
            }
            store: dict[tuple[str, int], dict[str, Any]] = {}
            for r in conn.execute(
                "SELECT task_id, map_index, key, value FROM task_state_store WHERE dag_id = ? AND run_id = ?",
                args,
            ):
                store.setdefault((r["task_id"], r["map_index"]), {})[r["key"]] = _json_value(r["value"])
            result.task_state_store = store
            result.asset_events = [
                AssetEventRow(
                    asset_name=r["name"],
                    asset_uri=r["uri"],
                    extra=_json_value(r["extra"]) or {},
                    source_task_id=r["source_task_id"],
                    source_map_index=r["source_map_index"],
                )
                for r in conn.execute(
                    "SELECT a.name, a.uri, e.extra, e.source_task_id, e.source_map_index "
                    "FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                    "WHERE e.source_dag_id = ? AND e.source_run_id = ? ORDER BY e.id",
                    args,
                )
            ]


def _format_date(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclass
class MotoS3:
    """A moto S3 server reachable over HTTP, plus the Airflow connection that points at it."""

    endpoint_url: str
    client: Any  # boto3 S3 client, for assertions
    conn_id: str = MOTO_CONN_ID
    region: str = AWS_REGION
    buckets: list[str] = field(default_factory=list)

    @property
    def conn_json(self) -> str:
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            }
        )

    @property
    def env(self) -> dict[str, str]:
        """``{"AIRFLOW_CONN_AWS_MOTO": ...}`` (already in ``os.environ`` while the fixture is active)."""
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": self.conn_json}

    def create_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a unique name (``<prefix>-<12 hex>``) and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def url(self, bucket: str, key: str = "") -> str:
        """``s3://aws_moto@<bucket>/<key>``, the form ``ObjectStoragePath`` takes a conn id in."""
        return f"s3://{self.conn_id}@{bucket}/{key.lstrip('/')}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return sorted(
            obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])
        )

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return self.client.head_object(Bucket=bucket, Key=key)
