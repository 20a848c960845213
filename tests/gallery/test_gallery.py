"""The gallery plugin in a real ``airflow api-server``: listed as a plugin, its page, manifest and
images served to a user who may read the DAG, and nothing to anyone else or outside the task's folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from gallery_support import GALLERY_PREFIX, SECRET, SECRET_NAME, GalleryRun
from support.auth_manager import OUTSIDER

pytestmark = pytest.mark.dag

ROUTES = ("gallery", "manifest", "images/{name}")


def manifest_of(gallery: GalleryRun, task_id: str, map_index: int = -1) -> tuple[Path, dict]:
    """The task instance's folder (where its XCom ``manifest`` points), and its manifest."""
    path = Path(urlsplit(gallery.result.xcom(task_id, key="manifest", map_index=map_index)).path)
    return path.parent, json.loads(path.read_bytes())


def image_names(manifest: dict) -> list[str]:
    """The file names of the images a manifest lists as stored."""
    return [image["uri"].rsplit("/", 1)[1] for image in manifest["images"] if image["uri"]]


def route_paths(gallery: GalleryRun, task_id: str = "generate") -> list[str]:
    """The page, manifest and first image of a task instance: what every access test asks for."""
    name = image_names(manifest_of(gallery, task_id)[1])[0]
    return [gallery.path(task_id, route.format(name=name)) for route in ROUTES]


