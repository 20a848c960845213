"""A reviewer's decision on a manifest's images: ``review.json``, written beside the manifest.

:class:`ReviewDecision` is its format; the review operator writes it (whole, before anything is
published), and the gallery reads it to show each image's review status. :class:`ManifestUnderReview`
is the manifest as the review operator reads it (a few dozen images, parsed whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel, Field

from airflow_provider_xai_image.ledger.manifest import Manifest
from airflow_provider_xai_image.ledger.records import ImageRecord
from airflow_provider_xai_image.storage.layout import name_in_folder

#: The decision's file name, in the folder of the manifest it is about.
REVIEW_NAME = "review.json"


@dataclass(frozen=True)
class ManifestUnderReview:
    """The manifest whose images are reviewed, and the URI it was read from.

    :param uri: The manifest's URI (``<task instance folder>/manifest.json``).
    :param manifest: Its content.
    """

    uri: str
    manifest: Manifest

    @property
    def folder(self) -> str:
        """The upstream task instance's output folder: the manifest's."""
        return self.uri.rpartition("/")[0]

    @property
    def images(self) -> dict[str, ImageRecord]:
        """The stored images the manifest lists directly in :attr:`folder`, by name, in its order."""
        images = {}
        for image in self.manifest.images:
            name = name_in_folder(image.uri, self.folder)
            if name is not None:
                images[name] = image
        return images


class ReviewDecision(BaseModel):
    """Who decided which images of a manifest pass, when, and why.

    :param manifest: The URI of the manifest reviewed.
    :param review_task: The review task instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``).
    :param decided_by: The reviewer as Airflow reports them (``id``, ``name``); None when the response
        timeout chose the defaults.
    :param decided_at: When the decision was made (UTC).
    :param timed_out: The response timeout chose the defaults.
    :param approved: The names of the images that passed, in the manifest's order.
    :param rejected: The names of the others.
    :param comment: The reviewer's comment, if any.
    """

    manifest: str
    review_task: dict[str, Any]
    decided_by: dict[str, Any] | None
    decided_at: datetime
    timed_out: bool = False
    approved: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    comment: str | None = None

    def status(self, name: str) -> Literal["approved", "rejected"] | None:
        """The review status of the image ``name`` (None when the decision does not name it).

        :param name: An image's file name.
        """
        if name in self.approved:
            return "approved"
        if name in self.rejected:
            return "rejected"
        return None


def review_path(manifest_folder: str) -> ObjectStoragePath:
    """Where the decision on the manifest in ``manifest_folder`` is kept.

    :param manifest_folder: The URI of the manifest's folder.
    """
    return ObjectStoragePath(f"{manifest_folder.rstrip('/')}/{REVIEW_NAME}")


def read_review(manifest_folder: str) -> ReviewDecision | None:
    """The decision on the manifest in ``manifest_folder``, or None when none was recorded.

    :param manifest_folder: The URI of the manifest's folder.
    """
    try:
        data = review_path(manifest_folder).read_bytes()
    except FileNotFoundError:
        return None
    return ReviewDecision.model_validate_json(data)
