"""Nothing lost: whole images only, storage faults survived, a changed request generated anew, the
spool left clean. Operators run in-process against the emulator over HTTP, and moto S3 in server mode."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from faults_support import conn_json, context, generation_posts, images_in, manifest_of

from airflow_provider_xai_image.exceptions import (
    XaiError,
    XaiPermanentError,
    XaiPossiblyBilledError,
    XaiStorageConfigError,
)
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.storage.image_store import ImageStore
from airflow_provider_xai_image.storage.layout import task_output_path
from airflow_provider_xai_image.storage.spool import Spool
from airflow_provider_xai_image.testing import XaiEmulator


def generate(output_uri: str, prompt: Any = "a paper boat", **kwargs: Any) -> XaiGenerateImagesOperator:
    return XaiGenerateImagesOperator(task_id="generate", prompt=prompt, output_uri=output_uri, **kwargs)


# --------------------------------------------------------------------------- whole images only


@pytest.mark.parametrize(
    ("fault", "kwargs"),
    [
        ({"truncated_images_no_length": 2}, {}),  # a cut body without Content-Length, twice (first try + retry)
        ({"truncated_images": 2}, {}),  # a body cut short of its Content-Length
        ({"truncated_b64": 1}, {"response_format": "b64_json"}),  # half a JPEG, base64-encoded
    ],
)
def test_a_cut_image_is_never_published_and_the_task_reports_it(
    emulator: XaiEmulator, output_uri: str, out: Path, fault: dict[str, int], kwargs: dict[str, Any]
) -> None:
    emulator.configure(**fault)
    ctx = context()
    with pytest.raises(XaiError, match=r"1 of 2 prompt\(s\) lack images: prompt 0: 1 image\(s\) not stored") as raised:
        generate(output_uri, prompt=["a paper boat", "a tin boat"], max_concurrency=1, **kwargs).execute(ctx)
    assert not isinstance(raised.value, XaiPermanentError)  # Airflow retries it
    assert [path.name[:7] for path in images_in(out)] == ["p00001-"]
    # The retry asks only for the missing image, and it arrives whole.
    uris = generate(output_uri, prompt=["a paper boat", "a tin boat"], **kwargs).execute(context())
    assert len(uris) == 2
    assert generation_posts(emulator) == 3
    assert all(path.read_bytes().endswith(b"\xff\xd9") for path in images_in(out))


def test_a_cut_image_whose_url_still_answers_is_downloaded_again(emulator: XaiEmulator, output_uri: str) -> None:
    emulator.configure(truncated_images_no_length=1)
    assert len(generate(output_uri).execute(context())) == 1
    assert emulator.images_billed == 1


# --------------------------------------------------------------------------- storage before money


def test_an_unknown_storage_connection_fails_before_any_request(emulator: XaiEmulator) -> None:
    with pytest.raises(AirflowFailException, match="aws_nope") as raised:
        generate("s3://aws_nope@some-bucket/images/").execute(context())
    assert isinstance(raised.value.__cause__, XaiStorageConfigError)
    assert emulator.requests_log == []


def test_a_missing_bucket_fails_before_any_request(emulator: XaiEmulator, moto_s3: Any) -> None:
    with pytest.raises(AirflowFailException, match="output_uri: cannot write to") as raised:
        generate(moto_s3.url("no-such-bucket-4c1d", "images/")).execute(context())
    assert isinstance(raised.value.__cause__, XaiStorageConfigError)
    assert emulator.requests_log == []


def test_the_probe_leaves_nothing_behind(emulator: XaiEmulator, moto_s3: Any, s3_bucket: str) -> None:
    generate(moto_s3.url(s3_bucket, "out/")).execute(context())
    keys = moto_s3.keys(s3_bucket)
    assert not [key for key in keys if ".probe-" in key]
    assert sum(key.endswith(".jpg") for key in keys) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_s3_outage_mid_run_loses_no_billed_image(
    emulator: XaiEmulator, moto_s3: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    conn = json.loads(moto_s3.conn_json)
    conn["extra"]["endpoint_url"] = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_FLAKY", json.dumps(conn))
    emulator.configure(latency=0.4)
    prompts = [f"boat {index}" for index in range(8)]

    def outage() -> None:
        while generation_posts(emulator) < 2:
            time.sleep(0.05)
        server.stop()
        time.sleep(10)
        server.start()

    breaker = threading.Thread(target=outage)
    breaker.start()
    try:
        uris = generate(f"s3://aws_flaky@{s3_bucket}/outage/", prompt=prompts, max_concurrency=2).execute(context())
    finally:
        breaker.join()
        server.stop()
    assert len(uris) == 8
    assert emulator.images_billed == 8
    stored = [key for key in moto_s3.keys(s3_bucket, "outage/") if key.endswith(".jpg")]
    assert len(stored) == 8


# --------------------------------------------------------------------------- resume matches what was asked


def test_a_changed_prompt_after_a_clear_is_generated_anew(emulator: XaiEmulator, output_uri: str) -> None:
    first = generate(output_uri, prompt=["a paper boat", "a tin boat"]).execute(context())
    ctx = context()
    second = generate(output_uri, prompt=["a paper boat", "a glass boat"]).execute(ctx)
    assert second[0] == first[0]
    assert second[1] != first[1]
    assert generation_posts(emulator) == 3
    manifest = manifest_of(ctx)
    assert [image["prompt"] for image in manifest["images"]] == ["a paper boat", "a glass boat"]
    assert manifest["superseded"] == [{"prompt_index": 1, "fingerprint": first[1][-16:-4], "uris": [first[1]]}]
    assert Path(first[1].removeprefix("file://")).exists()  # the old image is kept


def test_a_changed_parameter_is_generated_anew(emulator: XaiEmulator, output_uri: str) -> None:
    generate(output_uri, aspect_ratio="1:1").execute(context())
    generate(output_uri, aspect_ratio="16:9").execute(context())
    assert generation_posts(emulator) == 2


# --------------------------------------------------------------------------- possibly billed


def test_a_possibly_billed_request_counts_in_the_manifest_and_the_budget(
    emulator: XaiEmulator, output_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(emulator, timeout=0.3, max_ambiguous_retries=1))
    emulator.configure(generation_latency=0.6)
    with pytest.raises(XaiPossiblyBilledError, match="may have been billed"):
        generate(output_uri, prompt=["a paper boat", "a tin boat"], max_concurrency=1).execute(context())
    emulator.configure(generation_latency=0.0)
    # The budget counts it as spent: $0.10 possibly billed + $0.10 more is over $0.15.
    with pytest.raises(AirflowFailException, match="max_cost_usd"):
        generate(output_uri, prompt=["a paper boat", "a tin boat"], max_cost_usd=0.15).execute(context())
    ctx = context()
    generate(output_uri, prompt=["a paper boat", "a tin boat"]).execute(ctx)
    time.sleep(0.7)
    totals = manifest_of(ctx)["totals"]
    assert totals["possibly_billed_usd"] == pytest.approx(2 * 0.05)  # two attempts of one request, $0.05 each
    assert emulator.images_billed <= 2 + 2


def test_a_success_after_a_possibly_billed_send_records_that_send(
    emulator: XaiEmulator, output_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(emulator, max_ambiguous_retries=1))
    emulator.configure(generation_status_script=[500])  # xAI may have run the first send: it answered 500
    ctx = context()
    [uri] = generate(output_uri, prompt="a paper boat").execute(ctx)
    assert generation_posts(emulator) == 2
    manifest = manifest_of(ctx)
    assert [image["uri"] for image in manifest["images"]] == [uri]
    totals = manifest["totals"]
    assert totals["cost_usd"] == pytest.approx(0.05)  # what xAI reported for the send that answered
    assert totals["possibly_billed_usd"] == pytest.approx(0.05)  # and the send before it, at the estimate
    # a budget that the possibly billed send passes stops the next task before it sends anything
    with pytest.raises(AirflowFailException, match="max_cost_usd"):
        generate(output_uri, prompt=["a paper boat", "a tin boat"], max_cost_usd=0.12).execute(context())
    assert generation_posts(emulator) == 2


# --------------------------------------------------------------------------- the spool


def spool_of(output_uri: str, run_id: str = "manual__faults") -> Spool:
    folder = task_output_path(output_uri, run_id, "generate", -1)
    return ImageStore(folder, hook=None).spool_folder  # type: ignore[arg-type]


def test_a_normal_run_leaves_no_spool(emulator: XaiEmulator, output_uri: str) -> None:
    generate(output_uri, prompt=["a", "b"]).execute(context())
    assert not os.path.exists(spool_of(output_uri).path)


def test_a_later_try_publishes_what_a_killed_try_left_in_the_spool(emulator: XaiEmulator, output_uri: str) -> None:
    first = generate(output_uri).execute(context())
    image = Path(first[0].removeprefix("file://"))
    spool = Path(spool_of(output_uri).make())
    (spool / image.name).write_bytes(image.read_bytes())  # billed, spooled, upload never finished
    (spool / "p00000-i01-000000000000.part").write_bytes(b"\xff\xd8\xff half")  # a download cut by the kill
    image.unlink()
    for record in (image.parent / "_records").iterdir():
        record.unlink()
    assert generate(output_uri).execute(context()) == first
    assert generation_posts(emulator) == 1
    assert image.exists()
    assert not spool.exists()
