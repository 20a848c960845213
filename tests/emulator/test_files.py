"""``POST /v1/files`` on the emulator: multipart parts read in order, and the file object it answers."""

from __future__ import annotations

import time

import pytest
import requests
from emulator_support import call, multipart, upload

from airflow_provider_xai_image.testing import XaiEmulator

FILE_OBJECT_KEYS = {"id", "object", "bytes", "created_at", "expires_at", "filename", "purpose"}


def post_multipart(emulator: XaiEmulator, *parts: tuple[str, str | None, bytes]) -> requests.Response:
    body, content_type = multipart(*parts)
    headers = {"Authorization": f"Bearer {emulator.api_key}", "Content-Type": content_type}
    return requests.post(f"{emulator.base_url}/files", data=body, headers=headers, timeout=10)


def test_upload_answers_an_openai_style_file_object(xai_emulator: XaiEmulator) -> None:
    before = int(time.time())
    response = upload(xai_emulator, b'{"a": 1}\n', purpose="batch", expires_after="3600")
    file = response.json()

    assert response.status_code == 200
    assert set(file) == FILE_OBJECT_KEYS
    assert file["id"].startswith("file_")
    assert file["object"] == "file"
    assert file["bytes"] == 9
    assert file["filename"] == "batch.jsonl"
    assert file["purpose"] == "batch"
    assert before <= file["created_at"] <= time.time()
    assert file["expires_at"] == file["created_at"] + 3600
    assert xai_emulator.stats()["files_uploaded"] == 1


def test_fields_are_optional(xai_emulator: XaiEmulator) -> None:
    file = post_multipart(xai_emulator, ("file", "input.jsonl", b"x")).json()

    assert file["purpose"] == "batch"
    assert file["expires_at"] is None
    assert file["filename"] == "input.jsonl"


@pytest.mark.parametrize(
    ("parts", "mentions"),
    [
        ((("file", "b.jsonl", b"x"), ("purpose", None, b"batch")), "purpose"),
        ((("purpose", None, b"batch"), ("file", "b.jsonl", b"x"), ("expires_after", None, b"3600")), "expires_after"),
        ((("purpose", None, b"batch"),), "file"),
        ((("file", None, b"x"),), "file"),
        ((("file", "a.jsonl", b"x"), ("file", "b.jsonl", b"y")), "file"),
        ((("expires_after[seconds]", None, b"3600"), ("file", "b.jsonl", b"x")), "expires_after[seconds]"),
        ((("purpose", None, b"batch"), ("purpose", None, b"batch"), ("file", "b.jsonl", b"x")), "purpose"),
        ((("expires_after", None, b"3599"), ("file", "b.jsonl", b"x")), "expires_after"),
        ((("expires_after", None, b"2592001"), ("file", "b.jsonl", b"x")), "expires_after"),
        ((("expires_after", None, b"an hour"), ("file", "b.jsonl", b"x")), "expires_after"),
    ],
)
def test_malformed_uploads_are_400(
    xai_emulator: XaiEmulator, parts: tuple[tuple[str, str | None, bytes], ...], mentions: str
) -> None:
    response = post_multipart(xai_emulator, *parts)

    assert response.status_code == 400
    assert mentions in response.json()["error"]
    assert xai_emulator.stats()["files_uploaded"] == 0


@pytest.mark.parametrize("seconds", ["3600", "2592000"])
def test_expires_after_bounds_are_accepted(xai_emulator: XaiEmulator, seconds: str) -> None:
    assert upload(xai_emulator, b"x", expires_after=seconds).status_code == 200


def test_a_json_or_broken_body_is_400_and_the_key_is_needed(xai_emulator: XaiEmulator) -> None:
    as_json = call(xai_emulator, "POST", "files", {"file": "x"})
    body, content_type = multipart(("file", "b.jsonl", b"x"))
    headers = {"Authorization": f"Bearer {xai_emulator.api_key}", "Content-Type": content_type}
    cut_short = requests.post(f"{xai_emulator.base_url}/files", data=body[:-20], headers=headers, timeout=10)
    no_key = requests.post(f"{xai_emulator.base_url}/files", files={"file": ("b.jsonl", b"x")}, timeout=10)

    assert as_json.status_code == 400
    assert cut_short.status_code == 400
    assert no_key.status_code == 401
    assert xai_emulator.stats()["files_uploaded"] == 0


def test_uploads_are_logged_without_json(xai_emulator: XaiEmulator) -> None:
    upload(xai_emulator, b"x" * 100)
    record = xai_emulator.requests_log[-1]

    assert (record.method, record.path, record.status) == ("POST", "/v1/files", 200)
    assert record.json is None
    assert record.body_size > 100
