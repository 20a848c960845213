"""``engine.plan``: a generation plan built once, written whole, read back only when its digest matches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath
from pydantic import ValidationError

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.engine import plan as plan_module
from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests, plan_uri, remove_plan
from airflow_provider_xai_image.exceptions import XaiPlanError
from airflow_provider_xai_image.ledger.records import request_fingerprint

PROMPTS = ["a red fox", "a blue whale", "a green parrot"]
SOURCE = "data:image/png;base64,iVBORw0KGgo="


def planned(prompts: list[str] = PROMPTS) -> PlannedRequests:
    requests = {
        index: ImageRequest.build(prompt=prompt, n=2, source_images=(SOURCE,), aspect_ratio="16:9")
        for index, prompt in enumerate(prompts)
    }
    return PlannedRequests.of(requests, prompts)


def a_plan(**limits: object) -> GenerationPlan:
    return GenerationPlan(requests=planned(), price_usd_ticks=200_000_000, **limits)  # type: ignore[arg-type]


def test_planned_requests_hold_one_template_and_every_fingerprint() -> None:
    requests = planned()

    assert requests.template.prompt == PROMPTS[0]
    assert [request.prompt for request in requests.by_index.values()] == PROMPTS
    assert all(request.source_images == (SOURCE,) and request.n == 2 for request in requests.by_index.values())
    assert requests.fingerprints == [request_fingerprint(request) for request in requests.by_index.values()]
    assert len(set(requests.fingerprints)) == 3
    assert (requests.fingerprint_of(2), requests.fingerprint_of(3), requests.fingerprint_of(-1)) == (
        requests.fingerprints[2],
        None,
        None,
    )


def test_a_plan_survives_its_json_round_trip_through_storage(tmp_path: Path) -> None:
    plan = a_plan(max_cost_usd=1.5, on_moderation="skip", max_concurrency=4)
    folder = ObjectStoragePath(f"file://{tmp_path}/run/task/")

    uri, digest = plan.save(folder)

    assert uri == plan_uri(folder) == f"file://{tmp_path}/run/task/plan.json"
    written = (tmp_path / "run" / "task" / "plan.json").read_bytes()
    assert digest == hashlib.sha256(written).hexdigest()
    assert GenerationPlan.load(uri, digest) == plan
    assert [path.name for path in (tmp_path / "run" / "task").iterdir()] == ["plan.json"]  # no staging file left


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data.replace(b'"skip"', b'"fail"'), "its sha256 differs"),
        (lambda data: b"", "its sha256 differs"),
    ],
    ids=["changed", "emptied"],
)
def test_a_plan_whose_digest_differs_is_refused(tmp_path: Path, change, message: str) -> None:
    uri, digest = a_plan(on_moderation="skip").save(ObjectStoragePath(f"file://{tmp_path}/"))
    path = tmp_path / "plan.json"
    path.write_bytes(change(path.read_bytes()))

    with pytest.raises(XaiPlanError, match=message):
        GenerationPlan.load(uri, digest)


def test_a_missing_oversized_or_malformed_plan_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}/")
    with pytest.raises(XaiPlanError, match=r"cannot be read: FileNotFoundError; a retry plans again"):
        GenerationPlan.load(plan_uri(folder), "0" * 64)

    (tmp_path / "plan.json").write_bytes(b'{"requests": "secret prompt"}')
    digest = hashlib.sha256(b'{"requests": "secret prompt"}').hexdigest()
    with pytest.raises(XaiPlanError, match=r"is not a plan: \d+ error\(s\)$") as refused:
        GenerationPlan.load(plan_uri(folder), digest)
    assert "secret prompt" not in str(refused.value)  # read from storage: data, not shown back

    uri, digest = a_plan().save(folder)
    monkeypatch.setattr(plan_module, "MAX_PLAN_BYTES", 100)
    with pytest.raises(XaiPlanError, match="over 100 bytes"):
        GenerationPlan.load(uri, digest)
    with pytest.raises(XaiPlanError, match="deferrable=False"):
        a_plan().save(folder)


def test_a_plan_checks_what_it_is_given() -> None:
    requests = planned()
    with pytest.raises(ValidationError, match="2 fingerprints for 3 prompts"):
        PlannedRequests(template=requests.template, prompts=PROMPTS, fingerprints=requests.fingerprints[:2])
    with pytest.raises(ValidationError, match=r"fingerprints\.0"):
        PlannedRequests(template=requests.template, prompts=PROMPTS[:1], fingerprints=["../../etc"])
    with pytest.raises(ValidationError, match="on_moderation"):
        GenerationPlan(requests=requests, price_usd_ticks=1, on_moderation="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="price_usd_ticks"):
        GenerationPlan(requests=requests, price_usd_ticks=-1)


def test_removing_a_plan_leaves_the_rest_and_tolerates_none(tmp_path: Path) -> None:
    folder = ObjectStoragePath(f"file://{tmp_path}/")
    a_plan().save(folder)
    (tmp_path / "manifest.json").write_text("{}")

    remove_plan(folder, log=None)
    remove_plan(folder, log=None)  # nothing to remove: no error, nothing logged

    assert [path.name for path in tmp_path.iterdir()] == ["manifest.json"]
