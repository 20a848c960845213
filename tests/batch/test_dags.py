"""The batch operators, sensor and triggers in real DAG runs: ``airflow dags test`` (and ``airflow tasks
test`` to re-run one task in the same run) in a subprocess, against the emulator over HTTP and the moto
S3 server.

Under ``airflow dags test`` a deferred task's trigger runs inline (its first event), and a
reschedule-mode sensor is re-poked about once a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from batch_support import (
    EMULATED_FAILURE_CODED,
    EXPIRED_MESSAGE,
    REFUSED_MESSAGE,
    BatchWatcher,
    batches_created,
    calls,
    dag_env,
    expire,
    image_downloads,
    no_key_in,
    refuse,
    write_dag,
)
from support.dag_runner import DagTestResult

from airflow_provider_xai_image.ledger.records import batch_fingerprint
from airflow_provider_xai_image.storage.layout import safe_segment
from airflow_provider_xai_image.testing import XaiEmulator

pytestmark = pytest.mark.dag

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
BATCH_KEYS = {
    "batch_id",
    "name",
    "create_time",
    "expire_time",
    "cancel_time",
    "cancel_by_xai_message",
    "state",
}


def assert_key_nowhere(result: DagTestResult, emulator: XaiEmulator) -> None:
    """The API key is in no log line, XCom, stored trigger event (next_kwargs) or task_state_store row."""
    assert emulator.api_key not in result.output
    no_key_in(
        emulator.api_key,
        {f"{task}:{key}": value for (task, _, key), value in result.xcoms.items()},
        [ti.next_kwargs for ti in result.task_instances],
        {task: values for (task, _), values in result.task_state_store.items()},
    )


def progress(batch_id: str, success: int, failed: int, pending: int, total: int) -> str:
    """A progress line as the sensor, the operator and the trigger log it."""
    return f"batch {batch_id}: {success} succeeded, {failed} failed, 0 cancelled, {pending} pending of {total}"


def validating(batch_id: str) -> str:
    """What they log while xAI validates the input file (every counter 0)."""
    return f"batch {batch_id}: xAI is validating the input file"


def batch_gets(emulator: XaiEmulator, batch_id: str) -> int:
    return len(calls(emulator, "GET", f"/v1/batches/{batch_id}"))


def s3_manifest(moto_s3, bucket: str, uri: str) -> dict[str, Any]:
    return json.loads(moto_s3.get_bytes(bucket, uri.split(f"{bucket}/", 1)[1]))


# --------------------------------------------------------------------------- the sensor, three modes

SENSOR_MODES_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor

with DAG(dag_id="xai_batch_sensor_modes", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    previous = None
    for mode in ("poke", "reschedule", "deferrable"):
        submit = XaiBatchGenerateImagesOperator(
            task_id=f"submit_{mode}",
            prompts=[f"{mode} mode, picture {i}" for i in range(3)],
            output_uri="%(output_uri)s",
            wait_for_completion=False,
        )
        wait = XaiBatchSensor(
            task_id=f"wait_{mode}",
            batch_id=submit.output,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=1 if mode == "reschedule" else 0.3,
            timeout=120,
        )
        if previous is not None:
            previous >> submit  # one after the other: each sensor meets a batch that is still validating
        submit >> wait
        previous = wait
"""


def test_sensor_waits_through_validation_for_a_batch_in_poke_reschedule_and_deferrable_mode(
    run_dag_test, emulator: XaiEmulator, output_uri: str, tmp_path: Path
) -> None:
    # xAI validates each input file for 0.8 s (every counter 0: not done), then runs it for 1.5 s.
    emulator.configure(batch_validation_seconds=0.8, batch_seconds=1.5)
    dag = write_dag(tmp_path, "xai_batch_sensor_modes", SENSOR_MODES_DAG, output_uri=output_uri)

    result = run_dag_test(dag, env=dag_env(emulator))

    modes = ("poke", "reschedule", "deferrable")
    result.assert_task_states(**{f"{step}_{mode}": "success" for mode in modes for step in ("submit", "wait")})
    for mode in modes:
        batch_id = result.xcom(f"submit_{mode}")
        assert batch_id == result.xcom(f"submit_{mode}", key="batch_id")
        [final] = result.xcom(f"wait_{mode}")  # the final batch states are the sensor's XCom
        assert final.keys() == BATCH_KEYS
        assert final["batch_id"] == batch_id
        assert final["state"] == {
            "num_requests": 3,
            "num_pending": 0,
            "num_success": 3,
            "num_error": 0,
            "num_cancelled": 0,
        }
        assert batch_gets(emulator, batch_id) >= 2, f"{mode}: the batch was done at the first look"
        result.assert_in_output(
            validating(batch_id),  # all-zero counters: it kept waiting (the trigger logs it in deferrable mode)
            progress(batch_id, 3, 0, 0, 3),
        )
    assert batches_created(emulator) == 3
    assert emulator.images_billed == 9
    # reschedule mode gave its slot back between pokes; only the deferrable sensor deferred
    assert result.output.count("Rescheduling task, marking task as UP_FOR_RESCHEDULE") >= 1
    assert result.output.count("Pausing task as DEFERRED") == 1
    assert result.output.count("[DAG TEST] running trigger in line") == 1
    assert_key_nowhere(result, emulator)


