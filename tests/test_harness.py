"""Tests of the test harness itself (conftest.py, support/dag_runner.py), and of the Airflow 3.3 behaviour
the provider's tests rely on: ObjectStoragePath on moto, XCom, asset events with ``extra``,
``task_state_store``, deferral and reschedule under ``airflow dags test``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

# --------------------------------------------------------------------------- DAG sources

ROUNDTRIP_DAG = """
from __future__ import annotations

import pendulum

from airflow.sdk import Asset, ObjectStoragePath, dag, task

BLOB = Asset(name="harness_blob", uri="s3://harness-assets/blob.bin")


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def harness_roundtrip():
    @task(outlets=[BLOB])
    def produce(**context) -> str:
        bucket = context["dag_run"].conf["bucket"]
        path = ObjectStoragePath(f"s3://aws_moto@{bucket}/runs/{context['run_id']}/data.bin")
        payload = b"hello from the harness"
        path.write_bytes(payload)
        context["task_state_store"].set("written", {"key": path.key, "bytes": len(payload)})
        context["outlet_events"][BLOB].extra = {"path": str(path), "bytes": len(payload)}
        print("PRODUCED", path)
        return str(path)

    @task
    def consume(path: str, **context) -> dict:
        data = ObjectStoragePath(path).read_bytes()
        store = context["task_state_store"]
        runs = (store.get("runs") or 0) + 1
        store.set("runs", runs)
        return {"size": len(data), "text": data.decode(), "runs": runs}

    consume(produce())


harness_roundtrip()
"""

DEFERRAL_DAG = '''
from __future__ import annotations

import datetime

import pendulum

from airflow.providers.common.compat.sdk import conf
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, BaseSensorOperator, dag, task


class DeferringOperator(BaseOperator):
    def execute(self, context):
        context["task_state_store"].set("job", {"id": "job-1"})
        self.defer(
            trigger=TimeDeltaTrigger(datetime.timedelta(seconds=1)),
            method_name="execute_complete",
            kwargs={"foo": "bar"},
        )

    def execute_complete(self, context, event=None, foo=None):
        return {"event": str(event), "foo": foo, "job": context["task_state_store"].get("job")}


class MaybeDeferring(BaseOperator):
    """Defers only when deferrable, which defaults to [operators] default_deferrable (like providers do)."""

    def __init__(self, *, deferrable: bool = conf.getboolean("operators", "default_deferrable"), **kwargs):
        super().__init__(**kwargs)
        self.deferrable = deferrable

    def execute(self, context):
        if not self.deferrable:
            return "ran synchronously"
        self.defer(trigger=TimeDeltaTrigger(datetime.timedelta(seconds=1)), method_name="execute_complete")

    def execute_complete(self, context, event=None):
        return "resumed after deferral"


class CountingSensor(BaseSensorOperator):
    def poke(self, context):
        store = context["task_state_store"]
        pokes = (store.get("pokes") or 0) + 1
        store.set("pokes", pokes)
        store.set("reschedule_count", context["task_reschedule_count"])
        return pokes >= 3


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def harness_deferral():
    @task(retries=1, retry_delay=datetime.timedelta(seconds=0))
    def flaky(**context):
        store = context["task_state_store"]
        attempts = (store.get("attempts") or 0) + 1
        store.set("attempts", attempts)
        if attempts == 1:
            raise RuntimeError("first attempt fails on purpose")
        return {"attempts": attempts, "try_number": context["ti"].try_number}

    defer = DeferringOperator(task_id="defer")
    sensor = CountingSensor(task_id="sensor", mode="reschedule", poke_interval=1, timeout=60)
    # deferrable because AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=True is in the run's env
    maybe = MaybeDeferring(task_id="maybe_defer")
    flaky() >> defer >> sensor >> maybe


harness_deferral()
'''

FAILING_DAG = """
from __future__ import annotations

import pendulum

from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def harness_failing():
    @task
    def boom():
        raise ValueError("kaboom-4711")

    @task
    def after(value):
        return value

    after(boom())


