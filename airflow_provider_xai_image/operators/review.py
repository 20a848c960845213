"""XaiReviewImagesOperator: a person approves a manifest's images in the Airflow UI before they go on."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, conf
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import ObjectStoragePath, Param

from airflow_provider_xai_image.ledger.manifest import Manifest
from airflow_provider_xai_image.ledger.records import ImageRecord, TaskInstanceId
from airflow_provider_xai_image.ledger.review import ManifestUnderReview, ReviewDecision, read_review, review_path
from airflow_provider_xai_image.operators.base import task_instance_id
from airflow_provider_xai_image.operators.lineage import announce, with_output_alias
from airflow_provider_xai_image.operators.review_form import review_body
from airflow_provider_xai_image.storage.layout import MANIFEST_NAME, task_output_path
from airflow_provider_xai_image.storage.publishing import copy_whole, publish

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The option that rejects every image.
REJECT_ALL = "Reject all"
#: The most images one review form shows; map the review over shares of a larger job.
MAX_IMAGES_PER_REVIEW = 50
#: The largest manifest the review reads (ample for :data:`MAX_IMAGES_PER_REVIEW` images with their
#: errors and parameters): a larger one is refused before it is parsed.
MAX_MANIFEST_BYTES = 16 * 2**20
#: The form's one field besides the options: kept in ``review.json`` with the decision.
COMMENT_PARAM = "comment"
#: XCom key of the rejected images' URIs.
REJECTED_XCOM_KEY = "rejected"
#: The standard provider's HITLOperator takes ``response_timeout``; before that (the provider of Airflow
#: 3.1's day) its ``execution_timeout`` bounds the wait.
_HITL_ARGUMENTS = inspect.signature(HITLOperator.__init__).parameters
_TIMEOUT_ARGUMENT = "response_timeout" if "response_timeout" in _HITL_ARGUMENTS else "execution_timeout"


class XaiReviewImagesOperator(HITLOperator):
    """
    Wait for a person to approve the images of an upstream image task, in the Airflow UI's
    "required action" form; go on with the approved ones only.

    The form shows every stored image of ``manifest`` as a thumbnail (served by the gallery plugin, so
    the reviewer's own permissions on the DAG apply) with its name, prompt, model and cost. Its
    options are the images' names plus ``Reject all``; several may be chosen, and a comment may be
    added. The decision is kept in ``review.json`` beside the manifest (who, when, approved, rejected,
    comment) before anything is copied, so a task run again after the decision reuses it instead of
    asking again, and copies only what is missing.

    Returns the approved images' URIs (their copies under ``publish_uri`` when set, under the same
    names); XCom ``rejected`` holds the others' URIs. When an image passed, an Asset event on
    ``publish_uri`` (else the manifest's folder) carries the approved count; ``Reject all`` records none.

    A manifest with more than :data:`MAX_IMAGES_PER_REVIEW` images (or larger than
    :data:`MAX_MANIFEST_BYTES`) is refused before anyone is asked: map the review over the shares of a
    larger job. So is a manifest that is not its task instance's own (see :func:`upstream_task_instance`).

    :param manifest: The URI of an upstream image task's ``manifest.json``, typically
        ``XComArg(generate, key="manifest")`` (templated). The task must be of the same DAG run.
    :param publish_uri: Where approved images are copied (``s3://<conn_id>@bucket/prefix/``, any
        ObjectStoragePath URI; templated); None: they stay where they are. An image already there with
        other bytes is never overwritten: the task fails.
    :param defaults: What the response timeout chooses: ``Reject all``, or None (the task fails on
        timeout, as ``HITLOperator`` does).
    :param response_timeout: How long to wait for a decision (``HITLOperator``'s; with a standard provider
        older than ``response_timeout``, its ``execution_timeout``); None: no limit.
    :param kwargs: ``HITLOperator``'s ``notifiers`` and ``assigned_users``, and ``BaseOperator``'s.
    """

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "manifest", "publish_uri")
    ui_color = "#fdf1d6"

    #: Set by the operator from the manifest; not arguments.
    FIXED_ARGS = ("subject", "body", "options", "multiple", "params")

    def __init__(
        self,
        *,
        manifest: str,
        publish_uri: str | None = None,
        defaults: str | list[str] | None = None,
        response_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        for name in self.FIXED_ARGS:
            if name in kwargs:
                raise ValueError(f"{name}: XaiReviewImagesOperator sets it from the manifest; do not pass it.")
        if defaults not in (None, REJECT_ALL, [REJECT_ALL]):
            raise ValueError(f"defaults: {REJECT_ALL!r} or None (the task fails on timeout), not {defaults!r}")
        timeout: dict[str, Any] = {_TIMEOUT_ARGUMENT: response_timeout} if response_timeout else {}
        super().__init__(
            subject="Images wait for review",
            options=[REJECT_ALL],
            defaults=defaults,
            multiple=True,
            params={
                COMMENT_PARAM: Param(
                    None, type=["null", "string"], title="Comment", description="Kept with the decision."
                )
            },
            **timeout,
            **kwargs,
        )
        self.outlets = with_output_alias(self.outlets)
        self.manifest = manifest
        self.publish_uri = publish_uri

    # -- asking -----------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Reuse a decision recorded by an earlier run of this task; else show the form and wait."""
        found = self._load_manifest()
        decision = read_review(found.folder)
        if decision is not None and decision.review_task == task_instance_id(context).model_dump():
            self.log.info("Reusing the decision of %s recorded in %s", decision.decided_at, review_path(found.folder))
            return self._apply(context, found, decision)
        images = self._prepare_form(context, found)
        if not images:
            self.log.info("%s lists no stored image: nothing to review.", found.uri)
            context["ti"].xcom_push(key=REJECTED_XCOM_KEY, value=[])
            return []
        self.log.info("Asking for a review of %d image(s) of %s", len(images), found.uri)
        return super().execute(context)

    def _load_manifest(self) -> ManifestUnderReview:
        uri = self.manifest
        if not isinstance(uri, str) or not uri.endswith(f"/{MANIFEST_NAME}"):
            raise AirflowFailException(f"manifest: the URI of a {MANIFEST_NAME} (XCom 'manifest'), not {uri!r}")
        try:
            with ObjectStoragePath(uri).open("rb") as stream:
                data = stream.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise AirflowFailException(f"manifest: {uri} does not exist") from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise AirflowFailException(
                f"manifest: {uri} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB, more than a review of at most "
                f"{MAX_IMAGES_PER_REVIEW} images reads. Store the images in shares (mapped tasks) and map the "
                "review over their manifests."
            )
        return ManifestUnderReview(uri, Manifest.model_validate_json(data))

    def _prepare_form(self, context: Context, found: ManifestUnderReview) -> dict[str, ImageRecord]:
        """Set the options, subject and body from the manifest (before asking, and again on resuming, as
        the operator is built anew from the DAG file); return the images to review by name."""
        images = found.images
        if len(images) > MAX_IMAGES_PER_REVIEW:
            raise AirflowFailException(
                f"manifest: {found.uri} lists {len(images)} images; one review form shows at most "
                f"{MAX_IMAGES_PER_REVIEW}. Store the images in shares (mapped tasks) and map the review "
                "over their manifests."
            )
        upstream = upstream_task_instance(context, found)
        self.options = [*images, REJECT_ALL]
        self.subject = f"{len(images)} image(s) of {upstream.task_id} wait for review"
        self.body = review_body(conf.get("api", "base_url", fallback="") or "", upstream, images)
        return images

    # -- deciding ---------------------------------------------------------------------------------------

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Record the decision in ``review.json``, then publish the approved images."""
        found = self._load_manifest()
        images = self._prepare_form(context, found)
        chosen = list(event.get("chosen_options") or [])
        unknown = sorted(set(chosen) - set(self.options))
        if unknown:
            raise AirflowFailException(
                f"The reviewer chose {unknown}, which {found.uri} does not list; the options were its "
                f"{len(images)} image names and {REJECT_ALL!r}."
            )
        if REJECT_ALL in chosen and len(chosen) > 1:
            raise AirflowFailException(f"The reviewer chose {REJECT_ALL!r} and images at once: {chosen}")
        response = super().execute_complete(context, event)
        params_input = response.get("params_input") or {}
        decision = ReviewDecision(
            manifest=found.uri,
            review_task=task_instance_id(context).model_dump(),
            decided_by=dict(response["responded_by_user"]) if response.get("responded_by_user") else None,
            decided_at=response["responded_at"],
            timed_out=bool(event.get("timedout")),
            approved=[name for name in images if name in chosen],
            rejected=[name for name in images if name not in chosen],
            comment=params_input.get(COMMENT_PARAM) or None,
        )
        target = review_path(found.folder)
        publish(target.fs, target.path, data=decision.model_dump_json(indent=2).encode())
        self.log.info(
            "%s approved %d and rejected %d image(s); recorded in %s",
            (decision.decided_by or {}).get("name", "The response timeout"),
            len(decision.approved),
            len(decision.rejected),
            target,
        )
        return self._apply(context, found, decision)

    def _apply(self, context: Context, found: ManifestUnderReview, decision: ReviewDecision) -> list[str]:
        """Publish the approved images (those already published are kept), push the rejected URIs, record the
        Asset event; return the approved URIs."""
        images = found.images
        missing = sorted(set(decision.approved + decision.rejected) - set(images))
        if missing:
            raise AirflowFailException(f"{review_path(found.folder)} names images {found.uri} does not list: {missing}")
        approved = [images[name].uri or "" for name in decision.approved]
        if self.publish_uri and approved:
            approved = self._publish([images[name] for name in decision.approved])
        context["ti"].xcom_push(key=REJECTED_XCOM_KEY, value=[images[name].uri for name in decision.rejected])
        if approved:
            announce(context, self.publish_uri or found.folder, {"images": len(approved)})
        return approved

    def _publish(self, images: list[ImageRecord]) -> list[str]:
        folder = ObjectStoragePath(self.publish_uri or "")
        published = []
        copied = 0
        for image in images:
            source = ObjectStoragePath(image.uri or "")
            target = folder / source.name
            copied += copy_whole(source, target, image.sha256)
            published.append(str(target))
        self.log.info("Published %d approved image(s) to %s (%d there already)", copied, folder, len(images) - copied)
        return published


def upstream_task_instance(context: Context, found: ManifestUnderReview) -> TaskInstanceId:
    """The task instance that wrote the manifest, as the manifest records it, once checked to be a task
    of the review's DAG run whose manifest is where the provider stores that task instance's manifest
    (:func:`~airflow_provider_xai_image.storage.layout.task_output_path` of its recorded ``output_uri``).

    :param context: The review task's context.
    :param found: The manifest and its URI.
    :raises AirflowFailException: The manifest records no task instance (written by an earlier version
        of the provider), another DAG run's, or lies elsewhere.
    """
    recorded = found.manifest.task_instance
    if recorded is None:
        raise AirflowFailException(
            f"manifest: {found.uri} records no task instance (written by an earlier version of the provider); "
            "run its image task again: the manifest it writes records it, as the review requires."
        )
    review = task_instance_id(context)
    if (recorded.dag_id, recorded.run_id) != (review.dag_id, review.run_id):
        raise AirflowFailException(
            f"manifest: {found.uri} is the manifest of {recorded.dag_id} / {recorded.run_id} / {recorded.task_id}, "
            f"not of a task of this DAG run ({review.dag_id} / {review.run_id}); the review form shows the images "
            "of an upstream task's manifest only."
        )
    output_uri = found.manifest.parameters.get("output_uri")
    if not isinstance(output_uri, str):
        raise AirflowFailException(f"manifest: {found.uri} records no output_uri: where it belongs cannot be checked")
    try:
        location = task_output_path(output_uri, recorded.run_id, recorded.task_id, recorded.map_index)
    except Exception as error:
        raise AirflowFailException(
            f"manifest: {found.uri} records an output_uri that is no location: {error}"
        ) from error
    expected = str(location / MANIFEST_NAME)
    if expected != found.uri:
        raise AirflowFailException(
            f"manifest: {found.uri} is not where task {recorded.task_id} stores its manifest ({expected}); "
            "the review reads a task instance's own manifest only."
        )
    return recorded
