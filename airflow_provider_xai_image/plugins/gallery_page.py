"""The gallery page of one task instance: totals, errors, and a card per image (thumbnail, prompt,
revised prompt, model, size, cost, moderation, and review status once a reviewer decided).

The page has no script and only relative links (``images/<name>``, ``manifest``), so it works under
any ``[api] base_url`` and inside the UI's iframe.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from airflow_provider_xai_image.budget import usd
from airflow_provider_xai_image.plugins.task_manifest import TaskInstanceId, TaskManifest
from airflow_provider_xai_image.records import ImageRecord
from airflow_provider_xai_image.review import ReviewDecision

#: Shown instead of a revised prompt when xAI sent none (the manifest records null).
NO_REVISED_PROMPT = "no revised prompt from xAI"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
:root {{ color-scheme: light dark; font-family: system-ui, sans-serif; font-size: 14px; }}
body {{ margin: 12px; }}
h1 {{ font-size: 1.15rem; margin: 0 0 4px; }}
.task {{ color: GrayText; margin-bottom: 10px; word-break: break-all; }}
.totals {{ display: flex; flex-wrap: wrap; gap: 6px 18px; margin-bottom: 12px; }}
.totals b {{ font-size: 1.05rem; }}
.errors {{ color: #c0392b; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 12px; }}
figure {{ margin: 0; border: 1px solid #8884; border-radius: 8px; overflow: hidden; }}
figure img {{ display: block; width: 100%; aspect-ratio: 4 / 3; object-fit: cover; background: #8882; }}
.filtered-image {{ display: flex; align-items: center; justify-content: center; aspect-ratio: 4 / 3;
  background: #8882; color: GrayText; }}
figcaption {{ padding: 8px; line-height: 1.35; }}
.prompt {{ font-weight: 600; }}
.revised {{ font-style: italic; }}
.none {{ color: GrayText; }}
.meta {{ color: GrayText; margin-top: 4px; }}
.badge {{ border-radius: 4px; padding: 0 5px; font-size: 0.85rem; }}
.passed {{ background: #2e7d3233; }}
.filtered {{ background: #c6282833; }}
.approved {{ background: #2e7d3233; }}
.rejected {{ background: #c6282833; }}
</style></head>
<body>
<h1>xAI images</h1>
<div class="task">{task}</div>
{body}
</body></html>
"""


def render_gallery(task: TaskInstanceId, found: TaskManifest, review: ReviewDecision | None = None) -> str:
    """The gallery page of a task instance that has a manifest.

    :param task: The task instance.
    :param found: Its manifest.
    :param review: The reviewer's decision on its images (``review.json``), if any.
    """
    query = _map_index_query(task)
    totals = found.manifest.totals
    possibly_billed = totals.get("possibly_billed_usd_ticks", 0)
    facts = [
        f"<span><b>{totals.get('images', 0)}</b> image(s)</span>",
        f"<span><b>{totals.get('filtered', 0)}</b> filtered</span>",
        f"<span><b>{totals.get('failed_requests', 0)}</b> failed request(s)</span>",
        f"<span>cost <b>{usd(totals.get('cost_usd_ticks', 0))}</b></span>",
        *([f"<span>possibly billed besides <b>{usd(possibly_billed)}</b></span>"] if possibly_billed else []),
        f"<span>{totals.get('elapsed_seconds', 0)} s</span>",
        f'<a href="manifest{query}">manifest.json</a>',
    ]
    errors = "".join(
        f"<li>prompt {html.escape(str(error.get('prompt_index')))}: {html.escape(str(error.get('error')))}</li>"
        for error in found.manifest.errors
    )
    if review is not None:
        facts.append(_review_fact(review))
    statuses = {name: review.status(name) for name in found.images} if review else {}
    cards = [_stored_card(name, image, query, statuses.get(name)) for name, image in found.images.items()]
    cards += [_filtered_card(image) for image in found.manifest.images if image.moderation == "filtered"]
    body = (
        f'<div class="totals">{" ".join(facts)}</div>'
        + (f'<ul class="errors">{errors}</ul>' if errors else "")
        + f'<div class="grid">{"".join(cards)}</div>'
    )
    return _page(task, body)


def render_no_manifest(task: TaskInstanceId) -> str:
    """The page of a task instance without a manifest (not one of the provider's operators, not run
    yet, or failed before its manifest was written).

    :param task: The task instance.
    """
    return _page(
        task,
        '<p class="none">No images: this task instance has no image manifest (XCom <code>manifest</code>). '
        "The provider's image operators write one when they finish.</p>",
    )


def _page(task: TaskInstanceId, body: str) -> str:
    label = f"{task.dag_id} / {task.run_id} / {task.task_id}" + (f" [{task.map_index}]" if task.map_index >= 0 else "")
    return _PAGE.format(title=html.escape(f"xAI images: {label}"), task=html.escape(label), body=body)


def _map_index_query(task: TaskInstanceId) -> str:
    return f"?map_index={task.map_index}" if task.map_index >= 0 else ""


def _caption(image: ImageRecord, extra: str) -> str:
    revised = (
        f'<div class="revised">{html.escape(image.revised_prompt)}</div>'
        if image.revised_prompt
        else f'<div class="none">{NO_REVISED_PROMPT}</div>'
    )
    return (
        f'<figcaption><div class="prompt">{html.escape(image.prompt or "")}</div>{revised}'
        f'<div class="meta">{html.escape(image.model)}{extra} · {usd(image.cost_usd_ticks)} · '
        f'<span class="badge {image.moderation}">{image.moderation}</span></div></figcaption>'
    )


def _review_fact(review: ReviewDecision) -> str:
    who = (review.decided_by or {}).get("name") or "the response timeout"
    comment = f": “{html.escape(review.comment)}”" if review.comment else ""
    return (
        f"<span>reviewed by <b>{html.escape(str(who))}</b> {review.decided_at:%Y-%m-%d %H:%M} UTC, "
        f"<b>{len(review.approved)}</b> approved{comment}</span>"
    )


def _stored_card(name: str, image: ImageRecord, query: str, review_status: str | None = None) -> str:
    source = html.escape(f"images/{quote(name)}{query}")
    size = f" · {image.bytes / 1024:,.0f} KiB" if image.bytes is not None else ""
    if review_status:
        size += f' · <span class="badge {review_status}">{review_status}</span>'
    return (
        f'<figure><a href="{source}"><img src="{source}" alt="{html.escape(name)}" loading="lazy"></a>'
        f"{_caption(image, size)}</figure>"
    )


def _filtered_card(image: ImageRecord) -> str:
    return f'<figure><div class="filtered-image">filtered by moderation</div>{_caption(image, "")}</figure>'
