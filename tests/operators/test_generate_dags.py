"""XaiGenerateImagesOperator through the real path: ``airflow dags test`` against the emulator,
storing to moto S3 (``s3://aws_moto@<bucket>/...``) and to ``file://``.

Three DAGs, run once each (module-scoped fixtures) and checked by several tests:

* ``xai_ops_main``: templating, edits from upstream paths, ``expand`` / ``expand_kwargs``, moderation "skip";
* ``xai_ops_failures``: a retry that resumes, a budget stop resumed by ``airflow tasks test``, a refused
  budget, moderation "fail" (no retries) and a truncated download; every task has its own emulator
  (connection), so each emulator's log and bill belong to one task;
* ``xai_ops_deferrable``: generation and an edit on the (inline) triggerer, stored to S3.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from operators_support import (
    IMAGE_NAME,
    JPEG_MAGIC,
    RECORDS_NAME,
    SIZES_1K,
    check_manifest,
    conn_env,
    fingerprint_of,
    image_requests,
    write_dag,
)
from support.images import jpeg_file, pixel_size

from airflow_provider_xai_image.testing import XaiEmulator

pytestmark = pytest.mark.dag

LOGICAL_DATE = "2025-03-04T00:00:00+00:00"

MAIN_DAG = """
from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

S3_OUTPUT = f"s3://aws_moto@{os.environ['XAI_TEST_BUCKET']}/out/"
LOCAL_OUTPUT = "file://{{ params.local_dir }}/local/"

with DAG(
    dag_id="xai_ops_main",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"subject": "a red fox", "n": "2", "local_dir": os.environ["XAI_TEST_LOCAL_DIR"]},
):
    generate = XaiGenerateImagesOperator(
        task_id="generate",
        prompt="{{ params.subject }} at {{ ds }}",
        output_uri=S3_OUTPUT,
        n="{{ params.n }}",
        aspect_ratio="16:9",
        resolution="1k",
    )
    edit_all = XaiGenerateImagesOperator(
        task_id="edit_all",
        prompt="Both pictures as one watercolour",
        output_uri=S3_OUTPUT,
        source_images=generate.output,
    )
    edit_one = XaiGenerateImagesOperator(
        task_id="edit_one",
        prompt="The first picture as a pencil sketch",
        output_uri=S3_OUTPUT,
        source_images="{{ ti.xcom_pull(task_ids='generate')[0] }}",
    )
    generate >> edit_one
    XaiGenerateImagesOperator.partial(task_id="by_prompt", output_uri=LOCAL_OUTPUT, aspect_ratio="4:3").expand(
        prompt=["A lighthouse at dusk", "A lighthouse at dawn", "A lighthouse in fog"]
    )
    XaiGenerateImagesOperator.partial(task_id="by_kwargs", output_uri=LOCAL_OUTPUT).expand_kwargs(
        [
            {"prompt": "A banner of mountain peaks", "aspect_ratio": "2:1"},
            {"prompt": "A phone wallpaper of a forest", "aspect_ratio": "1:2", "n": 2},
        ]
    )
    XaiGenerateImagesOperator(
        task_id="moderated",
        prompt=["A calm lake", "Something [[moderate]]"],
        n=2,
        output_uri=LOCAL_OUTPUT,
        on_moderation="skip",
    )
"""

FAILURES_DAG = """
from __future__ import annotations

import os
from datetime import datetime, timedelta

from functools import cached_property

from airflow.sdk import DAG

from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

LOCAL = os.environ["XAI_TEST_LOCAL_DIR"]
S3_OUTPUT = f"s3://aws_moto@{os.environ['XAI_TEST_BUCKET']}/resume/"
SOURCE = os.environ["XAI_TEST_SOURCE"]
BUDGET = float(os.environ.get("XAI_TEST_BUDGET", "0.24"))