# --------------------------------------------------------------------------- the sensor failing

SENSOR_FAILURES_DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_xai_image.operators.batch import (
    XaiBatchGenerateImagesOperator,
    XaiStoreBatchResultsOperator,
)
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor

OUTPUT = "%(output_uri)s"
FAIL = "[[fail]]"

with DAG(dag_id="xai_batch_sensor_failures", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    # 3 of 10 fail, 2 allowed: fails (deferrable: the trigger judges)
    submit_over = XaiBatchGenerateImagesOperator(
        task_id="submit_over",
        prompts=[f"over {i}" + (FAIL if i < 3 else "") for i in range(10)],
        output_uri=OUTPUT,
        wait_for_completion=False,
    )
    wait_over = XaiBatchSensor(
        task_id="wait_over", batch_id=submit_over.output, max_failed_fraction=0.2, deferrable=True, poke_interval=0.3
    )
    # 1 of 10 fails, 2 allowed: passes (reschedule mode); the failure is listed in the manifest
    under_prompts = [f"under {i}" + (FAIL if i == 4 else "") for i in range(10)]
    submit_under = XaiBatchGenerateImagesOperator(
        task_id="submit_under", prompts=under_prompts, output_uri=OUTPUT, wait_for_completion=False
    )
    wait_under = XaiBatchSensor(
        task_id="wait_under", batch_id=submit_under.output, max_failed_fraction=0.2, mode="reschedule", poke_interval=1
    )
    store_under = XaiStoreBatchResultsOperator(
        task_id="store_under", batch_id=submit_under.output, output_uri=OUTPUT, prompts=under_prompts
    )
    # xAI refuses the batch while the sensor pokes: no retry can help, though retries are allowed
    submit_refused = XaiBatchGenerateImagesOperator(
        task_id="submit_refused", prompts=["a", "b", "c"], output_uri=OUTPUT, wait_for_completion=False
    )
    wait_refused = XaiBatchSensor(
        task_id="wait_refused",
        batch_id=submit_refused.output,
        poke_interval=0.3,
        retries=3,
        retry_delay=timedelta(seconds=1),
    )

    submit_over >> wait_over
    submit_under >> wait_under >> store_under
    submit_refused >> wait_refused
"""


def test_sensor_fails_clearly_on_too_many_failures_and_a_refused_batch_and_passes_under_the_fraction(
    run_dag_test, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str, tmp_path: Path
) -> None:
    emulator.configure(batch_seconds=1.5)
    dag = write_dag(tmp_path, "xai_batch_sensor_failures", SENSOR_FAILURES_DAG, output_uri=output_uri)

    with BatchWatcher(emulator, "submit_refused", refuse) as watcher:
        result = run_dag_test(dag, env=dag_env(emulator), check=False)

    assert result.dag_run_state == "failed"
    result.assert_task_states(
        submit_over="success",
        wait_over="failed",
        submit_under="success",
        wait_under="success",
        store_under="success",
        submit_refused="success",
        wait_refused="failed",
    )
    over_id, under_id, refused_id = (result.xcom(f"submit_{name}") for name in ("over", "under", "refused"))
    # too many failures: the message says how many and what was allowed
    result.assert_in_output(
        f"{progress(over_id, 7, 3, 0, 10)}; 3 failed requests, over max_failed_fraction=0.2 (2 allowed)"
    )
    # refused by xAI: xAI's own message, and the task failed at its first try in spite of retries=3
    assert watcher.done == [refused_id]
    result.assert_in_output(
        f"batch {refused_id}: 0 succeeded, 0 failed, 3 cancelled, 0 pending of 3; xAI cancelled it: {REFUSED_MESSAGE}",
        "XaiBatchRefusedError cannot be fixed by a retry: failing the task without retrying.",
    )
    assert result.ti("wait_refused").try_number == 1
    # under the fraction: success, the final states as XCom, the failure listed in the manifest (the three
    # branches run in no fixed order, so this sensor may find its batch done at its first poke)
    [final] = result.xcom("wait_under")
    assert final["batch_id"] == under_id
    assert (final["state"]["num_success"], final["state"]["num_error"]) == (9, 1)
    result.assert_in_output(progress(under_id, 9, 1, 0, 10))
    uris = result.xcom("store_under")
    assert len(uris) == 9
    assert not any("/p00004-" in uri for uri in uris)
    manifest = s3_manifest(moto_s3, s3_bucket, result.xcom("store_under", key="manifest"))
    # a batch's first failure comes as an error object (the emulator's "mixed" shapes): xAI's code is kept
    assert manifest["errors"] == [{"prompt_index": 4, "prompt": "under 4[[fail]]", "error": EMULATED_FAILURE_CODED}]
    assert [image["uri"] for image in manifest["images"]] == uris
    prefix = f"images/{safe_segment(result.run_id)}/store_under/"
    assert len([key for key in moto_s3.keys(s3_bucket, prefix) if key.endswith(".jpg")]) == 9
    assert_key_nowhere(result, emulator)


# --------------------------------------------------------------------------- the operator waiting itself

OPERATOR_WAIT_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator

OUTPUT = "%(output_uri)s"
FAIL = "[[fail]]"


def generate(task_id, prompts, **kwargs):
    return XaiBatchGenerateImagesOperator(
        task_id=task_id, prompts=prompts, output_uri=OUTPUT, wait_for_completion=True, **kwargs
    )


with DAG(dag_id="xai_batch_operator_wait", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    generate("deferred", [f"deferred {i}" for i in range(4)], deferrable=True, poll_interval=0.3)
    generate(
        "deferred_over",
        [f"deferred over {i}" + (FAIL if i < 2 else "") for i in range(4)],
        deferrable=True,
        poll_interval=0.3,
        max_failed_fraction=0.25,
    )
    generate("deferred_expired", ["x", "y"], deferrable=True, poll_interval=0.3)
    generate(
        "polling_under",
        [f"polling under {i}" + (FAIL if i == 6 else "") for i in range(10)],
        deferrable=False,
        poll_interval=0.2,
        max_failed_fraction=0.2,
    )
    generate(
        "polling_over",
        [f"polling over {i}" + (FAIL if i %% 3 == 0 else "") for i in range(10)],
        deferrable=False,
        poll_interval=0.2,
        max_failed_fraction=0.2,
    )
"""


def test_batch_generate_operator_waits_deferred_or_polling_and_judges_failures(
    run_dag_test, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str, tmp_path: Path
) -> None:
    emulator.configure(batch_seconds=1.0)
    dag = write_dag(tmp_path, "xai_batch_operator_wait", OPERATOR_WAIT_DAG, output_uri=output_uri)

    with BatchWatcher(emulator, "deferred_expired", expire):
        result = run_dag_test(dag, env=dag_env(emulator), check=False)

    result.assert_task_states(
        deferred="success",
        deferred_over="failed",
        deferred_expired="failed",
        polling_under="success",
        polling_over="failed",
    )
    run = f"s3://aws_moto@{s3_bucket}/images/{safe_segment(result.run_id)}"
    # deferrable, all good: waited on the (inline) triggerer, then stored every image
    deferred_id = result.xcom("deferred", key="batch_id")
    fingerprint = batch_fingerprint([deferred_id])
    assert result.xcom("deferred") == [f"{run}/deferred/p{i:05d}-i00-{fingerprint}.jpg" for i in range(4)]
    assert batch_gets(emulator, deferred_id) >= 2
    manifest = s3_manifest(moto_s3, s3_bucket, result.xcom("deferred", key="manifest"))
    assert (manifest["totals"]["images"], manifest["errors"]) == (4, [])
    assert manifest["parameters"]["batch_id"] == deferred_id
    # polling, 1 of 10 failed with 2 allowed: the 9 images stored and returned, the failure in the manifest
    under_id = result.xcom("polling_under", key="batch_id")
    uris = result.xcom("polling_under")
    fingerprint = batch_fingerprint([under_id])
    assert uris == [f"{run}/polling_under/p{i:05d}-i00-{fingerprint}.jpg" for i in range(10) if i != 6]
    manifest = s3_manifest(moto_s3, s3_bucket, result.xcom("polling_under", key="manifest"))
    assert manifest["errors"] == [
        {"prompt_index": 6, "prompt": "polling under 6[[fail]]", "error": EMULATED_FAILURE_CODED}
    ]
    assert manifest["totals"]["failed_requests"] == 1
    assert manifest["parameters"]["max_failed_fraction"] == 0.2
    for uri in uris:
        assert moto_s3.get_bytes(s3_bucket, uri.split(f"{s3_bucket}/", 1)[1])[:3] == b"\xff\xd8\xff"
    # failures over the fraction, in both ways of waiting, and an expired batch: clear messages, nothing stored
    over_id = result.xcom("polling_over", key="batch_id")
    expired_id = result.xcom("deferred_expired", key="batch_id")
    result.assert_in_output(
        f"{progress(over_id, 6, 4, 0, 10)}; 4 failed requests, over max_failed_fraction=0.2 (2 allowed)",
        f"{progress(result.xcom('deferred_over', key='batch_id'), 2, 2, 0, 4)}; "
        "2 failed requests, over max_failed_fraction=0.25 (1 allowed)",
        f"batch {expired_id}: 0 succeeded, 0 failed, 2 cancelled, 0 pending of 2; xAI cancelled it: {EXPIRED_MESSAGE}",
    )
    assert result.ti("deferred_expired").try_number == 1
    for task in ("deferred_over", "deferred_expired", "polling_over"):
        assert moto_s3.keys(s3_bucket, f"images/{safe_segment(result.run_id)}/{task}/") == []
    assert result.output.count("[DAG TEST] running trigger in line") == 3
    assert_key_nowhere(result, emulator)


# --------------------------------------------------------------------------- retried tasks in one run

RECONNECT_STORE_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_xai_image.operators.batch import (
    XaiBatchGenerateImagesOperator,
    XaiStoreBatchResultsOperator,
)
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor

OUTPUT = "%(output_uri)s"
PROMPTS = [f"Poster {i}" + ("[[fail]]" if i in (12, 120) else "") for i in range(150)]
BATCH_ID = "{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}"

with DAG(dag_id="xai_batch_reconnect_store", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    submit = XaiBatchGenerateImagesOperator(
        task_id="submit", prompts=PROMPTS, output_uri=OUTPUT, response_format="url", wait_for_completion=False
    )
    wait = XaiBatchSensor(task_id="wait", batch_id=BATCH_ID, poke_interval=0.2, max_failed_fraction=0.05)
    store = XaiStoreBatchResultsOperator(task_id="store", batch_id=BATCH_ID, output_uri=OUTPUT, prompts=PROMPTS)
    submit >> wait >> store
"""


def test_rerun_submit_reconnects_and_rerun_store_downloads_nothing_new(
    dag_runner, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str, tmp_path: Path
) -> None:
    emulator.configure(batch_seconds=0.3)
    dag = write_dag(tmp_path, "xai_batch_reconnect_store", RECONNECT_STORE_DAG, output_uri=output_uri)
    env = dag_env(emulator)

    first = dag_runner.run(dag, env=env)

    first.assert_task_states(submit="success", wait="success", store="success")
    batch_id = first.xcom("submit")
    assert first.xcom("submit", key="batch_id") == batch_id
    assert first.state_store("submit") == {"xai_batch_ids": batch_id}
    assert batches_created(emulator) == 1
    assert emulator.stats()["files_uploaded"] == 1
    results_path = f"/v1/batches/{batch_id}/results"
    pages = calls(emulator, "GET", results_path)
    assert [page.query.split("&")[0] for page in pages] == ["limit=100", "limit=100"]  # 150 results: 100 + 50
    assert "pagination_token=" in pages[1].query
    assert len(image_downloads(emulator)) == 148
    assert emulator.images_billed == 148
    uris = first.xcom("store")
    assert len(uris) == 148
    manifest = s3_manifest(moto_s3, s3_bucket, first.xcom("store", key="manifest"))
    assert [e["prompt_index"] for e in manifest["errors"]] == [12, 120]
    assert all(e["error"].startswith("Image generation failed (emulated failure).") for e in manifest["errors"])
    assert (manifest["totals"]["requests"], manifest["totals"]["images"]) == (150, 148)
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks
    prefix = f"images/{safe_segment(first.run_id)}/store/"
    stored = [key for key in moto_s3.keys(s3_bucket, prefix) if key.endswith(".jpg")]
    assert len(stored) == 148
    assert all(re.fullmatch(rf"{prefix}p\d{{5}}-i00-{batch_fingerprint([batch_id])}\.jpg", key) for key in stored)
    first.assert_in_output("store the results within 1 hour of completion")  # the url format's warning

    # the submit task runs again in the same run (task_state_store kept): same batch, nothing re-sent
    listings, lookups = len(calls(emulator, "GET", "/v1/batches")), batch_gets(emulator, batch_id)
    again = dag_runner.run_task(first, "submit", env=env)
    assert again.run_id == first.run_id
    assert again.xcom("submit") == again.xcom("submit", key="batch_id") == batch_id
    assert batches_created(emulator) == 1
    assert emulator.stats()["files_uploaded"] == 1
    assert batch_gets(emulator, batch_id) == lookups + 1  # found by the stored id ...
    assert len(calls(emulator, "GET", "/v1/batches")) == listings  # ... without listing batches by name
    again.assert_in_output(f"Reconnecting to batch {batch_id}")

    # the store task runs again: every record is reused, no image is downloaded a second time
    rerun = dag_runner.run_task(first, "store", env=env)
    assert rerun.xcom("store") == uris
    assert len(image_downloads(emulator)) == 148
    assert len(calls(emulator, "GET", results_path)) == 4
    assert len([key for key in moto_s3.keys(s3_bucket, prefix) if key.endswith(".jpg")]) == 148
    assert emulator.images_billed == 148
    for result in (first, again, rerun):
        assert_key_nowhere(result, emulator)


# --------------------------------------------------------------------------- the example DAG


def test_example_batch_dag_runs_against_the_emulator_and_moto(
    run_dag_test, emulator: XaiEmulator, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=1.0)
    files = [EXAMPLE_DAGS / "xai_batch_images.py", EXAMPLE_DAGS / "xai_example_utils.py"]
    env = dag_env(
        emulator,
        XAI_EXAMPLE_OUTPUT_URI=moto_s3.url(s3_bucket, "examples/"),
        XAI_EXAMPLE_POLL_INTERVAL="0.5",
    )

    result = run_dag_test(files, env=env)

    shares = 4  # the example's SHARES: the store task mapped over them
    result.assert_task_states(
        submit="success",
        wait="success",
        **{f"store[{share}]": "success" for share in range(shares)},
        manifest="success",
        check_images="success",
    )
    assert result.xcom("check_images") == {"image/jpeg": 20}
    batch_id = result.xcom("submit", key="batch_id")
    fingerprint = batch_fingerprint([batch_id])
    run = safe_segment(result.run_id)
    # every image stored once, by the share its prompt index falls in
    images = [key for key in moto_s3.keys(s3_bucket, "examples/") if key.endswith(".jpg")]
    expected = [f"examples/{run}/store/map-{i % shares}/p{i:05d}-i00-{fingerprint}.jpg" for i in range(20)]
    assert sorted(images) == sorted(expected)
    for share in range(shares):
        share_manifest = s3_manifest(moto_s3, s3_bucket, result.xcom("store", key="manifest", map_index=share))
        assert [image["prompt_index"] for image in share_manifest["images"]] == list(range(share, 20, shares))
    [final] = result.xcom("wait")
    assert (final["batch_id"], final["state"]["num_success"]) == (batch_id, 20)
    # one manifest for the whole job, in prompt order, and the job's URIs as its XCom
    manifest = s3_manifest(moto_s3, s3_bucket, result.xcom("manifest", key="manifest"))
    assert result.xcom("manifest", key="manifest") == moto_s3.url(s3_bucket, f"examples/{run}/manifest/manifest.json")
    assert [image["uri"] for image in manifest["images"]] == [moto_s3.url(s3_bucket, key) for key in expected]
    assert result.xcom("manifest") == [image["uri"] for image in manifest["images"]]
    assert manifest["totals"]["images"] == 20
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks
    assert manifest["images"][0]["prompt"] == "Catalogue photo of item 1: a wooden toy, white background"
    # the job's Asset event comes from the manifest step only: nothing starts on a part of the job
    assert [(event.source_task_id, event.extra["images"]) for event in result.asset_events] == [("manifest", 20)]
    assert emulator.stats()["batches_created"] == 1
    assert emulator.images_billed == 20
    assert_key_nowhere(result, emulator)
