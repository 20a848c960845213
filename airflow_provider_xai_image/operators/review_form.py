"""The review form's Markdown body: each image of a manifest as a thumbnail with its name, prompt, model
and cost.

The form is data, not markup: every value from the manifest is written as an inline code span (its
text exactly, line breaks folded), or, where Markdown allows no code span (an image's alt text), with
each ASCII punctuation character backslash-escaped; so a prompt cannot add a link, an image, HTML or
structure. (A code span also keeps the UI from turning a URL in a prompt into a link: its Markdown
renderer links URLs found in plain text, escaped or not.) The only images are the thumbnails, served
by the gallery plugin's image route under ``[api] base_url``: the reviewer's browser sends its
Airflow session, so the reviewer's own permissions on the upstream DAG apply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from airflow_provider_xai_image.engine.budget import usd
from airflow_provider_xai_image.ledger.records import ImageRecord, TaskInstanceId
from airflow_provider_xai_image.plugins.gallery_plugin import URL_PREFIX

_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BACKTICKS = re.compile(r"`+")


def _one_line(value: object) -> str:
    return " ".join(_CONTROL.sub(" ", str(value)).split())


def markdown_text(value: object) -> str:
    """``value`` as Markdown that renders as exactly its text: one line, every ASCII punctuation
    character (Markdown's and HTML's metacharacters among them) backslash-escaped.

    :param value: Any value; written as ``str(value)``.
    """
    return _ASCII_PUNCTUATION.sub(r"\\\1", _one_line(value))


def markdown_code(value: object) -> str:
    """``value`` as a Markdown inline code span: its text exactly (one line), nothing in it interpreted.

    :param value: Any value; written as ``str(value)``.
    """
    text = _one_line(value)
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    return f"{fence} {text} {fence}"  # CommonMark strips one space on each side


def image_url(base_url: str, task: TaskInstanceId, name: str) -> str:
    """The gallery plugin's URL of one image of a task instance, every part percent-encoded.

    :param base_url: ``[api] base_url`` (may be empty: the URL is then relative to the UI's host).
    :param task: The task instance that stored the image.
    :param name: The image's file name, as the manifest lists it.
    """
    segments = ("dags", task.dag_id, "runs", task.run_id, "tasks", task.task_id, "images", name)
    path = "/".join(quote(segment, safe="") for segment in segments)
    return f"{base_url.rstrip('/')}{URL_PREFIX}/{path}?{urlencode({'map_index': task.map_index})}"


def review_body(base_url: str, task: TaskInstanceId, images: Mapping[str, ImageRecord]) -> str:
    """The Markdown body of the review form.

    :param base_url: ``[api] base_url``.
    :param task: The task instance whose images are reviewed.
    :param images: Its stored images by name, in the manifest's order.
    """
    lines = [
        f"**{len(images)}** image(s) of task {markdown_code(task.task_id)} wait for review. Tick every image "
        "that passes (its name is under its thumbnail), or choose Reject all.",
        "",
    ]
    for number, (name, image) in enumerate(images.items(), start=1):
        url = image_url(base_url, task, name)
        lines += [
            f"[![{markdown_text(name)}]({url})]({url})",
            "",
            f"{number}\\. **{markdown_code(name)}**  ",
            f"Prompt: {markdown_code(image.prompt or '')}  ",
            f"Model: {markdown_code(image.model)} · cost {markdown_text(usd(image.cost_usd_ticks))}",
            "",
        ]
    return "\n".join(lines)