# xAI lists $0.02 per image here but bills $0.05 (prices change): estimates fit, actual costs do not.
class ListedPriceHook(XaiHook):
    def price_per_image_usd_ticks(self, request):
        return 200_000_000


class UnderestimatingOperator(XaiGenerateImagesOperator):
    @cached_property
    def hook(self):
        return ListedPriceHook(xai_conn_id=self.xai_conn_id)


with DAG(dag_id="xai_ops_failures", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
    XaiGenerateImagesOperator(
        task_id="retried",
        xai_conn_id="xai_retry",
        prompt=["alpha", "beta", "gamma"],
        output_uri=f"s3://aws_moto@{os.environ['XAI_TEST_BUCKET']}/retried/",
        max_concurrency=3,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    UnderestimatingOperator(
        task_id="budget_stop",
        xai_conn_id="xai_budget",
        prompt=[f"Edit number {index}" for index in range(5)],
        source_images=SOURCE,
        output_uri=S3_OUTPUT,
        max_concurrency=1,
        max_cost_usd=BUDGET,
    )
    XaiGenerateImagesOperator(
        task_id="budget_refused",
        xai_conn_id="xai_refuse",
        prompt=["one", "two"],
        n=2,
        output_uri=f"file://{LOCAL}/refused/",
        max_cost_usd=0.05,
    )
    XaiGenerateImagesOperator(
        task_id="moderation_fail",
        xai_conn_id="xai_moderation",
        prompt=["A fine picture", "A bad picture [[moderate]]", "Another fine picture"],
        output_uri=f"file://{LOCAL}/moderation/",
        on_moderation="fail",
    )
    XaiGenerateImagesOperator(
        task_id="truncated",
        xai_conn_id="xai_truncated",
        prompt="A picture cut short",
        output_uri=f"file://{LOCAL}/truncated/",
    )
"""

DEFERRABLE_DAG = """
from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

S3_OUTPUT = f"s3://aws_moto@{os.environ['XAI_TEST_BUCKET']}/deferred/"

with DAG(dag_id="xai_ops_deferrable", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
    XaiGenerateImagesOperator(
        task_id="generate",
        prompt=[f"Thumbnail for article {number}" for number in range(3)],
        n=2,
        aspect_ratio="3:2",
        output_uri=S3_OUTPUT,
        max_concurrency=3,
        deferrable=True,
    )
    XaiGenerateImagesOperator(
        task_id="edit",
        prompt="Add a red border",
        source_images=os.environ["XAI_TEST_SOURCE"],
        output_uri=S3_OUTPUT,
        deferrable=True,
    )
"""


def make_reader(moto_s3: Any) -> Callable[[str], bytes]:
    """``read(uri) -> bytes`` for ``s3://aws_moto@bucket/key`` (through boto3) and ``file://`` URIs."""

    def read(uri: str) -> bytes:
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            assert parts.netloc.startswith("aws_moto@"), uri
            return moto_s3.get_bytes(parts.netloc.rpartition("@")[2], parts.path.lstrip("/"))
        assert parts.scheme == "file", uri
        return Path(parts.path).read_bytes()

    return read


def s3_key(uri: str) -> str:
    return urlsplit(uri).path.lstrip("/")


def assert_key_nowhere(result: Any, *keys: str) -> None:
    """No API key in the task log output, the XComs or the task instances' next_kwargs."""
    stored = json.dumps({str(key): value for key, value in result.xcoms.items()})
    stored += json.dumps([ti.next_kwargs for ti in result.task_instances], default=str)
    for key in keys:
        assert key not in result.output
        assert key not in stored


# --------------------------------------------------------------------------- xai_ops_main


@pytest.fixture(scope="module")
def main_run(dag_runner: Any, moto_s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    bucket = moto_s3.create_bucket("main")
    local_dir = tmp_path_factory.mktemp("main-local")
    with XaiEmulator(retry_after=0) as emulator:
        dag_file = write_dag(tmp_path_factory.mktemp("dags"), "xai_ops_main", MAIN_DAG)
        result = dag_runner.run(
            dag_file,
            env={
                **conn_env("xai_default", emulator),
                "XAI_TEST_BUCKET": bucket,
                "XAI_TEST_LOCAL_DIR": str(local_dir),
            },
            conf={"subject": "a blue heron"},
            logical_date=LOGICAL_DATE,
            check=False,
        )
        yield SimpleNamespace(
            result=result, emulator=emulator, bucket=bucket, local_dir=local_dir, read=make_reader(moto_s3)
        )


def test_main_dag_succeeds(main_run: SimpleNamespace) -> None:
    result = main_run.result
    result.assert_success()
    assert result.task_states == {
        "generate": "success",
        "edit_all": "success",
        "edit_one": "success",
        "by_prompt[0]": "success",
        "by_prompt[1]": "success",
        "by_prompt[2]": "success",
        "by_kwargs[0]": "success",
        "by_kwargs[1]": "success",
        "moderated": "success",
    }
    assert_key_nowhere(result, main_run.emulator.api_key)


def test_templated_prompt_and_n_are_rendered(main_run: SimpleNamespace, moto_s3: Any) -> None:
    result, emulator, read = main_run.result, main_run.emulator, main_run.read
    prompt = "a blue heron at 2025-03-04"  # dag run conf overrides params.subject; ds is the logical date
    [sent] = [r for r in image_requests(emulator) if r.json["prompt"] == prompt]
    assert sent.path == "/v1/images/generations"
    assert sent.json["n"] == 2  # "{{ params.n }}" rendered to "2", sent as the integer 2
    assert sent.json["aspect_ratio"] == "16:9"

    uris = result.xcom("generate")
    assert isinstance(uris, list)
    assert len(uris) == 2
    assert all(isinstance(uri, str) and uri.startswith(f"s3://aws_moto@{main_run.bucket}/out/") for uri in uris)
    for uri in uris:
        data = read(uri)
        assert data[:3] == JPEG_MAGIC
        assert pixel_size(data) == SIZES_1K["16:9"]
        assert "heron" not in uri  # names carry no prompt text
        assert IMAGE_NAME.match(uri.rsplit("/", 1)[-1])

    manifest_uri = result.xcom("generate", key="manifest")
    assert manifest_uri == uris[0].rsplit("/", 1)[0] + "/manifest.json"
    manifest = json.loads(read(manifest_uri))
    check_manifest(manifest, read, api_key=emulator.api_key)
    assert [image["uri"] for image in manifest["images"]] == uris
    assert {image["prompt"] for image in manifest["images"]} == {prompt}
    assert manifest["parameters"]["output_uri"] == f"s3://aws_moto@{main_run.bucket}/out/"

    keys = moto_s3.keys(main_run.bucket, s3_key(manifest_uri).rsplit("/", 1)[0])
    fingerprint = fingerprint_of(uris[0])
    assert [key.rsplit("/", 1)[-1] for key in keys if "/_records/" not in key] == [
        "manifest.json",
        f"p00000-i00-{fingerprint}.jpg",
        f"p00000-i01-{fingerprint}.jpg",
    ]
    records = [key.rsplit("/", 1)[-1] for key in keys if "/_records/" in key]
    assert records
    assert all(RECORDS_NAME.match(name) for name in records), records  # the storage probe left nothing


def test_templated_n_is_recorded_in_the_manifest_as_the_int_sent(main_run: SimpleNamespace) -> None:
    """The manifest's parameters say what was requested: n=2 (int), not the template's rendered string "2".

    Fails: XaiImageRequestOperator.parameters() records ``self.n`` as rendered ("2"), while the request
    sent the validated int.
    """
    manifest = json.loads(main_run.read(main_run.result.xcom("generate", key="manifest")))
    assert manifest["parameters"]["n"] == 2
    assert isinstance(manifest["parameters"]["n"], int)


def test_asset_event_records_image_count_and_manifest(main_run: SimpleNamespace) -> None:
    """Every task that stored images records one event on its output location (templated and mapped too)."""
    result = main_run.result
    events = {(event.source_task_id, event.source_map_index): event for event in result.asset_events}
    local = f"file://{main_run.local_dir}/local/"
    expected = {
        ("generate", -1): (f"s3://{main_run.bucket}/out", 2),
        ("edit_all", -1): (f"s3://{main_run.bucket}/out", 1),
        ("edit_one", -1): (f"s3://{main_run.bucket}/out", 1),
        **{("by_prompt", index): (local, 1) for index in range(3)},
        ("by_kwargs", 0): (local, 1),
        ("by_kwargs", 1): (local, 2),
        ("moderated", -1): (local, 2),  # 2 stored, 2 filtered
    }
    assert set(events) == set(expected)
    for (task_id, map_index), (uri, images) in expected.items():
        event = events[(task_id, map_index)]
        assert event.asset_uri.rstrip("/") == uri.rstrip("/")
        manifest = result.xcom(task_id, key="manifest", map_index=map_index)
        assert event.extra == {"images": images, "manifest": manifest}


def test_edits_take_upstream_paths_as_data_uris(main_run: SimpleNamespace) -> None:
    result, emulator, read = main_run.result, main_run.emulator, main_run.read
    edits = [r for r in image_requests(emulator) if r.path == "/v1/images/edits"]
    assert len(edits) == 2
    by_prompt = {r.json["prompt"]: r.json for r in edits}
    generated = [read(uri) for uri in result.xcom("generate")]

    both = by_prompt["Both pictures as one watercolour"]  # source_images=generate.output: two sources
    assert "image" not in both
    assert [source["url"].split(",", 1)[0] for source in both["images"]] == ["data:image/jpeg;base64"] * 2
    assert [source["url"] for source in both["images"]] == [
        "data:image/jpeg;base64," + base64.b64encode(data).decode() for data in generated
    ]

    one = by_prompt["The first picture as a pencil sketch"]  # one templated upstream URI
    assert "images" not in one
    assert one["image"]["url"].startswith("data:image/jpeg;base64,")

    for task_id, expected_size in (("edit_all", SIZES_1K["1:1"]), ("edit_one", SIZES_1K["16:9"])):
        [uri] = result.xcom(task_id)
        assert pixel_size(read(uri)) == expected_size  # one source sets the proportions
        manifest = json.loads(read(result.xcom(task_id, key="manifest")))
        check_manifest(manifest, read, api_key=emulator.api_key)
        assert manifest["parameters"]["source_images"] == (
            result.xcom("generate") if task_id == "edit_all" else result.xcom("generate")[:1]
        )


def test_every_map_index_gets_its_own_folder(main_run: SimpleNamespace) -> None:
    result, read = main_run.result, main_run.read
    expected_sizes = {
        ("by_prompt", 0): [SIZES_1K["4:3"]],
        ("by_prompt", 1): [SIZES_1K["4:3"]],
        ("by_prompt", 2): [SIZES_1K["4:3"]],
        ("by_kwargs", 0): [SIZES_1K["2:1"]],
        ("by_kwargs", 1): [SIZES_1K["1:2"]] * 2,
    }
    all_uris: list[str] = []
    for (task_id, map_index), sizes in expected_sizes.items():
        uris = result.xcom(task_id, map_index=map_index)
        manifest_uri = result.xcom(task_id, key="manifest", map_index=map_index)
        folder = f"file://{main_run.local_dir}/local/"
        assert manifest_uri.startswith(folder)  # the templated output_uri was rendered
        assert manifest_uri.endswith(f"/{task_id}/map-{map_index}/manifest.json")
        assert all(uri.startswith(manifest_uri.rsplit("/", 1)[0] + "/") for uri in uris)
        assert [pixel_size(read(uri)) for uri in uris] == sizes
        manifest = json.loads(read(manifest_uri))
        check_manifest(manifest, read, api_key=main_run.emulator.api_key)
        assert [image["uri"] for image in manifest["images"]] == uris
        all_uris += uris
    assert len(all_uris) == len(set(all_uris)) == 6
    prompts = {
        json.loads(read(result.xcom("by_prompt", key="manifest", map_index=i)))["images"][0]["prompt"] for i in range(3)
    }
    assert prompts == {"A lighthouse at dusk", "A lighthouse at dawn", "A lighthouse in fog"}
    jpgs = sorted(str(path.relative_to(main_run.local_dir)) for path in main_run.local_dir.rglob("*.jpg"))
    assert len([path for path in jpgs if "/by_" in path]) == 6


def test_moderation_skip_records_filtered_images(main_run: SimpleNamespace) -> None:
    result, read = main_run.result, main_run.read
    uris = result.xcom("moderated")
    assert len(uris) == 2
    manifest = json.loads(read(result.xcom("moderated", key="manifest")))
    check_manifest(manifest, read, api_key=main_run.emulator.api_key)
    assert [(i["prompt_index"], i["image_index"], i["moderation"], i["uri"] is None) for i in manifest["images"]] == [
        (0, 0, "passed", False),
        (0, 1, "passed", False),
        (1, 0, "filtered", True),
        (1, 1, "filtered", True),
    ]
    assert (manifest["totals"]["images"], manifest["totals"]["filtered"]) == (2, 2)


def test_main_dag_billed_each_image_once(main_run: SimpleNamespace) -> None:
    # generate 2 + edit_all 1 + edit_one 1 + by_prompt 3 + by_kwargs 3 + moderated 2 (2 filtered: free)
    assert main_run.emulator.images_billed == 12
    assert all(r.status == 200 for r in main_run.emulator.requests_log)


# --------------------------------------------------------------------------- xai_ops_failures


@pytest.fixture(scope="module")
def failures_run(dag_runner: Any, moto_s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    bucket = moto_s3.create_bucket("failures")
    local_dir = tmp_path_factory.mktemp("failures-local")
    source = jpeg_file(local_dir / "sources" / "photo.jpg")
    with ExitStack() as stack:
        emulators = {
            name: stack.enter_context(XaiEmulator(retry_after=0, **faults))
            for name, faults in {
                "retry": {"empty_responses": 1},  # the first request of the first try gets no image
                "budget": {},
                "refuse": {},
                "moderation": {},
                "truncated": {"truncated_images": 2},  # the download and its one retry
            }.items()
        }
        env = {"XAI_TEST_BUCKET": bucket, "XAI_TEST_LOCAL_DIR": str(local_dir), "XAI_TEST_SOURCE": f"file://{source}"}
        for name, emulator in emulators.items():
            env.update(conn_env(f"xai_{name}", emulator))
        dag_file = write_dag(tmp_path_factory.mktemp("dags"), "xai_ops_failures", FAILURES_DAG)
        result = dag_runner.run(dag_file, env=env, logical_date=LOGICAL_DATE, check=False)
        yield SimpleNamespace(
            result=result,
            emulators=emulators,
            env=env,
            bucket=bucket,
            local_dir=local_dir,
            read=make_reader(moto_s3),
        )


def test_failures_dag_task_states(failures_run: SimpleNamespace) -> None:
    result = failures_run.result
    assert result.returncode == 1
    assert result.dag_run_state == "failed"
    assert result.task_states == {
        "retried": "success",
        "budget_stop": "failed",
        "budget_refused": "failed",
        "moderation_fail": "failed",
        "truncated": "failed",
    }, result.describe()
    assert_key_nowhere(result, *(emulator.api_key for emulator in failures_run.emulators.values()))


def test_retry_reuses_stored_images_and_pays_only_the_rest(failures_run: SimpleNamespace) -> None:
    result, emulator, read = failures_run.result, failures_run.emulators["retry"], failures_run.read
    assert result.ti("retried").try_number == 2
    result.assert_in_output("prompt(s) lack images", "xAI returned no image and no block reason")
    sent = image_requests(emulator)
    assert [r.status for r in sent] == [200] * 4
    assert sorted(r.json["prompt"] for r in sent[:3]) == ["alpha", "beta", "gamma"]
    [retried] = [r.json["prompt"] for r in sent[3:]]  # the second try only sent the prompt left without an image
    assert retried in ("alpha", "beta", "gamma")
    assert emulator.images_billed == 3  # == the number of images: nothing paid twice
    result.assert_in_output("Reusing the images of 2 of 3 prompts")

    uris = result.xcom("retried")
    manifest = json.loads(read(result.xcom("retried", key="manifest")))
    check_manifest(manifest, read, api_key=emulator.api_key)
    assert [image["uri"] for image in manifest["images"]] == uris
    assert [image["prompt"] for image in manifest["images"]] == ["alpha", "beta", "gamma"]
    assert manifest["totals"]["images"] == 3
    assert manifest["errors"] == []  # the empty answer was made good by the retry


def test_budget_stop_then_rerun_resumes_without_double_billing(
    failures_run: SimpleNamespace, dag_runner: Any, moto_s3: Any
) -> None:
    first, emulator, read = failures_run.result, failures_run.emulators["budget"], failures_run.read
    # $0.04 estimated per edit (image and source at the listed $0.02), $0.052 billed: after 4 ($0.208)
    # the 5th could pass $0.24. The estimate of all 5 ($0.20) fitted, so the task started.
    first.assert_in_output(
        "XaiBudgetExceededError: Stopping: $0.2080 spent, and the next request could pass max_cost_usd=$0.2400"
    )
    assert emulator.images_billed == 4
    keys = moto_s3.keys(failures_run.bucket, "resume/")
    assert len([key for key in keys if key.endswith(".jpg")]) == 4
    assert not any(key.endswith("manifest.json") for key in keys)

    again = dag_runner.run_task(first, "budget_stop", env={**failures_run.env, "XAI_TEST_BUDGET": "1.0"}, check=False)

    assert again.task_states["budget_stop"] == "success", again.describe()
    assert emulator.images_billed == 5  # == the number of images
    edits = [r for r in image_requests(emulator) if r.path == "/v1/images/edits"]
    assert [r.json["prompt"] for r in edits] == [f"Edit number {index}" for index in range(5)]
    assert all(r.json["image"]["url"].startswith("data:image/jpeg;base64,") for r in edits)
    again.assert_in_output("Reusing the images of 4 of 5 prompts")

    uris = again.xcom("budget_stop")
    assert len(uris) == len(set(uris)) == 5
    manifest = json.loads(read(again.xcom("budget_stop", key="manifest")))
    check_manifest(manifest, read, api_key=emulator.api_key)
    assert [image["uri"] for image in manifest["images"]] == uris
    assert [image["prompt_index"] for image in manifest["images"]] == [0, 1, 2, 3, 4]
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks
    assert_key_nowhere(again, emulator.api_key)


def test_budget_below_estimate_refused_before_any_image_request(failures_run: SimpleNamespace) -> None:
    emulator = failures_run.emulators["refuse"]
    failures_run.result.assert_in_output(
        "XaiBudgetExceededError: Estimated cost $0.2000", "max_cost_usd=$0.0500; no request was sent"
    )
    assert [r.path for r in emulator.requests_log] == ["/v1/api-key", "/v1/image-generation-models"]
    assert image_requests(emulator) == []
    assert emulator.images_billed == 0


def test_moderation_fail_names_the_prompt_index(failures_run: SimpleNamespace) -> None:
    emulator = failures_run.emulators["moderation"]
    failures_run.result.assert_in_output("XaiContentFilteredError", "prompt index(es) [1]")
    assert failures_run.result.ti("moderation_fail").try_number == 1
    assert len(image_requests(emulator)) == 3
    assert not list((failures_run.local_dir / "moderation").rglob("manifest.json"))


def test_truncated_download_leaves_no_partial_file(failures_run: SimpleNamespace) -> None:
    emulator = failures_run.emulators["truncated"]
    failures_run.result.assert_in_output("1 of 1 prompt(s) lack images: prompt 0: 1 image(s) not stored")
    assert emulator.config.truncated_images == 0  # both truncated downloads were consumed
    assert emulator.images_billed == 1
    folder = failures_run.local_dir / "truncated"
    files = sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())
    # no p*.jpg, no .partial-* left, no manifest: only the record of the failed image
    assert [path.parent.name for path in files] == ["_records"]
    [record] = json.loads(folder.joinpath(files[0]).read_text())
    assert [(image["uri"], bool(image["error"])) for image in record["images"]] == [(None, True)]
    assert not list(failures_run.local_dir.rglob("*.partial-*"))


# --------------------------------------------------------------------------- xai_ops_deferrable


@pytest.fixture(scope="module")
def deferrable_run(
    dag_runner: Any, moto_s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    bucket = moto_s3.create_bucket("deferred")
    source = jpeg_file(tmp_path_factory.mktemp("deferred-source") / "photo.jpg", size=(96, 64))
    with XaiEmulator(retry_after=0) as emulator:
        dag_file = write_dag(tmp_path_factory.mktemp("dags"), "xai_ops_deferrable", DEFERRABLE_DAG)
        env = {**conn_env("xai_default", emulator), "XAI_TEST_BUCKET": bucket, "XAI_TEST_SOURCE": f"file://{source}"}
        result = dag_runner.run(dag_file, env=env, logical_date=LOGICAL_DATE, check=False)
        yield SimpleNamespace(result=result, emulator=emulator, bucket=bucket, read=make_reader(moto_s3))


def test_deferrable_dag_stores_to_s3_from_the_trigger(deferrable_run: SimpleNamespace, moto_s3: Any) -> None:
    result, emulator, read = deferrable_run.result, deferrable_run.emulator, deferrable_run.read
    result.assert_success()
    assert result.task_states == {"generate": "success", "edit": "success"}
    assert result.output.count("[DAG TEST] running trigger in line") == 2
    result.assert_in_output("Deferring 3 request(s) to the triggerer", "Deferring 1 request(s) to the triggerer")
    assert_key_nowhere(result, emulator.api_key)

    for task_id, count, size in (("generate", 6, SIZES_1K["3:2"]), ("edit", 1, SIZES_1K["3:2"])):
        uris = result.xcom(task_id)
        assert len(uris) == count
        for uri in uris:
            assert uri.startswith(f"s3://aws_moto@{deferrable_run.bucket}/deferred/")
            assert pixel_size(read(uri)) == size
        # the manifest is written on the worker by execute_complete, from the trigger's records
        manifest_uri = result.xcom(task_id, key="manifest")
        manifest = json.loads(read(manifest_uri))
        check_manifest(manifest, read, api_key=emulator.api_key)
        assert [image["uri"] for image in manifest["images"]] == uris
        keys = moto_s3.keys(deferrable_run.bucket, s3_key(manifest_uri).rsplit("/", 1)[0] + "/")
        assert len([key for key in keys if "/_records/" in key]) == 1  # a few quick requests: one object

    events = {event.source_task_id: event.extra for event in result.asset_events}
    assert events == {
        task_id: {"images": count, "manifest": result.xcom(task_id, key="manifest")}
        for task_id, count in (("generate", 6), ("edit", 1))
    }
    [edit] = [r for r in image_requests(emulator) if r.path == "/v1/images/edits"]
    assert edit.json["image"]["url"].startswith("data:image/jpeg;base64,")
    assert emulator.images_billed == 7
