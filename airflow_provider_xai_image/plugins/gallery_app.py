"""The gallery's FastAPI app (mounted by the API server under the plugin's URL prefix).

Routes, under ``/dags/{dag_id}/runs/{run_id}/tasks/{task_id}`` with an optional ``?map_index=``:

* ``GET .../gallery``: the HTML page, :data:`~airflow_provider_xai_image.plugins.gallery_page.CARDS_PER_PAGE`
  images a page (``?page=``, from 1); 404 with a short page when the task instance has no manifest the
  gallery shows (see :mod:`~airflow_provider_xai_image.plugins.task_manifest`);
* ``GET .../manifest``: the manifest as JSON (as validated);
* ``GET .../images/{name}``: an image the manifest lists, streamed in chunks from storage with its
  type as Content-Type.

Every route requires that Airflow's auth manager lets the user read the DAG's task instances
(Airflow's own ``requires_access_dag`` dependency: 401 without credentials, 403 without access), with
the JWT of a ``Authorization: Bearer`` header or of the UI's cookie. Every answer carries
:data:`SECURITY_HEADERS`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, StreamingResponse

from airflow_provider_xai_image.ledger.records import TaskInstanceId
from airflow_provider_xai_image.ledger.review import read_review
from airflow_provider_xai_image.plugins.gallery_page import render_gallery, render_no_manifest
from airflow_provider_xai_image.plugins.manifest_index import ManifestIndex
from airflow_provider_xai_image.plugins.task_manifest import (
    ManifestRefused,
    load_task_manifest,
    open_image,
)

#: What the UI leaves in an external view's href for a task instance that is not mapped.
MAP_INDEX_PLACEHOLDER = "{MAP_INDEX}"
_MAP_INDEX = re.compile(r"-1|[0-9]{1,10}")
#: The largest map index (the database's integer column).
MAX_MAP_INDEX = 2**31 - 1
#: The page has no script, no form, no base; it shows images of its own origin only, and only inside
#: Airflow's UI.
PAGE_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
    "form-action 'none'; base-uri 'none'"
)
#: On every answer: no type sniffing, no Referer with the task instance's URL sent anywhere.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
#: The last page number asked for that is accepted (far beyond any manifest the gallery reads).
MAX_PAGE = 10**6
#: Images are private to users who may read the DAG: never kept by shared caches.
IMAGE_CACHE_CONTROL = "private, max-age=300"


def map_index_param(
    map_index: Annotated[
        str, Query(description="Map index of a mapped task instance; -1 (default) when the task is not mapped.")
    ] = "-1",
) -> int:
    """The map index of the request: an integer >= -1, or the UI's unreplaced placeholder (not mapped).

    :param map_index: The ``map_index`` query parameter.
    """
    if map_index == MAP_INDEX_PLACEHOLDER:
        return -1
    if not _MAP_INDEX.fullmatch(map_index) or int(map_index) > MAX_MAP_INDEX:
        raise HTTPException(422, f"map_index must be an integer from -1 to {MAX_MAP_INDEX}")
    return int(map_index)


def task_instance_param(
    dag_id: str, run_id: str, task_id: str, map_index: Annotated[int, Depends(map_index_param)]
) -> TaskInstanceId:
    """The task instance a request is about.

    :param dag_id: The DAG (path).
    :param run_id: The DAG run (path).
    :param task_id: The task (path).
    :param map_index: The map index (query).
    """
    return TaskInstanceId(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)


TaskInstanceDep = Annotated[TaskInstanceId, Depends(task_instance_param)]


def task_manifest_param(task: TaskInstanceDep, session: SessionDep) -> ManifestIndex:
    """The task instance's manifest, or a 404.

    :param task: The task instance.
    :param session: A session of Airflow's metadata database.
    """
    try:
        found = load_task_manifest(session, task)
    except ManifestRefused as refused:
        raise HTTPException(status.HTTP_404_NOT_FOUND, refused.message) from refused
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "This task instance has no image manifest.")
    return found


ManifestDep = Annotated[ManifestIndex, Depends(task_manifest_param)]

router = APIRouter(
    prefix="/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))],
)


@router.get("/gallery", response_class=HTMLResponse)
def gallery(
    task: TaskInstanceDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="The page of images, from 1.")] = 1,
) -> HTMLResponse:
    """The task instance's images as an HTML gallery, one page of them.

    :param task: The task instance.
    :param session: A session of Airflow's metadata database.
    :param page: Which page.
    """
    headers = {"Content-Security-Policy": PAGE_SECURITY_POLICY}
    try:
        found = load_task_manifest(session, task)
    except ManifestRefused as refused:
        return HTMLResponse(render_no_manifest(task, refused.message), status.HTTP_404_NOT_FOUND, headers)
    if found is None:
        return HTMLResponse(render_no_manifest(task), status.HTTP_404_NOT_FOUND, headers)
    return HTMLResponse(render_gallery(task, found, page, read_review(found.folder)), headers=headers)


@router.get("/manifest", response_class=StreamingResponse)
def manifest(found: ManifestDep) -> StreamingResponse:
    """The task instance's ``manifest.json`` (what of it was validated), streamed.

    :param found: The task instance's manifest.
    """
    return StreamingResponse(found.json_chunks(), media_type="application/json")


@router.get("/images/{name}")
def image(name: str, found: ManifestDep) -> StreamingResponse:
    """One image the task instance's manifest lists, looked up by ``name``, streamed from storage.

    :param name: The image's file name, as listed in the manifest.
    :param found: The task instance's manifest.
    """
    uri = found.image_uri(name)
    opened = open_image(uri) if uri else None
    if opened is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No image {name!r} in this task instance's manifest.")
    image_type, chunks = opened
    return StreamingResponse(
        chunks,
        media_type=image_type.mime_type,
        headers={"Cache-Control": IMAGE_CACHE_CONTROL},
    )


def create_gallery_app() -> FastAPI:
    """The gallery's FastAPI app (no OpenAPI docs of its own: every route needs DAG access)."""
    app = FastAPI(title="xAI image gallery", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    app.middleware("http")(_add_security_headers)
    return app


async def _add_security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    return response
