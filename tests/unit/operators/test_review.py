"""XaiReviewImagesOperator in the test process: the form it builds, its limits, and what a decision
does (review.json, publishing, XCom, Asset event), on local storage. The way through Airflow's real
services is tests/review."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from support.images import jpeg_file, sha256
from support.task_context import make_task_context

from airflow_provider_xai_image.exceptions import XaiStorageError
from airflow_provider_xai_image.ledger.manifest import Manifest
from airflow_provider_xai_image.ledger.records import TaskInstanceId
from airflow_provider_xai_image.ledger.review import REVIEW_NAME, ManifestUnderReview, read_review
from airflow_provider_xai_image.operators import review as review_module
from airflow_provider_xai_image.operators.review import (
    MAX_IMAGES_PER_REVIEW,
    REJECT_ALL,
    XaiReviewImagesOperator,
    upstream_task_instance,
)
from airflow_provider_xai_image.operators.review_form import image_url, markdown_code, markdown_text, review_body
from airflow_provider_xai_image.storage.layout import safe_segment
from airflow_provider_xai_image.storage.publishing import copy_whole

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
MARKUP = "A kite ![x](http://elsewhere/x.png) <img src=x onerror=alert(1)> `code` *b*\n# heading"


def write_manifest(
    root: Path,
    count: int,
    *,
    task_id: str = "generate",
    map_index: int = -1,
    task_instance: dict[str, Any] | None = None,
) -> str:
    """A manifest of ``count`` stored JPEGs in the folder the generate operator with ``output_uri`` ``root``
    would use, recording ``task_instance`` (by default the one of that folder); its URI."""
    folder = root / safe_segment(RUN_ID) / safe_segment(task_id)
    if map_index >= 0:
        folder = folder / f"map-{map_index}"
    images = []
    for index in range(count):
        path = jpeg_file(folder / f"p{index:05d}-i00-0123456789ab.jpg", colour=(index % 256, 80, 160))
        images.append(
            {
                "uri": path.as_uri(),
                "prompt_index": index,
                "image_index": 0,
                "prompt": MARKUP if index == 0 else f"prompt {index}",
                "model": "grok-imagine-image",
                "bytes": path.stat().st_size,
                "sha256": sha256(path.read_bytes()),
                "cost_usd_ticks": 200_000_000,
            }
        )
    if task_instance is None:
        task_instance = {"dag_id": "unit_dag", "run_id": RUN_ID, "task_id": task_id, "map_index": map_index}
    manifest = folder / "manifest.json"
    content = {
        "task_instance": task_instance,
        "images": images,
        "totals": {},
        "parameters": {"output_uri": root.as_uri()},
    }
    manifest.write_text(json.dumps(content))
    return manifest.as_uri()


def loaded(manifest_uri: str) -> ManifestUnderReview:
    """The manifest at a ``file://`` URI."""
    return ManifestUnderReview(manifest_uri, Manifest.model_validate_json(Path(manifest_uri[7:]).read_bytes()))


def review_context() -> dict[str, Any]:
    context = make_task_context("review", dag_id="unit_dag", run_id=RUN_ID)
    context["dag"] = SimpleNamespace(dag_id="unit_dag", task_ids=["generate", "review", "other task"])
    return context


def response(chosen: list[str], comment: str | None = None) -> dict[str, Any]:
    return {
        "chosen_options": chosen,
        "params_input": {"comment": comment},
        "responded_at": datetime(2026, 1, 2, tzinfo=timezone.utc),
        "responded_by_user": {"id": "7", "name": "alice"},
    }


def names_of(manifest_uri: str) -> list[str]:
    return [Path(image["uri"]).name for image in json.loads(Path(manifest_uri[7:]).read_text())["images"]]


# -- the form ---------------------------------------------------------------------------------------------


def test_markdown_text_escapes_every_ascii_punctuation_and_folds_lines() -> None:
    assert markdown_text("a<b>![x](y)\n#z") == r"a\<b\>\!\[x\]\(y\) \#z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("plain", "` plain `"), ("a `b` c", "`` a `b` c ``"), ("``x``\nnext", "``` ``x`` next ```")],
)
def test_markdown_code_fences_the_text_longer_than_any_backtick_run(value: str, expected: str) -> None:
    assert markdown_code(value) == expected


