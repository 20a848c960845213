"""The Batch API on the emulator: the file route, the inline route, results pages, cancelling and refusing."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from emulator_support import (
    ALL_ZERO_STATE,
    BATCH_OBJECT_KEYS,
    IMAGINE_PRICE,
    INPUT_PRICE,
    QUALITY_PRICE,
    b64_bytes,
    batch_entry,
    call,
    control,
    create_file_batch,
    data_uri,
    decode,
    get_batch,
    image_bytes,
    jsonl,
    line,
    result_pages,
    results_by_id,
    upload,
    wait_until_done,
)

from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, MODERATION_MARKER, XaiEmulator

EDITS = "/v1/images/edits"


@pytest.fixture
def batches(xai_emulator: XaiEmulator) -> XaiEmulator:
    """An emulator whose batches validate and complete fast and which allows many batch creations."""
    xai_emulator.configure(batch_seconds=0.05, batch_validation_seconds=0.05, batch_create_per_second=None)
    return xai_emulator


def create_batch(emulator: XaiEmulator, name: str = "nightly") -> str:
    response = call(emulator, "POST", "batches", {"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["batch_id"])


def add(emulator: XaiEmulator, batch_id: str, *entries: dict[str, Any]) -> requests.Response:
    return call(emulator, "POST", f"batches/{batch_id}/requests", {"batch_requests": list(entries)})


def generation_of(item: dict[str, Any]) -> dict[str, Any]:
    """The generate response of a successful result item, checking the item's exact shape."""
    assert set(item) == {"batch_request_id", "batch_result"}
    assert set(item["batch_result"]) == {"response"}
    assert set(item["batch_result"]["response"]) == {"image_generation"}
    return dict(item["batch_result"]["response"]["image_generation"])


# The file route --------------------------------------------------------------------------------


def test_file_batch_runs_generations_and_edits(batches: XaiEmulator) -> None:
    source_file = upload(batches, image_bytes(300, 100), filename="source.png").json()["id"]
    content = jsonl(
        line("gen-0", "a red fox", model="grok-imagine-image"),
        line("gen-1", "two owls", model="grok-imagine-image", n=2, response_format="b64_json"),
        line("fail", f"doomed {BATCH_FAILURE_MARKER}"),
        line("edit-uri", "snow", EDITS, model="grok-imagine-image", image={"url": data_uri(100, 300)}),
        line(
            "edit-file",
            "rain",
            EDITS,
            images=[{"type": "image_url", "file_id": source_file}],
            response_format="b64_json",
        ),
    )
    batch = create_file_batch(batches, content)
    done = wait_until_done(batches, batch["batch_id"])
    results = results_by_id(batches, batch["batch_id"])

    assert done["state"] == {"num_requests": 5, "num_pending": 0, "num_success": 4, "num_error": 1, "num_cancelled": 0}
    assert done["cancel_time"] is None
    assert set(results) == {"gen-0", "gen-1", "fail", "edit-uri", "edit-file"}
    gen_0, gen_1 = generation_of(results["gen-0"]), generation_of(results["gen-1"])
    assert gen_0["usage"]["cost_in_usd_ticks"] == IMAGINE_PRICE // 2
    assert gen_0["block_reason"] is None
    assert decode(requests.get(gen_0["data"][0]["url"], timeout=10).content).format == "JPEG"
    assert gen_1["usage"]["cost_in_usd_ticks"] == IMAGINE_PRICE
    assert [decode(b64_bytes(item["b64_json"])).format for item in gen_1["data"]] == ["JPEG", "JPEG"]
    assert generation_of(results["edit-uri"])["usage"]["cost_in_usd_ticks"] == (IMAGINE_PRICE + INPUT_PRICE) // 2
    edit_file = generation_of(results["edit-file"])
    assert edit_file["model"] == "grok-imagine-image-quality"
    assert edit_file["usage"]["cost_in_usd_ticks"] == (QUALITY_PRICE + INPUT_PRICE) // 2
    assert decode(b64_bytes(edit_file["data"][0]["b64_json"])).size == (1024, 341)
    assert "error" in str(results["fail"])
    assert batches.images_billed == 5
    assert batches.cost_usd_ticks == (4 * IMAGINE_PRICE + QUALITY_PRICE + 2 * INPUT_PRICE) // 2