harness_failing()
"""


def write_dag(directory: Path, dag_id: str, source: str) -> Path:
    path = directory / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source))
    return path


# --------------------------------------------------------------------------- environment


def test_environment_is_isolated() -> None:
    # (do not `import conftest` in tests: tests/hook/conftest.py is also the module "conftest")
    from airflow import configuration

    home = Path(os.environ["AIRFLOW_HOME"])
    assert home.name.startswith("xai-airflow-home-")
    assert str(home) == configuration.AIRFLOW_HOME
    assert configuration.conf.get("database", "sql_alchemy_conn") == f"sqlite:///{home / 'airflow.db'}"
    assert configuration.conf.getboolean("core", "load_examples") is False
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"


# --------------------------------------------------------------------------- ObjectStoragePath


def test_object_storage_path_s3_through_moto(moto_s3, s3_bucket: str) -> None:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"s3://aws_moto@{s3_bucket}/x/y.bin")
    path.write_bytes(b"\x00\x01binary")

    assert path.read_bytes() == b"\x00\x01binary"
    assert moto_s3.get_bytes(s3_bucket, "x/y.bin") == b"\x00\x01binary"
    assert moto_s3.keys(s3_bucket) == ["x/y.bin"]

    # what the provider can rely on
    assert path.protocol == "s3"
    assert path.conn_id == "aws_moto"
    assert path.bucket == s3_bucket
    assert path.key == "x/y.bin"
    assert path.path == f"{s3_bucket}/x/y.bin"  # fsspec path: no protocol, no conn id
    assert str(path) == f"s3://aws_moto@{s3_bucket}/x/y.bin"  # keeps the conn id: round-trips
    assert type(path.fs).__name__ == "S3FileSystem"
    assert path.fs.endpoint_url == moto_s3.endpoint_url
    assert path.fs.cat_file(path.path) == b"\x00\x01binary"
    child = path.parent / "z.txt"
    assert child.conn_id == "aws_moto"
    assert ObjectStoragePath(str(path)).read_bytes() == b"\x00\x01binary"


def test_object_storage_path_local_file(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"file://{tmp_path}/out/image.png")
    path.parent.mkdir(parents=True, exist_ok=True)  # the local fs does not create parents on write
    path.write_bytes(b"\x89PNG")

    assert (tmp_path / "out" / "image.png").read_bytes() == b"\x89PNG"
    assert path.protocol == "file"
    assert path.conn_id is None
    assert path.bucket == ""
    assert path.path == f"{tmp_path}/out/image.png"
    assert path.key == f"{tmp_path}/out/image.png".lstrip("/")
    assert str(path) == f"file://{tmp_path}/out/image.png"


def test_object_storage_path_serde_round_trip(moto_s3, s3_bucket: str) -> None:
    """ObjectStoragePath serializes into XCom (serde ``serialize``/``deserialize`` + ``__version__``)."""
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.serde import deserialize, serialize

    path = ObjectStoragePath(moto_s3.url(s3_bucket, "a/b.png"))
    encoded = serialize(path)
    assert encoded == {
        "__classname__": "airflow.sdk.io.path.ObjectStoragePath",
        "__version__": 1,
        "__data__": {"path": f"s3://aws_moto@{s3_bucket}/a/b.png", "conn_id": "aws_moto", "kwargs": {}},
    }
    decoded = deserialize(encoded)
    assert decoded == path
    assert decoded.conn_id == "aws_moto"


def test_asset_uri_rules() -> None:
    from airflow.sdk import Asset, ObjectStoragePath

    assert Asset(uri="s3://bucket/images/a.png").uri == "s3://bucket/images/a.png"
    assert Asset(uri="S3://bucket/images/").uri == "s3://bucket/images"  # scheme lower-cased, "/" stripped
    assert Asset(uri="file:///tmp/images/a.png").uri == "file:///tmp/images/a.png"
    # A conn id in the userinfo is *kept* (only a password is dropped): accepted, but it is not the
    # canonical s3 URI of the object; use f"s3://{path.bucket}/{path.key}" for assets.
    assert Asset(uri="s3://aws_moto@bucket/a.png").uri == "s3://aws_moto@bucket/a.png"
    with pytest.warns(UserWarning, match="should not contain a password"):
        assert Asset(uri="s3://user:secret@bucket/a.png").uri == "s3://bucket/a.png"
    path = ObjectStoragePath("s3://aws_moto@bucket/a.png")
    assert Asset(uri=f"s3://{path.bucket}/{path.key}").uri == "s3://bucket/a.png"
    with pytest.raises(ValueError, match="must contain a bucket name"):
        Asset(uri="s3:///no-bucket")
    with pytest.raises(ValueError, match="reserved"):
        Asset(uri="airflow://x")


def test_s3_client_without_the_moto_connection_cannot_reach_aws(s3_bucket: str) -> None:
    """The ``AWS_ENDPOINT_URL`` safety net: a client that does not use ``aws_moto`` fails locally."""
    import boto3
    import botocore.config
    import botocore.exceptions

    client = boto3.client("s3", config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2))
    with pytest.raises(botocore.exceptions.EndpointConnectionError, match=r"127\.0\.0\.1:9"):
        client.list_objects_v2(Bucket=s3_bucket)


# --------------------------------------------------------------------------- airflow dags test


@pytest.fixture(scope="module")
def roundtrip_run(dag_runner, moto_s3, tmp_path_factory):
    """One ``airflow dags test`` of ROUNDTRIP_DAG, shared by the tests below."""
    bucket = moto_s3.create_bucket("roundtrip")
    dag_file = write_dag(tmp_path_factory.mktemp("dags"), "harness_roundtrip", ROUNDTRIP_DAG)
    result = dag_runner.run(dag_file, conf={"bucket": bucket}, logical_date="2025-01-01T00:00:00+00:00")
    return result, bucket


@pytest.mark.dag
def test_dag_writes_and_reads_s3_through_moto(roundtrip_run, moto_s3) -> None:
    result, bucket = roundtrip_run
    result.assert_task_states(produce="success", consume="success")
    assert result.dag_run_state == "success"
    assert result.conf == {"bucket": bucket}

    key = f"runs/{result.run_id}/data.bin"
    assert result.xcom("produce") == f"s3://aws_moto@{bucket}/{key}"
    assert moto_s3.get_bytes(bucket, key) == b"hello from the harness"
    assert result.xcom("consume") == {"size": 22, "text": "hello from the harness", "runs": 1}

    assert result.state_store("produce") == {"written": {"key": key, "bytes": 22}}
    assert result.state_store("consume") == {"runs": 1}

    [event] = result.asset_events
    assert (event.asset_name, event.asset_uri, event.source_task_id) == (
        "harness_blob",
        "s3://harness-assets/blob.bin",
        "produce",
    )
    assert event.extra == {"path": f"s3://aws_moto@{bucket}/{key}", "bytes": 22}
    result.assert_in_output("PRODUCED s3://aws_moto@")  # print() from a task lands in the output


@pytest.mark.dag
def test_rerun_one_task_then_the_whole_dag(roundtrip_run, dag_runner) -> None:
    first, _ = roundtrip_run

    # `airflow tasks test <dag> <task> <run_id>`: same run, state store kept, XCom overwritten.
    again = dag_runner.run_task(first, "consume")
    assert again.run_id == first.run_id
    assert again.task_states == {"produce": "success", "consume": "success"}
    assert again.xcom("consume")["runs"] == 2
    assert again.state_store("consume") == {"runs": 2}
    assert again.ti("consume").try_number == first.ti("consume").try_number

    # `airflow dags test` for the same logical date replaces the run: new run id, state store reset.
    second = dag_runner.run(first.dags_folder, dag_id=first.dag_id, conf=first.conf, logical_date=first.logical_date)
    assert second.run_id != first.run_id
    assert first.run_id not in dag_runner._run_ids(first.dag_id)
    assert second.xcom("consume")["runs"] == 1


@pytest.mark.dag
def test_deferral_reschedule_and_retry_under_dags_test(run_dag_test, tmp_path: Path) -> None:
    result = run_dag_test(
        write_dag(tmp_path, "harness_deferral", DEFERRAL_DAG),
        env={"AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"},
    )
    result.assert_task_states(flaky="success", defer="success", sensor="success", maybe_defer="success")

    # retries run in the same `dags test`; the state store is shared by the tries
    assert result.xcom("flaky") == {"attempts": 2, "try_number": 2}
    assert result.ti("flaky").try_number == 2

    # the trigger ran in-process and its event came back to execute_complete ...
    defer = result.xcom("defer")
    assert defer["job"] == {"id": "job-1"}
    assert defer["event"].startswith("20")  # DateTimeTrigger's payload: the moment it fired
    # ... but `dags test` drops the `kwargs=` given to defer() when the trigger yields an event
    # (airflow/sdk/definitions/dag.py: next_kwargs = {"event": ...}); a real triggerer merges them.
    assert defer["foo"] is None

    # reschedule-mode sensor: re-run about once a second, state store kept across pokes
    assert result.state_store("sensor") == {"pokes": 3, "reschedule_count": 2}

    # [operators] default_deferrable (env of the run) reaches defaults read at import time
    assert result.xcom("maybe_defer") == "resumed after deferral"
    result.assert_in_output("[DAG TEST] running trigger in line", "Pausing task as DEFERRED")
    assert result.output.count("[DAG TEST] running trigger in line") == 2


@pytest.mark.dag
def test_failed_run_reports_output(run_dag_test, tmp_path: Path) -> None:
    result = run_dag_test(write_dag(tmp_path, "harness_failing", FAILING_DAG), check=False)

    assert result.returncode == 1
    assert result.dag_run_state == "failed"
    assert result.task_states == {"boom": "failed", "after": "upstream_failed"}
    with pytest.raises(AssertionError, match="kaboom-4711") as excinfo:
        result.assert_success()
    assert "returncode=1" in str(excinfo.value)
