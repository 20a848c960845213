"""The example DAGs run with ``airflow dags test`` against the emulator, storing to moto S3, and the
``make demo`` script (``example_dags/run_demo.py``) run end to end in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from operators_support import IMAGE_NAME, JPEG_MAGIC, conn_env
from support.dag_runner import DEFAULT_PYCACHE_PREFIX

from airflow_provider_xai_image.testing import XaiEmulator

pytestmark = pytest.mark.dag

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

#: dag id -> (expected task states, images stored, XCom return values that list images). Not here:
#: xai_review_images, whose review waits for a person; tests/review runs it with Airflow's services.
EXAMPLES: dict[str, tuple[dict[str, str], int, list[tuple[str, int]]]] = {
    "xai_generate_images": (
        {
            "generate": "success",
            "check_images": "success",
            **{f"edit[{index}]": "success" for index in range(6)},
            "check_edits": "success",
            "gallery": "success",
        },
        12,  # 3 prompts x 2, then one edit of each
        [("generate", -1), *(("edit", index) for index in range(6))],
    ),
    "xai_generate_mapped": (
        {
            **{f"by_prompt[{index}]": "success" for index in range(3)},
            **{f"by_kwargs[{index}]": "success" for index in range(2)},
            "count_by_prompt": "success",
            "count_by_kwargs": "success",
        },
        6,  # 3 prompts x 1, then 1 + 2
        [*(("by_prompt", index) for index in range(3)), *(("by_kwargs", index) for index in range(2))],
    ),
    "xai_generate_deferrable": (
        {"generate": "success", "check_images": "success"},
        6,
        [("generate", -1)],
    ),
}


def example_folder(tmp_path: Path, dag_id: str) -> Path:
    """A DAGS_FOLDER with the example DAG, the helper module it imports and the .airflowignore."""
    folder = tmp_path / "dags"
    folder.mkdir()
    for name in (f"{dag_id}.py", "xai_example_utils.py", ".airflowignore"):
        shutil.copy2(EXAMPLE_DAGS / name, folder / name)
    return folder


@pytest.fixture(scope="module", params=list(EXAMPLES))
def example_run(
    request: pytest.FixtureRequest, dag_runner: Any, moto_s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """One ``airflow dags test`` of an example DAG against a fresh emulator, writing to a fresh bucket."""
    dag_id = request.param
    bucket = moto_s3.create_bucket("examples")
    output_uri = f"s3://aws_moto@{bucket}/examples/"
    with XaiEmulator() as emulator:
        result = dag_runner.run(
            example_folder(tmp_path_factory.mktemp(dag_id), dag_id),
            dag_id=dag_id,
            env={
                **conn_env("xai_default", emulator),
                "XAI_EXAMPLE_OUTPUT_URI": output_uri,
                "XAI_EXAMPLE_POLL_INTERVAL": "1",
            },
            check=False,
        )
        yield SimpleNamespace(dag_id=dag_id, result=result, emulator=emulator, bucket=bucket, output_uri=output_uri)


def test_example_dag_runs_against_the_emulator_into_s3(example_run: SimpleNamespace, moto_s3: Any) -> None:
    dag_id, result, emulator, bucket = example_run.dag_id, example_run.result, example_run.emulator, example_run.bucket
    expected_states, image_count, image_xcoms = EXAMPLES[dag_id]

    result.assert_success()
    assert result.task_states == expected_states
    images = [key for key in moto_s3.keys(bucket, "examples/") if key.endswith(".jpg")]
    assert len(images) == image_count
    for key in images:
        assert IMAGE_NAME.match(key.rsplit("/", 1)[-1])
        assert moto_s3.get_bytes(bucket, key)[:3] == JPEG_MAGIC
    from_xcom = [uri for task_id, index in image_xcoms for uri in result.xcom(task_id, map_index=index)]
    assert sorted(from_xcom) == sorted(f"s3://aws_moto@{bucket}/{key}" for key in images)
    assert emulator.images_billed == image_count
    assert emulator.api_key not in result.output
    assert emulator.api_key not in json.dumps([str(value) for value in result.xcoms.values()])

    if dag_id == "xai_generate_images":
        assert result.xcom("check_images") == {"image/jpeg": 6}
        assert result.xcom("check_edits") == {"image/jpeg": 6}
        assert result.xcom("gallery") == f"{example_run.output_uri}index.html"
        page = moto_s3.get_bytes(bucket, "examples/index.html").decode()
        for key in images:
            assert key.removeprefix("examples/") in page
    else:
        counts = [
            value
            for (task_id, _, key), value in result.xcoms.items()
            if key == "return_value" and task_id.startswith(("count", "check"))
        ]
        assert sum(count["image/jpeg"] for count in counts) == image_count


def test_example_dag_records_an_asset_event_per_image_task_instance(example_run: SimpleNamespace) -> None:
    """Every task instance storing images (mapped ones too) records an event for the output location.

    Fails for the mapped tasks (``edit`` of xai_generate_images, ``by_prompt``/``by_kwargs`` of
    xai_generate_mapped): see test_generate_unit.py::test_mapped_operator_has_the_output_location_as_outlet.
    """
    result = example_run.result
    _, _, image_xcoms = EXAMPLES[example_run.dag_id]
    events = {(event.source_task_id, event.source_map_index): event for event in example_run.result.asset_events}
    expected = {
        (task_id, index): {
            "images": len(result.xcom(task_id, map_index=index)),
            "manifest": result.xcom(task_id, key="manifest", map_index=index),
        }
        for task_id, index in image_xcoms
    }
    assert {key: event.extra for key, event in events.items()} == expected
    assert {event.asset_uri for event in events.values()} == {f"s3://{example_run.bucket}/examples"}


def test_make_demo_writes_a_gallery_of_every_image(tmp_path: Path) -> None:
    """``make demo``: run_demo.py from a fresh directory, with no Airflow settings of the test session."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    for key in ("XAI_API_KEY", "XAI_DEMO_REAL_API", "XAI_EXAMPLE_OUTPUT_URI"):
        env.pop(key, None)
    # Keep bytecode of the example DAGs out of the source tree (and reuse the session's cache).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(DEFAULT_PYCACHE_PREFIX)

    proc = subprocess.run(
        [sys.executable, str(EXAMPLE_DAGS / "run_demo.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20_000:]
    out_dir = tmp_path / "demo-output"
    gallery = out_dir / "index.html"
    assert f"Gallery: {gallery.as_uri()}" in proc.stdout
    assert "Started the xAI emulator at http://127.0.0.1:" in proc.stdout
    assert gallery.is_file()
    page = gallery.read_text()

    manifests = sorted(out_dir.rglob("manifest.json"))
    assert len(manifests) == 7  # generate, and one per mapped edit
    image_uris = [
        image["uri"] for path in manifests for image in json.loads(path.read_text())["images"] if image["uri"]
    ]
    assert len(image_uris) == 12
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(image_uris)
    for uri in image_uris:
        relative = uri.removeprefix(out_dir.as_uri() + "/")
        assert relative != uri
        assert relative in sources
        assert (out_dir / relative).read_bytes()[:3] == JPEG_MAGIC
    assert f"<h1>{len(image_uris)} images" in page
    # xAI sends no revised prompts any more: the manifests say null and the gallery says so
    assert all(
        image["revised_prompt"] is None for path in manifests for image in json.loads(path.read_text())["images"]
    )
    assert page.count("no revised prompt from xAI") == len(image_uris)
    # each edit beside its source, which has no card of its own
    cards = [re.findall(r'<img src="([^"]+)"', card) for card in re.findall(r"<article.*?</article>", page, re.S)]
    edits = [json.loads(path.read_text()) for path in manifests if path.parent.parent.name == "edit"]
    assert sorted(cards) == sorted(
        [
            *[source.removeprefix(out_dir.as_uri() + "/") for source in edit["parameters"]["source_images"]],
            edit["images"][0]["uri"].removeprefix(out_dir.as_uri() + "/"),
        ]
        for edit in edits
    )
    # a successful demo logs no error (Airflow logs one when a task iterates a mapped task's XComs to their end)
    assert not re.search(r"\[(error|critical) *\]", output), output[-20_000:]


def test_gallery_shows_a_revised_prompt_only_when_xai_sent_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE_DAGS))
    from airflow.sdk import ObjectStoragePath
    from xai_example_utils import NO_REVISED_PROMPT, write_gallery

    def image(index: int, revised: str | None) -> dict[str, Any]:
        return {
            "uri": f"{tmp_path.as_uri()}/run/p00000-i{index:02d}-0123456789ab.jpg",
            "prompt": "A <red> kite",
            "revised_prompt": revised,
            "model": "grok-imagine-image-quality",
            "bytes": 1234,
            "cost_usd_ticks": 500_000_000,
        }

    manifest = tmp_path / "manifest.json"
    images = [image(0, None), image(1, ""), image(2, "A red kite & a blue sky")]
    manifest.write_text(json.dumps({"images": images, "totals": {"cost_usd_ticks": 1_500_000_000}}))

    index = write_gallery([manifest.as_uri()], ObjectStoragePath(tmp_path.as_uri()))

    page = Path(index.removeprefix("file://")).read_text()
    assert re.findall(r'<img src="([^"]+)"', page) == [f"run/p00000-i{i:02d}-0123456789ab.jpg" for i in range(3)]
    assert page.count(NO_REVISED_PROMPT) == 2
    assert "<i>A red kite &amp; a blue sky</i>" in page
    assert "A &lt;red&gt; kite" in page
    assert "<h1>3 images · total cost $0.1500</h1>" in page


def test_gallery_shows_an_edit_beside_its_source_and_escapes_every_manifest_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE_DAGS))
    from airflow.sdk import ObjectStoragePath
    from xai_example_utils import write_gallery

    def manifest(name: str, uri: str, sources: list[str] | str | None) -> str:
        image = {
            "uri": uri,
            "prompt": '<script>alert("prompt")</script>',
            "revised_prompt": "<img src=x onerror=alert(1)>",
            "model": '"><script>alert("model")</script>',
            "bytes": 1234,
            "cost_usd_ticks": 500_000_000,
        }
        path = tmp_path / name
        document = {"images": [image], "totals": {"cost_usd_ticks": 500_000_000}}
        path.write_text(json.dumps({**document, "parameters": {"source_images": sources}}))
        return path.as_uri()

    source = f"{tmp_path.as_uri()}/gen/a.jpg"
    manifests = [
        manifest("generated.json", source, None),
        manifest("edit.json", f"{tmp_path.as_uri()}/edit/javascript:alert(1).jpg", source),
        manifest("elsewhere.json", f"{tmp_path.as_uri()}/edit/b.jpg", ["javascript:alert(2)", source]),
    ]

    page = Path(write_gallery(manifests, ObjectStoragePath(tmp_path.as_uri())).removeprefix("file://")).read_text()

    cards = [re.findall(r'<img src="([^"]+)"', card) for card in re.findall(r"<article.*?</article>", page, re.S)]
    assert cards == [["gen/a.jpg", "edit/javascript%3Aalert%281%29.jpg"], ["gen/a.jpg", "edit/b.jpg"]]
    assert "not in this folder: javascript:alert(2)" in page
    assert "<script" not in page
    assert "<img src=x" not in page
    assert 'href="javascript' not in page
    assert page.count("&lt;script&gt;alert(&quot;prompt&quot;)&lt;/script&gt;") == 4  # 2 cards: 2 + 2 figures
    assert page.count("&quot;&gt;&lt;script&gt;alert(&quot;model&quot;)&lt;/script&gt;") == 4
    assert "<h1>3 images · total cost $0.1500</h1>" in page
