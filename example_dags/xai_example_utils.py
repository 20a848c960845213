"""Settings shared by the example DAGs: where images go, and a check that a path holds an image."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

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
    for uri in (uri for item in uris for uri in ([item] if isinstance(item, str) else item)):
        mime_type = check_image(uri)
        kinds[mime_type] = kinds.get(mime_type, 0) + 1
    return kinds


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
    """Write ``index.html`` in ``folder``: a thumbnail, prompt, revised prompt (when xAI sent one) and cost
    per image."""
    cards = []
    total_ticks = 0
    for manifest_uri in manifest_uris:
        manifest = json.loads(ObjectStoragePath(manifest_uri).read_text())
        total_ticks += manifest["totals"]["cost_usd_ticks"]
        for image in manifest["images"]:
            if not image["uri"]:
                continue
            source = _relative_to(image["uri"], folder)
            revised = image.get("revised_prompt")
            revised_html = (
                f"<i>{html.escape(revised)}</i>" if revised else f'<span class="none">{NO_REVISED_PROMPT}</span>'
            )
            cards.append(
                f'<figure><a href="{html.escape(source)}"><img src="{html.escape(source)}" loading="lazy"></a>'
                f"<figcaption><b>{html.escape(image['prompt'] or '')}</b>"
                f"<br>{revised_html}"
                f"<br>{html.escape(image['model'])} · {image['bytes']:,} bytes · "
                f"${image['cost_usd_ticks'] / USD_TICKS_PER_USD:.4f}</figcaption></figure>"
            )
    page = GALLERY_PAGE.format(count=len(cards), cost=f"${total_ticks / USD_TICKS_PER_USD:.4f}", cards="\n".join(cards))
    index = folder / "index.html"
    index.write_text(page)
    return str(index)


def _relative_to(uri: str, folder: ObjectStoragePath) -> str:
    base = str(folder).rstrip("/") + "/"
    return uri[len(base) :] if uri.startswith(base) else uri


GALLERY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>xAI images</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; background: #fafafa; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; background: #fff; padding: .5rem; border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
img {{ width: 100%; height: 200px; object-fit: cover; border-radius: 4px; }}
figcaption {{ font-size: .8rem; margin-top: .4rem; }}
.none {{ color: #888; }}
</style></head>
<body><h1>{count} images · total cost {cost}</h1><main>
{cards}
</main></body></html>
"""