def test_review_body_shows_values_as_code_and_only_the_thumbnails_as_images(tmp_path: Path) -> None:
    found = loaded(write_manifest(tmp_path, 2))
    task = TaskInstanceId(dag_id="unit dag", run_id=RUN_ID, task_id="generate")

    body = review_body("https://airflow.example/base/", task, found.images)

    assert (
        "Prompt: ` A kite ![x](http://elsewhere/x.png) <img src=x onerror=alert(1)> `code` *b* # heading `" not in body
    )
    assert "Prompt: `` A kite ![x](http://elsewhere/x.png) <img src=x onerror=alert(1)> `code` *b* # heading ``" in body
    url = image_url("https://airflow.example/base/", task, "p00000-i00-0123456789ab.jpg")
    assert url == (
        "https://airflow.example/base/xai-image-gallery/dags/unit%20dag/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
        "/tasks/generate/images/p00000-i00-0123456789ab.jpg?map_index=-1"
    )
    assert f"[![p00000\\-i00\\-0123456789ab\\.jpg]({url})]({url})" in body
    assert body.count("![") == 3  # 2 thumbnails, and the prompt's, inside a code span


def test_upstream_task_instance_is_the_one_the_manifest_records(tmp_path: Path) -> None:
    context = review_context()
    mapped = write_manifest(tmp_path, 1, task_id="other task", map_index=3)

    assert upstream_task_instance(context, loaded(write_manifest(tmp_path, 1))) == TaskInstanceId(
        dag_id="unit_dag", run_id=RUN_ID, task_id="generate"
    )
    assert upstream_task_instance(context, loaded(mapped)) == TaskInstanceId(
        dag_id="unit_dag", run_id=RUN_ID, task_id="other task", map_index=3
    )


@pytest.mark.parametrize(
    ("recorded", "message"),
    [
        ({"dag_id": "other_dag"}, "not of a task of this DAG run"),
        ({"run_id": "manual__other"}, "not of a task of this DAG run"),
        ({"task_id": "other task"}, "not where task other task stores its manifest"),
        ({"map_index": 2}, "not where task generate stores its manifest"),
    ],
)
def test_a_manifest_of_another_task_instance_is_refused(tmp_path: Path, recorded: dict[str, Any], message: str) -> None:
    owner = {"dag_id": "unit_dag", "run_id": RUN_ID, "task_id": "generate", "map_index": -1}
    uri = write_manifest(tmp_path, 1, task_instance={**owner, **recorded})

    with pytest.raises(AirflowFailException, match=message):
        upstream_task_instance(review_context(), loaded(uri))


def test_a_manifest_copied_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    original = Path(write_manifest(tmp_path, 1)[7:])
    copy = tmp_path / "elsewhere" / safe_segment(RUN_ID) / "generate" / "manifest.json"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(original.read_bytes())

    with pytest.raises(AirflowFailException, match="not where task generate stores its manifest"):
        upstream_task_instance(review_context(), loaded(copy.as_uri()))


def test_a_manifest_without_its_task_instance_is_refused_before_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_module.HITLOperator, "execute", lambda self, context: pytest.fail("asked"))
    uri = write_manifest(tmp_path, 1)
    path = Path(uri[7:])
    path.write_text(json.dumps({**json.loads(path.read_text()), "task_instance": None}))

    with pytest.raises(AirflowFailException, match=r"records no task instance.*run its image task again"):
        XaiReviewImagesOperator(task_id="review", manifest=uri).execute(review_context())


# -- limits ---------------------------------------------------------------------------------------------


def test_a_manifest_larger_than_the_cap_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_module, "MAX_MANIFEST_BYTES", 4096)
    uri = write_manifest(tmp_path, 1)
    Path(uri[7:]).write_bytes(b"{" + b" " * 4096)  # not JSON: parsing it would fail otherwise

    with pytest.raises(AirflowFailException, match=r"larger than .* MiB.*map the review"):
        XaiReviewImagesOperator(task_id="review", manifest=uri).execute(review_context())


def test_a_manifest_larger_than_a_form_is_refused_before_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []
    monkeypatch.setattr(review_module.HITLOperator, "execute", lambda self, context: asked.append(context))
    operator = XaiReviewImagesOperator(task_id="review", manifest=write_manifest(tmp_path, MAX_IMAGES_PER_REVIEW + 1))

    with pytest.raises(AirflowFailException, match=f"lists {MAX_IMAGES_PER_REVIEW + 1} images.*map the review"):
        operator.execute(review_context())
    assert asked == []


def test_the_form_lists_the_manifest_names_and_reject_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(review_module.HITLOperator, "execute", lambda self, context: "asked")
    uri = write_manifest(tmp_path, 3)
    operator = XaiReviewImagesOperator(task_id="review", manifest=uri)

    assert operator.execute(review_context()) == "asked"
    assert operator.options == [*names_of(uri), REJECT_ALL]
    assert operator.multiple is True
    assert operator.subject == "3 image(s) of generate wait for review"


