"""Shared test infrastructure: an isolated Airflow home, a moto S3 server and a DAG runner.

Importing this module (pytest does so before collecting any test) prepares the *process environment*
before anything imports Airflow:

* ``AIRFLOW_HOME`` is a throw-away directory (removed at the end unless ``XAI_TESTS_KEEP_AIRFLOW_HOME=1``)
  with a sqlite DB, ``load_examples`` off and a fixed Fernet key / JWT secret (see
  :func:`dag_runner.airflow_base_env`);
* fake AWS credentials, no AWS config files, no instance metadata, and ``AWS_ENDPOINT_URL`` pointing at
  a closed local port: any S3 client that does *not* go through the ``aws_moto`` connection fails fast
  with "Could not connect to the endpoint URL: http://127.0.0.1:9/..." instead of reaching AWS. (Tests
  using ``moto.mock_aws`` in-process should ``monkeypatch.delenv("AWS_ENDPOINT_URL")``.)
* when ``PYTHONDONTWRITEBYTECODE`` is set, bytecode goes to a cache outside the source tree (see
  :func:`dag_runner.pycache_prefix`) instead of nowhere: saves ~3 s per Airflow process.

Fixtures (see each docstring):

* ``airflow_home`` (session) -> ``Path``: the home above with its DB migrated (``airflow db migrate``).
* ``dag_runner`` (session) -> :class:`dag_runner.DagTestRunner`: ``.run(...)`` and ``.run_task(...)``.
* ``run_dag_test`` (function) -> ``dag_runner.run``.
* ``moto_s3`` (session) -> :class:`dag_runner.MotoS3`: a moto S3 *server* on 127.0.0.1 and the Airflow connection
  ``aws_moto`` (``AIRFLOW_CONN_AWS_MOTO``, exported to ``os.environ`` and so to every DAG subprocess).
* ``s3_bucket`` (function) -> ``str``: a fresh, uniquely named bucket on that server.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if "airflow" in sys.modules:  # pragma: no cover - guards the import order this module relies on
    raise RuntimeError(
        "Airflow was imported before tests/conftest.py could point AIRFLOW_HOME at a throw-away "
        "directory (probably by a pytest plugin loaded through an entry point). Import airflow lazily "
        "in plugins, inside fixtures."
    )

from support.dag_runner import AWS_REGION, DagTestRunner, MotoS3, airflow_base_env, migrate_db, pycache_prefix

#: Nothing listens on the discard port: a client that ignores the moto connection fails fast.
UNREACHABLE_AWS_ENDPOINT = "http://127.0.0.1:9"

# --------------------------------------------------------------------------- process environment
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="xai-airflow-home-")).resolve()
for _sub in ("dags", "plugins", "logs"):
    (AIRFLOW_HOME / _sub).mkdir()

os.environ.update(airflow_base_env(AIRFLOW_HOME))
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        "AWS_CONFIG_FILE": str(AIRFLOW_HOME / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(AIRFLOW_HOME / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": UNREACHABLE_AWS_ENDPOINT,
    }
)
os.environ.pop("AWS_PROFILE", None)
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))

if (_prefix := pycache_prefix()) is not None:
    sys.pycache_prefix = str(_prefix)
    sys.dont_write_bytecode = False

_TIMINGS: dict[str, float] = {}
_RUNNER_KEY = pytest.StashKey[DagTestRunner]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"xai harness: AIRFLOW_HOME={AIRFLOW_HOME}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    runner: DagTestRunner | None = config.stash.get(_RUNNER_KEY, None)
    if "db_migrate" not in _TIMINGS and not (runner and runner.history):
        return
    lines = []
    if "db_migrate" in _TIMINGS:
        lines.append(f"airflow db migrate: {_TIMINGS['db_migrate']:.1f}s")
    if runner and runner.history:
        total = sum(d for _, d in runner.history)
        lines.append(f"{len(runner.history)} airflow subprocess runs, {total:.1f}s in total:")
        lines += [f"  {label}: {duration:.1f}s" for label, duration in runner.history]
    terminalreporter.write_sep("-", "xai harness timings")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not os.environ.get("XAI_TESTS_KEEP_AIRFLOW_HOME"):
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


# --------------------------------------------------------------------------- Airflow
@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's AIRFLOW_HOME, with its sqlite metadata DB migrated (once, ~3-5 s)."""
    if "db_migrate" not in _TIMINGS:
        _TIMINGS["db_migrate"] = migrate_db()
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def dag_runner(airflow_home: Path, pytestconfig: pytest.Config) -> DagTestRunner:
    """Runs ``airflow dags test`` / ``airflow tasks test`` in a subprocess against ``airflow_home``."""
    runner = DagTestRunner(airflow_home)
    pytestconfig.stash[_RUNNER_KEY] = runner
    return runner


@pytest.fixture
def run_dag_test(dag_runner: DagTestRunner):
    """``run_dag_test(dag_file_or_dag_id, *, env=None, conf=None, logical_date=None, ...) -> DagTestResult``.

    See :meth:`dag_runner.DagTestRunner.run`. Example::

        result = run_dag_test(tmp_path / "my_dag.py", env=moto_s3.env, conf={"bucket": s3_bucket})
        assert result.task_states == {"make": "success"}
        assert result.xcom("make") == f"s3://aws_moto@{s3_bucket}/out.png"
    """
    return dag_runner.run


# --------------------------------------------------------------------------- S3 (moto server)
@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """A moto S3 server (``ThreadedMotoServer`` on 127.0.0.1, free port) and ``AIRFLOW_CONN_AWS_MOTO``.

    ``ObjectStoragePath("s3://aws_moto@<bucket>/<key>")`` then reads/writes it through s3fs, in this
    process and in DAG subprocesses. Use ``moto_s3.client`` (boto3) for assertions rather than a second
    ``ObjectStoragePath`` (s3fs caches listings per filesystem instance).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    moto = MotoS3(endpoint_url=endpoint_url, client=client)
    saved = {key: os.environ.get(key) for key in moto.env}
    os.environ.update(moto.env)
    try:
        yield moto
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> str:
    """A fresh bucket (unique name) on the session's moto server."""
    return moto_s3.create_bucket()
