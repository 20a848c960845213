"""The Airflow plugin (entry point ``airflow.plugins``): an "xAI images" tab on every task instance.

The tab is an external view with ``destination: "task_instance"``: the UI shows its ``href`` in an
iframe, after putting the task instance's DAG id, run id and task id in place of ``{DAG_ID}``,
``{RUN_ID}`` and ``{TASK_ID}``, and its map index in place of ``{MAP_INDEX}`` (left as is when the
task is not mapped; the app reads that as -1). The page comes from the gallery's FastAPI app,
mounted under :data:`URL_PREFIX` by the API server.

Every Airflow process that loads plugins imports this module (a task's start does, for macros and
listeners), so it stays light: the app is built, and the API server's modules imported, only when
the API server asks for the plugin's ``fastapi_apps``.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowPlugin, conf

#: Where the API server mounts the gallery's app (below ``[api] base_url``).
URL_PREFIX = "/xai-image-gallery"
#: The gallery page of a task instance, as the UI fills it in.
TASK_INSTANCE_HREF = "/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}/gallery?map_index={MAP_INDEX}"


def _base_path() -> str:
    """The path of ``[api] base_url`` (``""`` when Airflow is served at the root)."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


@cache
def _gallery_app() -> dict[str, Any]:
    """The plugin's one FastAPI app entry (built once: the API server mounts it, ``/api/v2/plugins`` lists it)."""
    from airflow_provider_xai_image.plugins.gallery_app import create_gallery_app

    return {"app": create_gallery_app(), "url_prefix": URL_PREFIX, "name": "xAI image gallery"}


class XaiImageGalleryPlugin(AirflowPlugin):
    """The images of a task instance of the provider's operators, as a gallery inside the Airflow UI."""

    name = "xai_image_gallery"
    external_views = [
        {
            "name": "xAI images",
            "href": f"{_base_path()}{URL_PREFIX}{TASK_INSTANCE_HREF}",
            "destination": "task_instance",
            "url_route": "xai_images",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]  # lazy, over a list attribute
        """The gallery's app, built on first use (by the API server only)."""
        return [_gallery_app()]
