"""What a task read and wrote, reported the Airflow way: hook-level lineage, OpenLineage datasets, and
Asset events on the output location (only when images exist).

Operators declare one :class:`~airflow.sdk.AssetAlias` as outlet; when a run stored images, the output
location's Asset is attached to it with the image count and the manifest URI. A task that stores
nothing (a batch submitted without waiting) emits no event, and outlets a user declared are left alone.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
from airflow.sdk import Asset, AssetAlias

#: The outlet alias every image-storing operator declares.
OUTPUT_ALIAS = AssetAlias("xai-image-output")


def asset_uri(uri: str) -> str:
    """The Asset URI of a storage location: the URI without an Airflow connection id (``s3://conn@bucket``)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def storage_sources(sources: Sequence[str] | None) -> list[str]:
    """The source images that live in storage (not https URLs or data URIs), as Asset URIs."""
    return [asset_uri(source) for source in sources or () if not source.startswith(("https://", "data:"))]


def with_output_alias(outlets: Sequence[Any] | None) -> list[Any]:
    """The outlets of an image operator: the user's own, plus the output alias."""
    outlets = list(outlets or [])
    return outlets if OUTPUT_ALIAS in outlets else [*outlets, OUTPUT_ALIAS]


def report(
    context: Any,
    hook: Any,
    *,
    output_uri: str,
    folder_uri: str,
    sources: Sequence[str] | None,
    images: int,
    manifest_uri: str,
) -> None:
    """Report a finished run: hook-level lineage (sources in, the task's folder out) and, when images
    were stored, an Asset event on the output location (``output_uri``) through the output alias."""
    collector = get_hook_lineage_collector()
    for source in storage_sources(sources):
        collector.add_input_asset(context=hook, uri=source)
    collector.add_output_asset(context=hook, uri=asset_uri(folder_uri))
    if images:
        announce(context, output_uri, {"images": images, "manifest": manifest_uri})


def announce(context: Any, location_uri: str, extra: dict[str, Any]) -> None:
    """Record an Asset event on a storage location (through the output alias).

    :param context: The task's context.
    :param location_uri: The storage location (its Airflow connection id is left out of the Asset).
    :param extra: The event's extra.
    """
    context["outlet_events"][OUTPUT_ALIAS].add(Asset(asset_uri(location_uri)), extra=extra)


def openlineage_datasets(uris: Sequence[str]) -> list[Any]:
    """OpenLineage datasets for storage URIs (namespace ``scheme://authority``, name the path)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    datasets = []
    for uri in uris:
        parts = urllib.parse.urlsplit(uri)
        namespace = f"{parts.scheme}://{parts.netloc}" if parts.netloc else parts.scheme
        datasets.append(Dataset(namespace=namespace, name=parts.path.lstrip("/") if parts.netloc else parts.path))
    return datasets
