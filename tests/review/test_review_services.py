"""The review operator with Airflow's real services: a run generates 4 images against the emulator, the
review task waits for input, and a response through the REST API (``PATCH .../hitlDetails``) decides
what goes on."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from review_support import DAG_ID, READER

from airflow_provider_xai_image.ledger.review import REVIEW_NAME
from airflow_provider_xai_image.operators.review import REJECT_ALL

pytestmark = pytest.mark.dag
EXAMPLE_DAG_ID = "xai_review_images"


def hitl_path(services: Any, run_id: str, task_id: str = "review") -> str:
    return f"{services.run_path(DAG_ID, run_id)}/taskInstances/{task_id}/-1/hitlDetails"


def run_until_review(env: SimpleNamespace) -> tuple[str, dict[str, Any]]:
    """Trigger a run and wait until the review task waits for input; return the run id and its hitlDetails."""
    services = env.services
    run_id = services.trigger(DAG_ID)
    services.wait_for_input(DAG_ID, run_id, "review")
    response = services.request("GET", hitl_path(services, run_id))
    assert response.status_code == 200, response.text
    return run_id, response.json()


def respond(env: SimpleNamespace, run_id: str, chosen: list[str], comment: str | None) -> None:
    response = env.services.request(
        "PATCH", hitl_path(env.services, run_id), json={"chosen_options": chosen, "params_input": {"comment": comment}}
    )
    assert response.status_code == 200, response.text


def keys(env: SimpleNamespace, prefix: str) -> list[str]:
    return env.moto_s3.keys(env.bucket, prefix)


def test_approving_two_images_publishes_exactly_those(review_services: SimpleNamespace) -> None:
    env, services = review_services, review_services.services
    run_id, details = run_until_review(env)

    manifest_uri = services.xcom(DAG_ID, run_id, "generate", "manifest")
    manifest = json.loads(env.moto_s3.get_bytes(env.bucket, manifest_uri.split(f"{env.bucket}/", 1)[1]))
    names = [image["uri"].rsplit("/", 1)[1] for image in manifest["images"]]
    assert len(names) == 4
    assert details["options"] == [*names, REJECT_ALL]
    assert details["multiple"] is True
    assert details["subject"] == "4 image(s) of generate wait for review"
    body = details["body"]
    assert body.count("/xai-image-gallery/dags/xai_review_test/runs/") == 8  # each thumbnail, and its link
    # the prompt's markup is text (a code span); outside code spans, no HTML and only the 4 thumbnails
    markup_prompt = next(image["prompt"] for image in manifest["images"] if "![x](http://" in image["prompt"])
    assert f"Prompt: ` {markup_prompt} `" in body
    outside_code = re.sub(r"` [^`]* `", "", body)
    assert re.search(r"(?<!\\)<", outside_code) is None
    assert len(re.findall(r"(?<!\\)!\[", outside_code)) == 4

    approved = [names[1], names[2]]
    respond(env, run_id, approved, "Two pass")
    services.assert_run_ends(DAG_ID, run_id)

    published = services.xcom(DAG_ID, run_id, "review")
    folder = f"s3://aws_moto@{env.bucket}/approved/{run_id}/"
    assert published == [folder + name for name in approved]
    assert services.xcom(DAG_ID, run_id, "use_approved") == published
    source_keys = {image["uri"].rsplit("/", 1)[1]: image for image in manifest["images"]}
    for name in approved:
        copied = env.moto_s3.get_bytes(env.bucket, f"approved/{run_id}/{name}")
        assert len(copied) == source_keys[name]["bytes"]
    assert sorted(key.rsplit("/", 1)[1] for key in keys(env, f"approved/{run_id}/")) == sorted(approved)
    rejected = services.xcom(DAG_ID, run_id, "review", "rejected")
    assert rejected == [source_keys[name]["uri"] for name in names if name not in approved]

    review_key = manifest_uri.split(f"{env.bucket}/", 1)[1].rsplit("/", 1)[0] + f"/{REVIEW_NAME}"
    decision = json.loads(env.moto_s3.get_bytes(env.bucket, review_key))
    assert decision["approved"] == approved
    assert decision["rejected"] == [name for name in names if name not in approved]
    assert decision["comment"] == "Two pass"
    assert decision["decided_by"]["name"] == "reviewer"
    assert decision["timed_out"] is False
    assert decision["review_task"]["task_id"] == "review"

    gallery_path = f"/xai-image-gallery/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/generate/gallery"
    gallery = services.request("GET", gallery_path, user=READER)
    assert gallery.status_code == 200, gallery.text
    assert gallery.text.count('<span class="badge approved">approved</span>') == 2
    assert gallery.text.count('<span class="badge rejected">rejected</span>') == 2
    assert "reviewed by <b>reviewer</b>" in gallery.text

    events = [event for event in services.asset_events(DAG_ID, run_id) if event["source_task_id"] == "review"]
    assert [(event["uri"], event["extra"]) for event in events] == [
        (f"s3://{env.bucket}/approved/{run_id}", {"images": 2})
    ]


def test_reject_all_gives_an_empty_list_and_no_asset_event(review_services: SimpleNamespace) -> None:
    env, services = review_services, review_services.services
    run_id, _ = run_until_review(env)

    respond(env, run_id, [REJECT_ALL], None)
    services.assert_run_ends(DAG_ID, run_id)

    assert services.xcom(DAG_ID, run_id, "review") == []
    assert services.xcom(DAG_ID, run_id, "use_approved") == []
    assert len(services.xcom(DAG_ID, run_id, "review", "rejected")) == 4
    assert keys(env, f"approved/{run_id}/") == []
    assert [event for event in services.asset_events(DAG_ID, run_id) if event["source_task_id"] == "review"] == []


def test_the_example_dag_times_out_to_reject_all_and_regenerates_each_prompt_once(
    review_services: SimpleNamespace,
) -> None:
    """example_dags/xai_review_images.py, nobody answering: the response timeout chooses its default
    (``Reject all``), nothing is published, and the rejected prompts are generated once more."""
    env, services = review_services, review_services.services
    run_id = services.trigger(EXAMPLE_DAG_ID)

    services.assert_run_ends(EXAMPLE_DAG_ID, run_id)

    assert services.xcom(EXAMPLE_DAG_ID, run_id, "review") == []
    generated = services.xcom(EXAMPLE_DAG_ID, run_id, "generate")
    assert services.xcom(EXAMPLE_DAG_ID, run_id, "review", "rejected") == generated
    assert len(generated) == 4
    assert services.xcom(EXAMPLE_DAG_ID, run_id, "use_approved") == {}
    assert len(services.xcom(EXAMPLE_DAG_ID, run_id, "rejected_prompts")) == 2
    assert len(services.xcom(EXAMPLE_DAG_ID, run_id, "regenerate")) == 2  # one image per rejected prompt
    manifest_key = services.xcom(EXAMPLE_DAG_ID, run_id, "generate", "manifest").split(f"{env.bucket}/", 1)[1]
    decision = json.loads(env.moto_s3.get_bytes(env.bucket, manifest_key.replace("manifest.json", REVIEW_NAME)))
    assert (decision["timed_out"], decision["decided_by"], decision["approved"]) == (True, None, [])
    assert [key for key in keys(env, "examples/approved/")] == []