def test_every_counter_is_zero_while_xai_validates_the_file(batches: XaiEmulator) -> None:
    batches.configure(batch_validation_seconds=0.4, batch_seconds=60)
    batch = create_file_batch(batches, jsonl(line("a", "one"), line("b", "two"), line("c", "three")))
    during = get_batch(batches, batch["batch_id"])
    results_during = call(batches, "GET", f"batches/{batch['batch_id']}/results").json()
    time.sleep(0.45)
    after = get_batch(batches, batch["batch_id"])

    assert batch["state"] == during["state"] == ALL_ZERO_STATE
    assert results_during == {"results": []}
    assert after["state"] == {"num_requests": 3, "num_pending": 3, "num_success": 0, "num_error": 0, "num_cancelled": 0}
    assert after["cancel_time"] is None


def test_batch_requests_complete_batch_seconds_after_validation(batches: XaiEmulator) -> None:
    batches.configure(batch_validation_seconds=0.2, batch_seconds=0.6)
    batch = create_file_batch(batches, jsonl(line("a", "one")))
    time.sleep(0.35)
    validated = get_batch(batches, batch["batch_id"])
    time.sleep(0.5)
    completed = get_batch(batches, batch["batch_id"])

    assert validated["state"]["num_pending"] == 1
    assert completed["state"]["num_success"] == 1


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"", "no requests"),
        (b"\n\n", "no requests"),
        (jsonl(line("a", "one")) + b'{"custom_id": "b", \n', "line 2"),
        (jsonl(line("a", "one")) + b"[1, 2]\n", "line 2"),
        (jsonl(line("a", "one", url="/v1/chat/completions")), "url"),
        (jsonl(line("a", "one", url="/v1/images/variations")), "url"),
        (jsonl({**line("a", "one"), "method": "GET"}), "method"),
        (jsonl({"id": "a", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "x"}}), "custom_id"),
        (jsonl(line("a", "one"), line("b", "two", n=0)), "line 2: body.n"),
        (jsonl(line("a", "one", quality="high")), "body.quality"),
        (jsonl(line("a", "one", size="1024x1024")), "body.size"),
        (jsonl(line("a", "one", EDITS)), "line 1"),
        (jsonl(line("a", "one", EDITS, image="https://example.com/a.png")), "body.image"),
        (jsonl(line("a", "one", EDITS, image={"file_id": "file_nope"})), "file_nope"),
        (jsonl(line("a", "one", EDITS, image={"url": data_uri(4, 4, "GIF")})), "PNG, JPEG or WebP"),
        (jsonl(line("a", "one"), line("b", "two"), line("a", "three")), "line 3: custom_id 'a' repeats line 1"),
        ("\xff".encode("latin-1"), "UTF-8"),
    ],
)
def test_an_invalid_input_file_makes_xai_cancel_the_batch(batches: XaiEmulator, content: bytes, mentions: str) -> None:
    batch = create_file_batch(batches, content)
    done = wait_until_done(batches, batch["batch_id"])
    time.sleep(0.1)
    later = get_batch(batches, batch["batch_id"])

    assert done["cancel_time"]
    assert mentions in done["cancel_by_xai_message"]
    assert later["state"] == ALL_ZERO_STATE
    assert call(batches, "GET", f"batches/{batch['batch_id']}/results").json() == {"results": []}
    assert batches.images_billed == batches.cost_usd_ticks == 0


