"""Settings shared by the example DAGs: where images go, a check that a path holds an image, the demo's gallery."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import ObjectStoragePath, task

from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
from airflow_provider_xai_image.storage.image_checks import HEADER_BYTES, sniff_image_type

#: Where the examples store images: ``XAI_EXAMPLE_OUTPUT_URI`` (e.g. ``s3://aws_default@bucket/images/``),
#: else ``./demo-output/`` on the local file system.
OUTPUT_URI = os.environ.get("XAI_EXAMPLE_OUTPUT_URI") or (Path.cwd() / "demo-output").as_uri() + "/"


@task(multiple_outputs=False)  # a dict of counts is one value (Airflow < 3.1.6 refuses XCom keys with "/")
def check_images(uris: list) -> dict[str, int]:
    """Open every path from XCom (a list, or one list per mapped task) and check it is an image.

    :return: How many images of each type there are.
    """
    kinds: dict[str, int] = {}
    for uri in (uri for item in every_item(uris) for uri in ([item] if isinstance(item, str) else item)):
        mime_type = check_image(uri)
        kinds[mime_type] = kinds.get(mime_type, 0) + 1
    return kinds


def every_item(values: Sequence[Any]) -> list[Any]:
    """Every item of an XCom value: a list, or the lazy sequence Airflow passes for a mapped task's values.

    Taken as one slice, which Airflow fetches in one call: iterating the lazy sequence instead asks for one
    item past the end to find it, and Airflow's client logs that expected miss as an error ("XCom not found").

    :param values: The XCom value as the task received it.
    """
    return list(values[:])


def check_image(uri: str) -> str:
    """Open ``uri`` with ObjectStoragePath and fail unless it holds an image; return its mime type."""
    with ObjectStoragePath(uri).open("rb") as stream:
        image_type = sniff_image_type(stream.read(HEADER_BYTES))
    if image_type is None:
        raise ValueError(f"{uri} is not an image")
    return image_type.mime_type


#: Seconds between batch polls (short against the emulator, a minute against xAI).
POLL_INTERVAL = float(os.environ.get("XAI_EXAMPLE_POLL_INTERVAL", "60"))


#: Shown instead of a revised prompt: xAI no longer sends one (the manifest records null).
NO_REVISED_PROMPT = "no revised prompt from xAI"


def write_gallery(manifest_uris: list[str], folder: ObjectStoragePath) -> str:
    """Write ``index.html`` in ``folder``: per image a thumbnail, prompt, revised prompt (when xAI sent one) and
    cost, each edit beside its source images. Manifests are data: every value of theirs is escaped.

    :param manifest_uris: The manifests whose images the page shows.
    :param folder: Where ``index.html`` goes; images under it are linked by relative paths.
    :return: The URI of ``index.html``.
    """
    images: dict[str, dict[str, Any]] = {}
    sources_of: dict[str, list[str]] = {}
    total_ticks = 0
    for manifest_uri in manifest_uris:
        manifest = json.loads(ObjectStoragePath(manifest_uri).read_text())
        total_ticks += manifest["totals"]["cost_usd_ticks"]
        sources = (manifest.get("parameters") or {}).get("source_images") or []
        sources = [sources] if isinstance(sources, str) else sources  # the operator takes one URI or a list
        for image in manifest["images"]:
            if image["uri"]:
                images[image["uri"]] = image
                sources_of[image["uri"]] = list(sources)
    shown_beside_an_edit = {source for sources in sources_of.values() for source in sources}
    cards = []
    for uri, image in images.items():
        if sources_of[uri]:
            figures = [_source_figure(source, images.get(source), folder) for source in sources_of[uri]]
            cards.append(
                f'<article class="edit">{"".join(figures)}{_figure(uri, image, folder, role="edit")}</article>'
            )
        elif uri not in shown_beside_an_edit:
            cards.append(f"<article>{_figure(uri, image, folder)}</article>")
    page = GALLERY_PAGE.format(count=_text(len(images)), cost=_text(_usd(total_ticks)), cards="\n".join(cards))
    index = folder / "index.html"
    index.write_text(page)
    return str(index)


def _source_figure(uri: str, image: dict[str, Any] | None, folder: ObjectStoragePath) -> str:
    """A source image of an edit: with its caption when the gallery holds it, else its URI only."""
    if image is not None:
        return _figure(uri, image, folder, role="source")
    return f'<figure class="source">{_thumbnail(uri, folder)}<figcaption>source</figcaption></figure>'


def _figure(uri: str, image: dict[str, Any], folder: ObjectStoragePath, role: str = "image") -> str:
    """One image: its thumbnail and a caption of prompt, revised prompt, model, size and cost."""
    revised = image.get("revised_prompt")
    revised_html = f"<i>{_text(revised)}</i>" if revised else f'<span class="none">{_text(NO_REVISED_PROMPT)}</span>'
    details = f"{image['model']} · {image['bytes']:,} bytes · {_usd(image['cost_usd_ticks'])}"
    caption = f"{_text(role)}: <b>{_text(image['prompt'] or '')}</b><br>{revised_html}<br>{_text(details)}"
    return f'<figure class="{_text(role)}">{_thumbnail(uri, folder)}<figcaption>{caption}</figcaption></figure>'


def _thumbnail(uri: str, folder: ObjectStoragePath) -> str:
    """A linked thumbnail for an image under ``folder`` (by relative path); any other URI as text only, so
    that no value of a manifest becomes a link of its own choosing (``javascript:``, another site)."""
    base = str(folder).rstrip("/") + "/"
    if not uri.startswith(base):
        return f'<p class="none">not in this folder: {_text(uri)}</p>'
    path = _text(quote(uri[len(base) :]))
    return f'<a href="{path}"><img src="{path}" loading="lazy"></a>'


def _usd(ticks: int) -> str:
    return f"${ticks / USD_TICKS_PER_USD:.4f}"


def _text(value: object) -> str:
    """``value`` as HTML text, safe in element content and in quoted attributes."""
    return html.escape(str(value), quote=True)


GALLERY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>xAI images</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; background: #fafafa; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }}
article {{ display: flex; gap: .5rem; background: #fff; padding: .5rem; border-radius: 6px; }}
article {{ box-shadow: 0 1px 3px #0002; }}
article.edit {{ grid-column: span 2; }}
figure {{ flex: 1; margin: 0; }}
img {{ width: 100%; height: 200px; object-fit: cover; border-radius: 4px; }}
figcaption {{ font-size: .8rem; margin-top: .4rem; }}
.none {{ color: #888; }}
</style></head>
<body><h1>{count} images · total cost {cost}</h1><main>
{cards}
</main></body></html>
"""
