"""An answer that quotes the request's Authorization header leaves no trace of the key anywhere: not in
the exception, the logs, the records or the manifest, in any form (raw, URL-encoded, JSON-escaped,
``Bearer <key>``), on the worker (requests) and through the trigger (httpx). Stored error texts are capped."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import structlog.testing
from faults_support import conn_json, context, manifest_of
from test_trigger_runs_twice import deferred_trigger, first_event, operator

from airflow_provider_xai_image.exceptions import XaiPossiblyBilledError
from airflow_provider_xai_image.hooks.redaction import MAX_STORED_ERROR_CHARS, REDACTED, KeyScrubber
from airflow_provider_xai_image.ledger.records import RequestRecord
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import XaiEmulator

#: A key whose URL-encoded and JSON-escaped forms differ from it (every character an API key may hold).
ODD_KEY = 'xai-echo"me\\back/to+you%20&=?'
JSON_ESCAPED = json.dumps(ODD_KEY)[1:-1]
KEY_FORMS = [
    ODD_KEY,
    f"Bearer {ODD_KEY}",
    quote(ODD_KEY, safe=""),
    quote_plus(ODD_KEY),
    JSON_ESCAPED,
    json.dumps(JSON_ESCAPED)[1:-1],  # JSON quoted in JSON
]


def assert_no_key(text: str) -> None:
    for form in KEY_FORMS:
        assert form not in text


@pytest.fixture
def echoing(monkeypatch: pytest.MonkeyPatch) -> Iterator[XaiEmulator]:
    """An emulator with :data:`ODD_KEY` whose scripted errors of image calls quote the Authorization header."""
    with XaiEmulator(api_key=ODD_KEY, echo_authorization=True) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(emulator))
        yield emulator


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        yield events


def logged(events: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    return "\n".join([*(json.dumps(event, default=repr) for event in events), caplog.text, out, err])


def stored_texts(out: Path) -> str:
    return "\n".join(path.read_text() for path in sorted(out.rglob("*.json")))


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker-requests", "trigger-httpx"])
def test_a_500_echoing_the_key_leaves_no_trace_of_it(
    echoing: XaiEmulator,
    output_uri: str,
    out: Path,
    logs: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
) -> None:
    ctx = context()
    op = operator(output_uri, prompt=["a red kite"], n=1)
    echoing.configure(generation_status_script=[500])
    if deferrable:
        event = asyncio.run(first_event(deferred_trigger(op, ctx)))
        assert event["status"] == "error"
        assert_no_key(json.dumps(event))
        with pytest.raises(XaiPossiblyBilledError) as raised:
            op.execute_complete(ctx, event)
    else:
        op.deferrable = False
        with pytest.raises(XaiPossiblyBilledError) as raised:
            op.execute(ctx)
    error = raised.value
    for text in (str(error), repr(error), repr(error.args), error.detail):
        assert "Emulated 500 error" in text
        assert_no_key(text)
    assert REDACTED in error.detail  # the echo reached the error, scrubbed
    [[record]] = [json.loads(path.read_text()) for path in out.rglob("_records/*.json")]
    assert REDACTED in record["error"]

    ctx = context()
    op = XaiGenerateImagesOperator(task_id="generate", prompt=["a red kite"], output_uri=output_uri)
    assert len(op.execute(ctx)) == 1  # the retry stores the image; the manifest counts what may have been paid
    assert manifest_of(ctx)["totals"]["possibly_billed_usd"] > 0
    assert_no_key(stored_texts(out))
    assert_no_key(logged(logs, caplog, capfd))


def test_the_scrubber_removes_every_form_and_keeps_the_rest() -> None:
    scrub = KeyScrubber(ODD_KEY)
    text = " | ".join([*KEY_FORMS, quote(ODD_KEY), JSON_ESCAPED.replace("/", "\\/"), "Emulated 500 error"])
    scrubbed = scrub(text)
    assert_no_key(scrubbed)
    assert "Bearer ***" in scrubbed
    assert scrubbed.endswith("Emulated 500 error")


def test_a_key_too_short_to_mask_is_left_alone_like_airflow_does() -> None:
    assert KeyScrubber("xai")("a maxairplane") == "a maxairplane"


def test_stored_error_texts_are_capped() -> None:
    record = RequestRecord(prompt_index=0, prompt="p", model="m", error="x" * 100_000)
    assert record.error is not None
    assert len(record.error) < MAX_STORED_ERROR_CHARS + 100
    assert record.error.endswith("(98000 more characters cut)")
    assert RequestRecord(prompt_index=0, prompt="p", model="m", error="short").error == "short"