def test_creating_a_batch_from_an_unknown_or_expired_file_is_404(batches: XaiEmulator) -> None:
    unknown = call(batches, "POST", "batches", {"name": "b", "input_file_id": "file_nope"})
    misnamed = call(batches, "POST", "batches", {"name": "b", "input_file": "file_nope"})

    assert unknown.status_code == 404
    assert "file_nope" in unknown.json()["error"]
    assert misnamed.status_code == 422
    assert batches.stats()["batches_created"] == 0


def test_batch_object_has_the_contract_fields_and_a_bare_date_expiry(batches: XaiEmulator) -> None:
    batch = create_file_batch(batches, jsonl(line("a", "one")))
    listed = call(batches, "GET", "batches").json()["batches"][0]
    batches.configure(expire_time_format="rfc3339")
    rfc = get_batch(batches, batch["batch_id"])

    created = datetime.fromisoformat(batch["create_time"].replace("Z", "+00:00"))
    for shown in (batch, listed, rfc):
        assert set(shown) == BATCH_OBJECT_KEYS
        assert "cost_breakdown" not in shown
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", batch["expire_time"])
    assert batch["expire_time"] == (created + timedelta(hours=24)).astimezone(timezone.utc).date().isoformat()
    assert listed["expire_time"] == batch["expire_time"]
    assert datetime.fromisoformat(rfc["expire_time"].replace("Z", "+00:00")) - created == timedelta(hours=24)
    assert batch["name"] == "nightly"
    assert batch["cancel_time"] is None
    assert batch["cancel_by_xai_message"] is None


# Results ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("object", {"batch_result": {"error": {"code": 13, "message": "Image generation failed (emulated failure)."}}}),
        ("string", {"batch_result": {"error": "Image generation failed (emulated failure)."}}),
        ("error_message", {"error_message": "Image generation failed (emulated failure)."}),
    ],
)
def test_failed_results_come_in_the_configured_shape(
    batches: XaiEmulator, shape: str, expected: dict[str, Any]
) -> None:
    batches.configure(batch_error_shape=shape)
    batch = create_file_batch(batches, jsonl(line("bad", f"x {BATCH_FAILURE_MARKER}")))
    wait_until_done(batches, batch["batch_id"])

    assert results_by_id(batches, batch["batch_id"])["bad"] == {"batch_request_id": "bad", **expected}


def test_mixed_error_shapes_show_every_shape(batches: XaiEmulator) -> None:
    lines = [line(f"bad-{number}", f"x {BATCH_FAILURE_MARKER}") for number in range(3)]
    lines.append(line("unknown-model", "y", model="grok-2-image"))
    batch = create_file_batch(batches, jsonl(*lines))
    done = wait_until_done(batches, batch["batch_id"])
    items = list(results_by_id(batches, batch["batch_id"]).values())

    def shape(item: dict[str, Any]) -> str:
        if "error_message" in item:
            return "error_message"
        return "object" if isinstance(item["batch_result"]["error"], dict) else "string"

    assert done["state"]["num_error"] == 4
    assert sorted(shape(item) for item in items) == ["error_message", "object", "object", "string"]
    unknown = results_by_id(batches, batch["batch_id"])["unknown-model"]
    assert "grok-2-image" in str(unknown)