@pytest.mark.parametrize(
    ("chosen", "message"),
    [(["p09999-i00-0123456789ab.jpg"], "does not list"), ([REJECT_ALL, "p00000-i00-0123456789ab.jpg"], "at once")],
)
def test_a_choice_the_manifest_does_not_allow_fails_clearly(tmp_path: Path, chosen: list[str], message: str) -> None:
    operator = XaiReviewImagesOperator(task_id="review", manifest=write_manifest(tmp_path, 2))

    with pytest.raises(AirflowFailException, match=message):
        operator.execute_complete(review_context(), response(chosen))
    assert not list(tmp_path.rglob(REVIEW_NAME))


@pytest.mark.parametrize("defaults", ["p00000-i00-0123456789ab.jpg", ["a", "b"]])
def test_defaults_other_than_reject_all_are_refused(defaults: Any) -> None:
    with pytest.raises(ValueError, match="defaults"):
        XaiReviewImagesOperator(task_id="review", manifest="x", defaults=defaults)


def test_options_are_not_arguments() -> None:
    with pytest.raises(ValueError, match="options"):
        XaiReviewImagesOperator(task_id="review", manifest="x", options=["a"])


# -- the decision ---------------------------------------------------------------------------------------


def test_a_decision_is_recorded_published_once_and_reused_by_a_second_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = write_manifest(tmp_path / "images", 3)
    names = names_of(uri)
    publish = tmp_path / "approved"
    operator = XaiReviewImagesOperator(task_id="review", manifest=uri, publish_uri=publish.as_uri() + "/")
    context = review_context()

    approved = operator.execute_complete(context, response([names[2], names[0]], "ok"))

    assert approved == [(publish / names[0]).as_uri(), (publish / names[2]).as_uri()]
    assert sorted(path.name for path in publish.iterdir()) == [names[0], names[2]]
    assert context["ti"].xcoms["rejected"] == [(Path(uri[7:]).parent / names[1]).as_uri()]
    decision = read_review(uri.rsplit("/", 1)[0])
    assert decision is not None
    assert (decision.approved, decision.rejected, decision.comment) == ([names[0], names[2]], [names[1]], "ok")
    assert decision.decided_by == {"id": "7", "name": "alice"}
    [(asset, extra)] = next(iter(context["outlet_events"].values())).added
    assert (asset.uri, extra) == (publish.as_uri(), {"images": 2})

    # Run again (a cleared task): the decision is reused, nothing is asked or copied again.
    monkeypatch.setattr(review_module.HITLOperator, "execute", lambda self, context: pytest.fail("asked again"))
    copied = []
    monkeypatch.setattr(review_module, "copy_whole", lambda *args: copied.append(args) or False)
    again = XaiReviewImagesOperator(task_id="review", manifest=uri, publish_uri=publish.as_uri() + "/")
    assert again.execute(review_context()) == approved
    assert len(copied) == 2  # asked, and answered "there already"


def test_reject_all_publishes_nothing_and_records_no_asset_event(tmp_path: Path) -> None:
    uri = write_manifest(tmp_path / "images", 2)
    publish = tmp_path / "approved"
    operator = XaiReviewImagesOperator(task_id="review", manifest=uri, publish_uri=publish.as_uri() + "/")
    context = review_context()

    assert operator.execute_complete(context, response([REJECT_ALL])) == []
    assert len(context["ti"].xcoms["rejected"]) == 2
    assert not publish.exists()
    assert not context["outlet_events"]
    assert read_review(uri.rsplit("/", 1)[0]).rejected == names_of(uri)  # type: ignore[union-attr]


def test_copy_whole_keeps_an_identical_copy_and_never_overwrites_other_bytes(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    source = jpeg_file(tmp_path / "a" / "image.jpg")
    target = ObjectStoragePath((tmp_path / "b" / "image.jpg").as_uri())
    digest = sha256(source.read_bytes())

    assert copy_whole(ObjectStoragePath(source.as_uri()), target, digest) is True
    assert copy_whole(ObjectStoragePath(source.as_uri()), target, digest) is False
    other = jpeg_file(tmp_path / "c" / "image.jpg", colour=(200, 0, 0))
    with pytest.raises(XaiStorageError, match="not overwritten"):
        copy_whole(ObjectStoragePath(other.as_uri()), target, sha256(other.read_bytes()))
    assert target.read_bytes() == source.read_bytes()
    assert [path.name for path in (tmp_path / "b").iterdir()] == ["image.jpg"]  # no staging file left
