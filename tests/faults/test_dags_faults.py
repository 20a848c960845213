"""Faults under real Airflow (`airflow dags test` / `airflow tasks test` in subprocesses): a wrong key
fails at once without spending retries, keys with stray whitespace never leak, and a worker killed
mid-run loses nothing and pays again only for what was in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from faults_support import conn_json, generation_posts, write_dag

from airflow_provider_xai_image.storage.image_checks import verify_stream
from airflow_provider_xai_image.testing import XaiEmulator

pytestmark = pytest.mark.dag

DAG = """
    from datetime import datetime, timedelta
    import os

    from airflow.sdk import DAG
    from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        XaiGenerateImagesOperator(
            task_id="generate",
            prompt=[f"a kite, colour {{i}}" for i in range(int(os.environ["XAI_TEST_PROMPTS"]))],
            output_uri=os.environ["XAI_TEST_OUTPUT"],
            max_concurrency=2,
            deferrable=os.environ.get("XAI_TEST_DEFERRABLE") == "1",
            retries=3,
            retry_delay=timedelta(seconds=1),
        )
"""


def dag_file(tmp_path: Path, dag_id: str) -> Path:
    return write_dag(tmp_path / "dags", dag_id, DAG.format(dag_id=dag_id))


def env_for(
    emulator: XaiEmulator, output: str, prompts: int, *, api_key: str | None = None, **extra: Any
) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_XAI_DEFAULT": conn_json(emulator, api_key=api_key, **extra),
        "XAI_TEST_OUTPUT": output,
        "XAI_TEST_PROMPTS": str(prompts),
    }


def assert_secret_nowhere(result: Any, *secrets: str) -> None:
    stored = json.dumps({str(key): value for key, value in result.xcoms.items()}, default=str)
    stored += json.dumps([ti.next_kwargs for ti in result.task_instances], default=str)
    for secret in secrets:
        assert secret not in result.output
        assert secret not in stored


def test_a_wrong_key_fails_after_one_try_with_no_generation_request(
    run_dag_test: Any, tmp_path: Path, xai_emulator: XaiEmulator
) -> None:
    wrong = "xai-wrong-key-5b7d0e1f2a3c4d5e"
    result = run_dag_test(
        dag_file(tmp_path, "xai_wrong_key"),
        env=env_for(xai_emulator, f"file://{tmp_path}/out", 2, api_key=wrong),
        check=False,
    )
    ti = result.ti("generate")
    assert ti.state == "failed"
    assert ti.try_number == 1  # retries=3, none spent
    assert "cannot be fixed by a retry" in result.output
    assert generation_posts(xai_emulator) == 0
    assert_secret_nowhere(result, wrong)


@pytest.mark.parametrize("deferrable", ["0", "1"])
def test_a_key_with_a_trailing_newline_works_and_never_shows(
    run_dag_test: Any, tmp_path: Path, xai_emulator: XaiEmulator, deferrable: str
) -> None:
    env = env_for(xai_emulator, f"file://{tmp_path}/out", 2, api_key=xai_emulator.api_key + "\n")
    result = run_dag_test(dag_file(tmp_path, "xai_key_newline"), env={**env, "XAI_TEST_DEFERRABLE": deferrable})
    assert len(result.xcom("generate")) == 2
    assert_secret_nowhere(result, xai_emulator.api_key)


def test_a_key_with_an_inner_newline_is_refused_without_showing_it(
    run_dag_test: Any, tmp_path: Path, xai_emulator: XaiEmulator
) -> None:
    head, tail = "xai-first-half-9a8b7c", "second-half-6d5e4f"
    env = env_for(xai_emulator, f"file://{tmp_path}/out", 1, api_key=f"{head}\n{tail}")
    result = run_dag_test(dag_file(tmp_path, "xai_key_inner_newline"), env=env, check=False)
    ti = result.ti("generate")
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert "Connection 'xai_default': the API key holds a character an HTTP header cannot carry" in result.output
    assert xai_emulator.requests_log == []
    assert_secret_nowhere(result, head, tail)


# --------------------------------------------------------------------------- worker killed mid-run


@pytest.mark.parametrize("storage", ["file", "s3"])
def test_a_worker_killed_mid_run_then_rerun_pays_only_for_what_was_in_flight(
    dag_runner: Any, tmp_path: Path, xai_emulator: XaiEmulator, moto_s3: Any, storage: str
) -> None:
    prompts, concurrency = 12, 2
    if storage == "s3":
        bucket = moto_s3.create_bucket("killed")
        output = moto_s3.url(bucket, "images/")
    else:
        output = f"file://{tmp_path}/out"
    xai_emulator.configure(generation_latency=0.4)

    def stored_images() -> list[str]:
        if storage == "s3":
            return [key for key in moto_s3.keys(bucket, "images/") if key.endswith(".jpg")]
        return [str(image) for image in Path(tmp_path, "out").rglob("*.jpg")]

    path = dag_file(tmp_path, f"xai_killed_{storage}")
    env = env_for(xai_emulator, output, prompts)
    # SIGKILLed once a few requests were answered.
    proc = start_dag_test(dag_runner, path, env)
    deadline = time.monotonic() + 120
    while generation_posts(xai_emulator) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # requests in flight at the kill finish on the server, and are billed
    sent = generation_posts(xai_emulator)
    stored_at_kill = len(stored_images())
    assert 4 <= stored_at_kill < prompts, "the kill must land mid-run"
    in_flight = sent - stored_at_kill  # sent, maybe billed, but not stored when the worker died
    assert in_flight <= concurrency
    (run,) = [row for row in dag_runner._runs(path.stem)]
    # The rerun, as Airflow's next try would: the killed run stays "running", so judge by the task.
    result = dag_runner.run_task(path.stem, "generate", run["run_id"], env=env, dags_folder=path.parent, check=False)
    assert result.ti("generate").state == "success", result.describe()
    uris = result.xcom("generate")
    assert len(uris) == len(set(uris)) == prompts
    assert xai_emulator.images_billed <= prompts + in_flight
    manifest_uri = result.xcom("generate", key="manifest")
    if storage == "s3":
        manifest = json.loads(moto_s3.get_bytes(bucket, manifest_uri.split(f"{bucket}/", 1)[1]))
    else:
        manifest = json.loads(Path(manifest_uri.removeprefix("file://")).read_text())
    assert len(stored_images()) == prompts  # each image stored once
    assert sorted(image["prompt_index"] for image in manifest["images"]) == list(range(prompts))


def start_dag_test(dag_runner: Any, path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`airflow dags test` of the DAG file at ``path``, in its own process group (to be killed whole)."""
    return subprocess.Popen(
        [*_airflow(), "dags", "test", path.stem],
        env=dag_runner._subprocess_env(path.parent, env),
        cwd=dag_runner.airflow_home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_a_worker_killed_mid_download_leaves_no_partial_file_in_the_output(
    dag_runner: Any, tmp_path: Path, xai_emulator: XaiEmulator
) -> None:
    out, spool = tmp_path / "out", tmp_path / "spool"
    path = dag_file(tmp_path, "xai_killed_downloading")
    env = {**env_for(xai_emulator, f"file://{out}", 2), "AIRFLOW__XAI_IMAGE__SPOOL_DIR": str(spool)}
    xai_emulator.configure(slow_image_bytes_per_second=2048)  # each image takes about ten seconds to arrive
    proc = start_dag_test(dag_runner, path, env)
    deadline = time.monotonic() + 120

    def downloading() -> list[Path]:
        return list(spool.rglob("*.part")) if spool.exists() else []

    while not downloading() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # a part of the image is in
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert downloading(), "the kill must land mid-download"
    xai_emulator.configure(slow_image_bytes_per_second=None)

    (run,) = [row for row in dag_runner._runs(path.stem)]
    result = dag_runner.run_task(path.stem, "generate", run["run_id"], env=env, dags_folder=path.parent, check=False)

    assert result.ti("generate").state == "success", result.describe()
    assert len(result.xcom("generate")) == 2
    stored = [item for item in out.rglob("*") if item.is_file()]
    assert not [item.name for item in stored if ".part" in item.name]  # neither a cut download nor a staging file
    images = [item for item in stored if item.suffix == ".jpg"]
    assert len(images) == 2
    for image in images:
        with image.open("rb") as stream, open(os.devnull, "wb") as sink:
            verify_stream(stream, sink, image.name)  # each one whole
    assert list(spool.iterdir()) == []  # the retry's spool folder went with its manifest


def _airflow() -> list[str]:
    from support.dag_runner import airflow_executable

    return airflow_executable()