def test_results_are_paged_by_limit_and_token(batches: XaiEmulator) -> None:
    batch = create_file_batch(batches, jsonl(*(line(f"r{number}", f"p{number}") for number in range(5))))
    wait_until_done(batches, batch["batch_id"])
    pages = result_pages(batches, batch["batch_id"], limit=2)
    single = call(batches, "GET", f"batches/{batch['batch_id']}/results").json()

    assert [len(page["results"]) for page in pages] == [2, 2, 1]
    assert all(page["pagination_token"] for page in pages[:-1])
    assert "pagination_token" not in pages[-1]
    assert sorted(item["batch_request_id"] for page in pages for item in page["results"]) == [f"r{n}" for n in range(5)]
    assert len(single["results"]) == 5
    assert "pagination_token" not in single


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"page_size": 2}, "unknown parameter page_size; use limit"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"pagination_token": "garbage"}, "pagination_token"),
    ],
)
@pytest.mark.parametrize("listing", ["results", "batches"])
def test_wrong_paging_parameters_are_400(
    batches: XaiEmulator, params: dict[str, Any], mentions: str, listing: str
) -> None:
    batch_id = create_batch(batches)
    path = f"batches/{batch_id}/results" if listing == "results" else "batches"
    response = call(batches, "GET", path, params=params)
    largest = call(batches, "GET", path, params={"limit": 1000})

    assert response.status_code == 400
    assert mentions in response.json()["error"]
    assert largest.status_code == 200


def test_batch_result_urls_expire_image_ttl_after_the_request_completed(batches: XaiEmulator) -> None:
    batches.configure(image_ttl=0.3)
    batch = create_file_batch(batches, jsonl(line("a", "one")))
    time.sleep(0.5)  # completed ~0.1 s after creation: its URL expired ~0.4 s after creation
    late = generation_of(results_by_id(batches, batch["batch_id"])["a"])["data"][0]["url"]
    batches.configure(image_ttl=5)
    fresh_batch = create_file_batch(batches, jsonl(line("b", "two")))
    wait_until_done(batches, fresh_batch["batch_id"])
    fresh = generation_of(results_by_id(batches, fresh_batch["batch_id"])["b"])["data"][0]["url"]

    assert requests.get(late, timeout=10).status_code == 403
    assert requests.get(fresh, timeout=10).status_code == 200


def test_batch_images_are_billed_exactly_once_at_half_price(batches: XaiEmulator) -> None:
    batch = create_file_batch(batches, jsonl(line("a", "one", n=3), line("b", f"two {MODERATION_MARKER}")))
    time.sleep(0.15)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: call(batches, "GET", f"batches/{batch['batch_id']}/results"), range(8)))
    wait_until_done(batches, batch["batch_id"])

    assert batches.images_billed == 3
    assert batches.cost_usd_ticks == 3 * QUALITY_PRICE // 2


# Cancelling, refusing, expiring ----------------------------------------------------------------


def test_cancel_during_validation_runs_nothing(batches: XaiEmulator) -> None:
    batches.configure(batch_validation_seconds=0.3)
    batch = create_file_batch(batches, jsonl(line("a", "one")))
    cancelled = call(batches, "POST", f"batches/{batch['batch_id']}:cancel").json()
    time.sleep(0.4)
    later = get_batch(batches, batch["batch_id"])

    assert cancelled["cancel_time"]
    assert cancelled["cancel_by_xai_message"] is None
    assert later["state"] == ALL_ZERO_STATE
    assert batches.images_billed == 0


@pytest.mark.parametrize("by", ["method", "endpoint"])
def test_xai_can_refuse_a_batch(batches: XaiEmulator, by: str) -> None:
    batches.configure(batch_seconds=60)
    batch = create_file_batch(batches, jsonl(line("a", "one"), line("b", "two")))
    time.sleep(0.1)
    message = "Your team has exceeded its batch quota."
    if by == "method":
        refused = batches.refuse_batch(batch["batch_id"], message)
    else:
        refused = control(batches, f"batches/{batch['batch_id']}:refuse", {"message": message}).json()
    seen = get_batch(batches, batch["batch_id"])

    assert refused == seen
    assert seen["cancel_by_xai_message"] == message
    assert seen["cancel_time"]
    assert seen["state"] == {"num_requests": 2, "num_pending": 0, "num_success": 0, "num_error": 0, "num_cancelled": 2}
    assert batches.images_billed == 0


