"""What every image-storing operator shares: the output folder, the manifest, XCom and the Asset event."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator
from airflow.sdk import Asset

from airflow_provider_xai_image.budget import usd
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.storage import ImageStore, Manifest, RequestRecord, task_output_path

if TYPE_CHECKING:
    from airflow.sdk import Context


def asset_uri(output_uri: str) -> str:
    """The Asset URI of an output location: the URI without an Airflow connection id (``s3://conn@bucket``)."""
    parts = urllib.parse.urlsplit(output_uri)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _with_output_asset(kwargs: dict[str, Any], output_uri: Any) -> dict[str, Any]:
    """``kwargs`` with the output location as outlet, unless outlets are given or the URI is templated."""
    if "outlets" in kwargs or not isinstance(output_uri, str) or "{{" in output_uri:
        return kwargs
    return {**kwargs, "outlets": [Asset(asset_uri(output_uri))]}


class XaiImageOutputOperator(BaseOperator):
    """
    Base of the operators that store images under ``output_uri``.

    When ``outlets`` is not given and ``output_uri`` is not templated, the output location is the
    task's outlet Asset; each run records an Asset event with the image count and manifest URI.

    :param output_uri: Where images go: ``s3://<conn_id>@bucket/prefix/``, ``file:///path/``, any
        ObjectStoragePath URI (templated).
    :param xai_conn_id: The ``xai`` Airflow connection.
    """

    def __init__(self, *, output_uri: str, xai_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**_with_output_asset(kwargs, output_uri))
        self.output_uri = output_uri
        self.xai_conn_id = xai_conn_id

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:  # type: ignore[override]
        # A mapped task's kwargs already hold Airflow's default ``outlets=[]``, so the Asset is added here.
        return super().partial(**_with_output_asset(kwargs, kwargs.get("output_uri")))

    def image_store(self, context: Context, hook: XaiHook) -> ImageStore:
        """The store of this task instance (run, task and map index make its folder)."""
        ti = context["ti"]
        folder = task_output_path(self.output_uri, context["run_id"], ti.task_id, getattr(ti, "map_index", -1))
        return ImageStore(folder, hook)

    def parameters(self) -> dict[str, Any]:
        """The parameters recorded in the manifest (no secrets)."""
        return {"output_uri": self.output_uri, "xai_conn_id": self.xai_conn_id}

    def finish(
        self, context: Context, store: ImageStore, records: dict[int, RequestRecord], elapsed: float
    ) -> list[str]:
        """Write the manifest, push its URI to XCom ``manifest``, record the Asset event; return the image URIs."""
        manifest = Manifest.from_records(records.values(), elapsed_seconds=elapsed, parameters=self.parameters())
        manifest_uri = store.write_manifest(manifest)
        context["ti"].xcom_push(key="manifest", value=manifest_uri)
        totals = manifest.totals
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = {"images": totals["images"], "manifest": manifest_uri}
        self.log.info(
            "Stored %d image(s) (%d filtered, %d failed request(s)) for %d request(s) in %.1f s, cost %s; manifest %s",
            totals["images"],
            totals["filtered"],
            totals["failed_requests"],
            totals["requests"],
            elapsed,
            usd(totals["cost_usd_ticks"]),
            manifest_uri,
        )
        return manifest.image_uris


class XaiImageRequestOperator(XaiImageOutputOperator):
    """
    Base of the operators that send image requests: the parameters every request shares.

    :param n: Images per prompt, 1..10 (templated).
    :param model: Model id; default the connection's ``default_model`` (templated).
    :param aspect_ratio: One of ``1:1 16:9 9:16 4:3 3:4 3:2 2:3 2:1 1:2 19.5:9 9:19.5 20:9 9:20 auto``
        (templated).
    :param resolution: ``1k`` or ``2k`` (templated).
    :param quality: ``low``, ``medium`` or ``high``.
    """

    def __init__(
        self,
        *,
        n: int = 1,
        model: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.model = model
        self.aspect_ratio = aspect_ratio
        self.resolution = resolution
        self.quality = quality

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        if isinstance(self.n, str) and self.n.strip().isdigit():
            self.n = int(self.n)  # a templated n renders as text

    def request_parameters(self) -> dict[str, Any]:
        """The parameters of every request, as :meth:`XaiHook.build_request` takes them."""
        return {
            "model": self.model,
            "n": self.n,
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "quality": self.quality,
        }

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), **self.request_parameters()}
