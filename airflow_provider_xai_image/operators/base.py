"""What every image-storing operator shares: the hook, the output folder, the manifest, XCom and the Asset event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.connection import DEFAULT_CONN_ID
from airflow_provider_xai_image.engine.budget import usd
from airflow_provider_xai_image.engine.generation import ByPrompt
from airflow_provider_xai_image.engine.sources import read_source_images
from airflow_provider_xai_image.engine.task_parameters import TaskParameters
from airflow_provider_xai_image.hooks.mixin import XaiHookMixin
from airflow_provider_xai_image.ledger.records import TaskInstanceId
from airflow_provider_xai_image.operators.lineage import (
    asset_uri,
    openlineage_datasets,
    report,
    storage_sources,
    with_output_alias,
)
from airflow_provider_xai_image.storage.image_store import ImageStore
from airflow_provider_xai_image.storage.layout import MANIFEST_XCOM_KEY, task_output_path

if TYPE_CHECKING:
    from airflow.sdk import Context


def task_instance_id(context: Context) -> TaskInstanceId:
    """The running task instance: what makes its output folder, and whose its manifest is.

    :param context: The task's context.
    """
    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    return TaskInstanceId(
        dag_id=ti.dag_id,
        run_id=context["run_id"],
        task_id=ti.task_id,
        map_index=-1 if map_index is None else map_index,
    )


class XaiImageOutputOperator(XaiHookMixin, BaseOperator):
    """
    Base of the operators that store images under ``output_uri``.

    Each run that stores images records an Asset event on the output location (through the outlet
    alias ``xai-image-output``) with the image count and manifest URI, and reports hook-level and
    OpenLineage lineage; outlets the user declares are kept as they are.

    :param output_uri: Where images go: ``s3://<conn_id>@bucket/prefix/``, ``file:///path/``, any
        ObjectStoragePath URI (templated).
    :param xai_conn_id: The ``xai`` Airflow connection (templated).
    """

    template_fields: Sequence[str] = ("output_uri", "xai_conn_id")

    def __init__(self, *, output_uri: str, xai_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outlets = with_output_alias(self.outlets)
        self.output_uri = output_uri
        self.xai_conn_id = xai_conn_id
        self._lineage: tuple[list[str], list[str]] = ([], [])

    def image_store(self, context: Context) -> ImageStore:
        """The store of this task instance (run, task and map index make its folder)."""
        TaskParameters.check(output_uri=self.output_uri)
        owner = task_instance_id(context)
        folder = task_output_path(self.output_uri, owner.run_id, owner.task_id, owner.map_index)
        return ImageStore(folder, self.hook)

    def parameters(self) -> dict[str, Any]:
        """The parameters recorded in the manifest (no secrets)."""
        return {"output_uri": self.output_uri, "xai_conn_id": self.xai_conn_id}

    def lineage_sources(self) -> list[str]:
        """The storage URIs this task read (source images of edits)."""
        return []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the source images read and the output folder written by this run."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self._lineage
        return OperatorLineage(inputs=openlineage_datasets(inputs), outputs=openlineage_datasets(outputs))

    def announces_output(self) -> bool:
        """Whether a run that stored images records an Asset event on the output location."""
        return True

    def finish(self, context: Context, store: ImageStore, elapsed: float) -> list[str]:
        """Write the manifest from the store's records (streamed), push its URI to XCom ``manifest``, record
        the Asset event; return the image URIs (the XCom value: not even built with ``do_xcom_push=False``,
        so that a task of 100,000 images holds nothing per image; downstream then reads the manifest).

        :param context: The task's context.
        :param store: The task instance's store, its records loaded.
        :param elapsed: The run's duration in seconds.
        """
        manifest_uri, totals = store.write_manifest(self.parameters(), elapsed, task_instance_id(context))
        uris = store.image_uris() if self.do_xcom_push else []
        store.close()
        context["ti"].xcom_push(key=MANIFEST_XCOM_KEY, value=manifest_uri)
        sources = self.lineage_sources()
        report(
            context,
            self.hook,
            output_uri=self.output_uri,
            folder_uri=str(store.folder),
            sources=sources,
            images=totals.images if self.announces_output() else 0,
            manifest_uri=manifest_uri,
        )
        self._lineage = (storage_sources(sources), [asset_uri(str(store.folder))])
        self.log.info(
            "Stored %d image(s) (%d filtered, %d failed request(s)) for %d request(s) in %.1f s, cost %s "
            "(possibly billed besides: %s); manifest %s",
            totals.images,
            totals.filtered,
            totals.failed_requests,
            totals.requests,
            elapsed,
            usd(totals.cost_usd_ticks),
            usd(totals.possibly_billed_usd_ticks),
            manifest_uri,
        )
        return uris


class XaiImageRequestOperator(XaiImageOutputOperator):
    """
    Base of the operators that send image requests: the parameters every request shares.

    :param n: Images per prompt, 1..10 (templated).
    :param model: Model id; default the connection's ``default_model`` (templated).
    :param aspect_ratio: One of ``1:1 16:9 9:16 4:3 3:4 3:2 2:3 2:1 1:2 19.5:9 9:19.5 20:9 9:20 auto``
        (templated).
    :param resolution: ``1k`` or ``2k`` (templated).
    :param quality: ``low`` or ``medium``, for ``grok-imagine-image-2.0``; sent only when set (templated).
    :param response_format: ``url`` (images downloaded from a temporary URL) or ``b64_json`` (inline).
    :param user: End-user id passed to xAI for abuse monitoring (templated).
    :param source_images: 1..3 images to edit: object-storage URIs (``s3://...``, ``file://...``), https
        URLs or ``data:image/...`` URIs; typically an upstream task's XCom (templated). PNG, JPEG or WebP,
        at most 10 MiB each.
    """

    template_fields: Sequence[str] = (
        *XaiImageOutputOperator.template_fields,
        "n",
        "model",
        "aspect_ratio",
        "resolution",
        "quality",
        "user",
        "response_format",
        "source_images",
    )

    def __init__(
        self,
        *,
        n: int = 1,
        model: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        response_format: str = "url",
        user: str | None = None,
        source_images: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.model = model
        self.aspect_ratio = aspect_ratio
        self.resolution = resolution
        self.quality = quality
        self.response_format = response_format
        self.user = user
        self.source_images = source_images

    def request_parameters(self) -> dict[str, Any]:
        """The parameters of every request, as recorded in the manifest."""
        return {
            "model": self.model,
            "n": self.n,
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "quality": self.quality,
            "response_format": self.response_format,
            "source_images": self.source_images,
        }

    def build_requests(self, prompts: Sequence[str]) -> Mapping[int, ImageRequest]:
        """Validate every parameter, read the source images, and return each prompt's request by index,
        built when asked for from one validated request (the prompts are checked already).

        :param prompts: The checked prompts (non-blank strings).
        """
        checked = TaskParameters.check(n=self.n, source_images=self.source_images)
        params = {**self.request_parameters(), "n": checked.n, "user": self.user, "source_images": None}
        template = self.hook.build_request(prompts[0], **params)  # every parameter checked before sources are read
        if checked.source_images:
            template = self.hook.build_request(
                prompts[0], **{**params, "source_images": read_source_images(checked.source_images)}
            )
        return ByPrompt(len(prompts), lambda index: template.model_copy(update={"prompt": prompts[index]}))

    def lineage_sources(self) -> list[str]:
        return TaskParameters.check(source_images=self.source_images).source_images or []

    def parameters(self) -> dict[str, Any]:
        # As sent: a templated n renders as text ("2"), one templated source as a string (not a list).
        checked = TaskParameters.check(n=self.n, source_images=self.source_images)
        sent = {"n": checked.n, "source_images": checked.source_images}
        return {**super().parameters(), **self.request_parameters(), **sent}