def test_refusing_during_validation_and_refuse_endpoint_errors(batches: XaiEmulator) -> None:
    batches.configure(batch_validation_seconds=0.3)
    batch = create_file_batch(batches, jsonl(line("a", "one")))
    refused = batches.refuse_batch(batch["batch_id"], "File refused")
    time.sleep(0.4)
    later = get_batch(batches, batch["batch_id"])
    no_message = control(batches, f"batches/{batch['batch_id']}:refuse", {})
    unknown = control(batches, "batches/batch_nope:refuse", {"message": "x"})

    assert refused["cancel_by_xai_message"] == later["cancel_by_xai_message"] == "File refused"
    assert later["state"] == ALL_ZERO_STATE
    assert no_message.status_code == 422
    assert unknown.status_code == 404


def test_expire_batch_marks_it_cancelled_by_xai(batches: XaiEmulator) -> None:
    batches.configure(batch_seconds=60)
    first, second = create_batch(batches), create_batch(batches)
    add(batches, first, batch_entry("a", "one"))
    add(batches, second, batch_entry("a", "one"))
    expired = batches.expire_batch(first)
    by_control = control(batches, f"batches/{second}:expire", {"message": "Ran out of time"}).json()

    assert expired["cancel_by_xai_message"] == "Batch expired"
    assert expired["state"]["num_cancelled"] == 1
    assert expired["expire_time"] == datetime.now(timezone.utc).date().isoformat()
    assert by_control["cancel_by_xai_message"] == "Ran out of time"
    assert get_batch(batches, second)["cancel_time"]


# The inline route ------------------------------------------------------------------------------


def test_inline_batch_lifecycle(batches: XaiEmulator) -> None:
    batch_id = create_batch(batches)
    entries = [batch_entry(f"req-{number}", f"prompt {number}", model="grok-imagine-image") for number in range(3)]
    entries.append(batch_entry("req-fail", f"prompt {BATCH_FAILURE_MARKER}"))
    added = add(batches, batch_id, *entries)
    pending = get_batch(batches, batch_id)
    done = wait_until_done(batches, batch_id)
    results = results_by_id(batches, batch_id, limit=3)

    assert added.status_code == 200
    assert pending["state"]["num_requests"] == pending["state"]["num_pending"] == 4
    assert done["state"] == {"num_requests": 4, "num_pending": 0, "num_success": 3, "num_error": 1, "num_cancelled": 0}
    assert set(results) == {entry["batch_request_id"] for entry in entries}
    assert generation_of(results["req-0"])["usage"]["cost_in_usd_ticks"] == IMAGINE_PRICE // 2


def test_inline_requests_stay_pending_until_batch_seconds(batches: XaiEmulator) -> None:
    batches.configure(batch_seconds=0.4)
    batch_id = create_batch(batches)
    add(batches, batch_id, batch_entry("a", "one"))
    early = call(batches, "GET", f"batches/{batch_id}/results").json()
    time.sleep(0.45)
    late = call(batches, "GET", f"batches/{batch_id}/results").json()

    assert early == {"results": []}
    assert [item["batch_request_id"] for item in late["results"]] == ["a"]


def test_duplicate_request_ids_are_400(batches: XaiEmulator) -> None:
    batch_id = create_batch(batches)
    same_call = add(batches, batch_id, batch_entry("x", "one"), batch_entry("x", "two"))
    first = add(batches, batch_id, batch_entry("y", "one"))
    again = add(batches, batch_id, batch_entry("y", "two"))

    assert same_call.status_code == 400
    assert first.status_code == 200
    assert again.status_code == 400
    assert "y" in again.json()["error"]
    assert get_batch(batches, batch_id)["state"]["num_requests"] == 1