def test_plugin_is_listed_with_its_app_and_task_instance_view(gallery: GalleryRun) -> None:
    response = gallery.get("/api/v2/plugins")
    assert response.status_code == 200, response.text
    plugins = {plugin["name"]: plugin for plugin in response.json()["plugins"]}
    plugin = plugins["xai_image_gallery"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == [GALLERY_PREFIX]
    [view] = plugin["external_views"]
    assert view["destination"] == "task_instance"
    assert view["url_route"] == "xai_images"
    assert view["href"] == (
        f"{GALLERY_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/tasks/{{TASK_ID}}/gallery?map_index={{MAP_INDEX}}"
    )
    errors = gallery.get("/api/v2/plugins/importErrors")
    assert errors.status_code == 200, errors.text
    assert errors.json()["import_errors"] == []


@pytest.mark.parametrize("query", ["", "?map_index=-1", f"?map_index={quote('{MAP_INDEX}')}"])
def test_gallery_page_shows_images_prompts_costs_moderation_and_totals(gallery: GalleryRun, query: str) -> None:
    """Also as the UI asks for an unmapped task instance: with ``{MAP_INDEX}`` left in the URL."""
    _, manifest = manifest_of(gallery, "generate")
    response = gallery.get(gallery.path("generate", "gallery") + query)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    page = response.text
    for name in image_names(manifest):
        assert f'<img src="images/{name}"' in page
    assert "A red &lt;b&gt;kite&lt;/b&gt; &amp; a blue sky" in page
    assert "<b>kite</b>" not in page
    revised = {image["revised_prompt"] for image in manifest["images"] if image["revised_prompt"]}
    assert revised
    for text in revised:
        assert text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    assert manifest["images"][0]["model"] in page
    assert page.count('class="badge passed"') == 4
    assert page.count('class="badge filtered"') == 2
    assert page.count("filtered by moderation") == 2
    totals = manifest["totals"]
    assert (totals["images"], totals["filtered"]) == (4, 2)
    assert f"<b>{totals['images']}</b> image(s)" in page
    assert f"<b>{totals['filtered']}</b> filtered" in page
    assert f"cost <b>${totals['cost_usd']:.4f}</b>" in page
    assert '<a href="manifest">manifest.json</a>' in page


def test_manifest_endpoint_answers_the_manifest(gallery: GalleryRun) -> None:
    _, manifest = manifest_of(gallery, "generate")
    response = gallery.get(gallery.path("generate", "manifest"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == manifest


def test_images_stream_with_their_type_and_exact_bytes(gallery: GalleryRun) -> None:
    folder, manifest = manifest_of(gallery, "generate")
    stored = [image for image in manifest["images"] if image["uri"]]
    assert len(stored) == 4
    for image in stored:
        name = image["uri"].rsplit("/", 1)[1]
        response = gallery.get(gallery.path("generate", f"images/{name}"))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == image["mime_type"]
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (folder / name).read_bytes()
        assert hashlib.sha256(response.content).hexdigest() == image["sha256"]
        assert len(response.content) == image["bytes"]


def test_the_ui_cookie_authenticates_like_a_bearer_token(gallery: GalleryRun) -> None:
    """The UI's iframe sends the JWT as the ``_token`` cookie, not as a header."""
    for path in route_paths(gallery):
        response = gallery.get(path, user=None, cookies={"_token": gallery.tokens["reader"]})
        assert response.status_code == 200, (path, response.text)


def test_mapped_task_instances_each_show_their_own_images(gallery: GalleryRun) -> None:
    for map_index in (0, 1):
        folder, manifest = manifest_of(gallery, "mapped", map_index)
        assert folder.name == f"map-{map_index}"
        names = image_names(manifest)
        assert names
        page = gallery.get(gallery.path("mapped", "gallery", map_index=map_index))
        assert page.status_code == 200, page.text
        for name in names:
            assert f'<img src="images/{name}?map_index={map_index}"' in page.text
            image = gallery.get(gallery.path("mapped", f"images/{name}", map_index=map_index))
            assert image.content == (folder / name).read_bytes()
        assert gallery.get(gallery.path("mapped", "manifest", map_index=map_index)).json() == manifest
        other = image_names(manifest_of(gallery, "mapped", 1 - map_index)[1])[0]
        assert gallery.get(gallery.path("mapped", f"images/{other}", map_index=map_index)).status_code == 404
    assert gallery.get(gallery.path("mapped", "manifest", map_index=7)).status_code == 404
    assert gallery.get(gallery.path("mapped", "manifest") + "?map_index=-2").status_code == 422


def test_a_task_without_manifest_gets_a_page_saying_so_and_404s(gallery: GalleryRun) -> None:
    page = gallery.get(gallery.path("no_images", "gallery"))
    assert page.status_code == 404
    assert "no image manifest" in page.text
    assert gallery.get(gallery.path("no_images", "manifest")).status_code == 404
    assert gallery.get(gallery.path("no_images", "images/x.jpg")).status_code == 404


def test_no_credentials_get_401(gallery: GalleryRun) -> None:
    for path in route_paths(gallery):
        response = gallery.get(path, user=None)
        assert response.status_code == 401, (path, response.text)


def test_a_user_who_may_not_read_the_dag_gets_403(gallery: GalleryRun) -> None:
    for path in route_paths(gallery):
        response = gallery.get(path, user=OUTSIDER)
        assert response.status_code == 403, (path, response.text)
    # As from Airflow's own API for the same task instance ...
    run_id = quote(gallery.result.run_id, safe="")
    own = gallery.get(f"/api/v2/dags/xai_gallery_test/dagRuns/{run_id}/taskInstances/generate", user=OUTSIDER)
    assert own.status_code == 403
    # ... while the check is per DAG: another DAG's gallery passes it (and has no manifest).
    other_dag = gallery.get(gallery.path("generate", "manifest", dag_id="another_dag"), user=OUTSIDER)
    assert other_dag.status_code == 404


def test_nothing_outside_the_task_instance_images_is_served(gallery: GalleryRun) -> None:
    folder, _ = manifest_of(gallery, "generate")
    other_folder, other_manifest = manifest_of(gallery, "other")
    other_name = image_names(other_manifest)[0]
    secret = gallery.output / SECRET_NAME
    base = gallery.path("generate", "images/")
    crafted = [
        "manifest.json",
        "_records",
        "p99999-i00-000000000000.jpg",
        other_name,
        quote(f"../other/{other_name}", safe=""),
        quote(f"../../{SECRET_NAME}", safe=""),
        f"..%2F..%2F{SECRET_NAME}",
        "%2E%2E%2F%2E%2E%2F" + SECRET_NAME,
        "%2E%2E",
        quote(str(secret), safe=""),
        str(secret).lstrip("/"),
        "/" + str(secret),
        quote(secret.as_uri(), safe=""),
        quote(str(other_folder / other_name), safe=""),
    ]
    for name in crafted:
        status, body = gallery.get_raw(base + name)
        assert status == 404, (name, body[:200])
        assert SECRET not in body
        assert not body.startswith(b"\xff\xd8")
    assert (folder / "manifest.json").exists()
    assert (other_folder / other_name).exists()