@pytest.mark.parametrize(
    "entry",
    [
        batch_entry("a", ""),
        batch_entry("a", "ok", n=0),
        batch_entry("a", "ok", quality="high"),
        {"batch_request_id": "a", "batch_request": {"chat_get_completion": {"prompt": "x"}}},
        {"batch_request_id": "a", "batch_request": {"image_request": {"prompt": "x"}}},
        {"batch_request_id": "", "batch_request": {"image_generation": {"prompt": "x"}}},
        {"custom_id": "a", "batch_request": {"image_generation": {"prompt": "x"}}},
    ],
)
def test_invalid_inline_requests_are_rejected_and_nothing_is_added(batches: XaiEmulator, entry: dict[str, Any]) -> None:
    batch_id = create_batch(batches)
    response = add(batches, batch_id, batch_entry("good", "fine"), entry)

    assert response.status_code in (400, 422)
    assert get_batch(batches, batch_id)["state"]["num_requests"] == 0


def test_requests_cannot_be_added_to_a_file_batch_or_a_cancelled_one(batches: XaiEmulator) -> None:
    file_batch = create_file_batch(batches, jsonl(line("a", "one")))["batch_id"]
    cancelled = create_batch(batches)
    call(batches, "POST", f"batches/{cancelled}:cancel")

    assert add(batches, file_batch, batch_entry("b", "two")).status_code == 400
    assert add(batches, cancelled, batch_entry("b", "two")).status_code == 400


def test_unknown_batch_is_404_everywhere(batches: XaiEmulator) -> None:
    responses = [
        call(batches, "GET", "batches/batch_nope"),
        call(batches, "GET", "batches/batch_nope/results"),
        call(batches, "POST", "batches/batch_nope:cancel"),
        add(batches, "batch_nope", batch_entry("a", "x")),
    ]

    assert [response.status_code for response in responses] == [404] * 4


def test_cancel_cancels_pending_requests_and_closes_the_batch(batches: XaiEmulator) -> None:
    batches.configure(batch_seconds=60)
    batch_id = create_batch(batches)
    add(batches, batch_id, batch_entry("a", "one"), batch_entry("b", "two"))
    cancelled = call(batches, "POST", f"batches/{batch_id}:cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["cancel_time"]
    assert cancelled.json()["cancel_by_xai_message"] is None
    assert cancelled.json()["state"]["num_cancelled"] == 2
    assert cancelled.json()["state"]["num_pending"] == 0
    assert batches.images_billed == 0


def test_batch_creation_is_limited_per_second(xai_emulator: XaiEmulator) -> None:
    first = call(xai_emulator, "POST", "batches", {"name": "a"})
    second = call(xai_emulator, "POST", "batches", {"name": "b"})
    missing_name = call(xai_emulator, "POST", "batches", {})

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    assert missing_name.status_code == 422


def test_add_calls_are_limited_in_size_and_pace(batches: XaiEmulator) -> None:
    batch_id = create_batch(batches)
    batches.configure(batch_add_max_bytes=500, batch_add_max_calls=2, batch_add_window_seconds=30)
    too_big = add(batches, batch_id, batch_entry("big", "x" * 600))
    ok = [add(batches, batch_id, batch_entry(f"r{number}", "x")) for number in range(2)]
    over_pace = add(batches, batch_id, batch_entry("r2", "x"))

    assert too_big.status_code == 413
    assert [response.status_code for response in ok] == [200, 200]
    assert over_pace.status_code == 429
    assert 1 <= int(over_pace.headers["Retry-After"]) <= 30


def test_default_add_limit_is_25_decimal_megabytes(xai_emulator: XaiEmulator) -> None:
    assert xai_emulator.config.batch_add_max_bytes == 25_000_000


def test_batches_are_listed_with_limit_and_token(batches: XaiEmulator) -> None:
    ids = [create_batch(batches, f"b{number}") for number in range(3)]
    first = call(batches, "GET", "batches", params={"limit": 2}).json()
    second = call(batches, "GET", "batches", params={"limit": 2, "pagination_token": first["pagination_token"]}).json()

    assert [batch["batch_id"] for batch in first["batches"] + second["batches"]] == ids
    assert first["pagination_token"]
    assert "pagination_token" not in second
