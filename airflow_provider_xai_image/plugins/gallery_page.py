"""The gallery page of one task instance: totals, errors, and a card per image (thumbnail, prompt,
revised prompt, model, size, cost, moderation, and review status once a reviewer decided),
:data:`CARDS_PER_PAGE` cards a page.

The page has no script and only relative links (``images/<name>``, ``manifest``), so it works under
any ``[api] base_url`` and inside the UI's iframe.
"""

from __future__ import annotations

import html
from urllib.parse import quote, urlencode

from airflow_provider_xai_image.engine.budget import usd
from airflow_provider_xai_image.ledger.records import ImageRecord, TaskInstanceId
from airflow_provider_xai_image.ledger.review import ReviewDecision
from airflow_provider_xai_image.plugins.manifest_index import ManifestIndex

#: Shown instead of a revised prompt when xAI sent none (the manifest records null).
NO_REVISED_PROMPT = "no revised prompt from xAI"
#: Cards (images) on one page of the gallery.
CARDS_PER_PAGE = 60
#: Errors of the manifest listed on the first page (all of them are in manifest.json).
ERRORS_SHOWN = 20
#: Characters of a text of the manifest (prompt, revised prompt, error) shown on a card.
TEXT_CHARS = 2000

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
.pages {{ margin: 10px 0; }}
.approved {{ background: #2e7d3233; }}
.rejected {{ background: #c6282833; }}
</style></head>
<body>
<h1>xAI images</h1>
<div class="task">{task}</div>
{body}
</body></html>
"""


def render_gallery(task: TaskInstanceId, index: ManifestIndex, page: int, review: ReviewDecision | None = None) -> str:
    """One page of the gallery of a task instance that has a manifest: its totals, its first errors (on
    the first page), up to :data:`CARDS_PER_PAGE` cards, and links to the previous and next pages.

    Every text from the manifest is escaped (and cut to :data:`TEXT_CHARS`); its totals are shown
    only when they are numbers.

    :param task: The task instance.
    :param index: Its manifest, indexed.
    :param page: The page, from 1.
    :param review: The reviewer's decision on its images (``review.json``), if any.
    """
    totals = index.totals
    query = _map_index_query(task)
    possibly_billed = totals.get("possibly_billed_usd_ticks", 0)
    facts = [
        f"<span><b>{_number(totals.get('images'))}</b> image(s)</span>",
        f"<span><b>{_number(totals.get('filtered'))}</b> filtered</span>",
        f"<span><b>{_number(totals.get('failed_requests'))}</b> failed request(s)</span>",
        f"<span>cost <b>{html.escape(usd(round(totals.get('cost_usd_ticks', 0))))}</b></span>",
        *(
            [f"<span>possibly billed besides <b>{html.escape(usd(round(possibly_billed)))}</b></span>"]
            if possibly_billed
            else []
        ),
        f"<span>{_number(totals.get('elapsed_seconds'))} s</span>",
        f'<a href="manifest{html.escape(query)}">manifest.json</a>',
    ]
    errors = "".join(
        f"<li>prompt {_text(error.get('prompt_index'))}: {_text(error.get('error'))}</li>"
        for error in (index.first_errors(ERRORS_SHOWN) if page == 1 else [])
        if isinstance(error, dict)
    )
    if review is not None:
        facts.append(_review_fact(review))
    if errors and index.errors > ERRORS_SHOWN:
        errors += f"<li>{index.errors - ERRORS_SHOWN:,} more in manifest.json</li>"
    cards = [
        _stored_card(name, image, query, review.status(name) if review else None)
        if name is not None
        else _filtered_card(image)
        for name, image in index.page((page - 1) * CARDS_PER_PAGE, CARDS_PER_PAGE)
    ]
    pages = _pages(task, page, index.cards)
    body = (
        f'<div class="totals">{" ".join(facts)}</div>'
        + (f'<ul class="errors">{errors}</ul>' if errors else "")
        + pages
        + f'<div class="grid">{"".join(cards)}</div>'
        + pages
    )
    return _page(task, body)


def render_no_manifest(task: TaskInstanceId, message: str | None = None) -> str:
    """The page of a task instance without a manifest (not one of the provider's operators, not run
    yet, or failed before its manifest was written), or whose manifest the gallery does not show.

    :param task: The task instance.
    :param message: Why the gallery shows no manifest (None: the task instance has none).
    """
    if message is not None:
        return _page(task, f'<p class="none">No images: {html.escape(message)}</p>')
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


def _pages(task: TaskInstanceId, page: int, cards: int) -> str:
    """Where this page is among the pages of cards, with links to its neighbours (none for one page)."""
    last = max(1, -(-cards // CARDS_PER_PAGE))
    if last == 1 and page == 1:
        return ""

    def link(to: int, label: str) -> str:
        query = urlencode({**({"map_index": task.map_index} if task.map_index >= 0 else {}), "page": to})
        return f'<a href="{html.escape(f"gallery?{query}")}" rel="{label}">{label}</a>'

    links = [
        *([link(min(page - 1, last), "prev")] if page > 1 else []),
        f"page {page:,} of {last:,}",
        *([link(page + 1, "next")] if page < last else []),
    ]
    return f'<nav class="pages">{" · ".join(links)}</nav>'


def _number(value: object) -> str:
    """A total as a number (an absent or non-numeric one as 0)."""
    return f"{value:,}" if type(value) in (int, float) else "0"


def _text(value: object) -> str:
    """A text of the manifest, escaped, cut to :data:`TEXT_CHARS`."""
    text = "" if value is None else str(value)
    return html.escape(text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…")


def _caption(image: ImageRecord, extra: str) -> str:
    revised = (
        f'<div class="revised">{_text(image.revised_prompt)}</div>'
        if image.revised_prompt
        else f'<div class="none">{NO_REVISED_PROMPT}</div>'
    )
    return (
        f'<figcaption><div class="prompt">{_text(image.prompt)}</div>{revised}'
        f'<div class="meta">{_text(image.model)}{extra} · {html.escape(usd(image.cost_usd_ticks))} · '
        f'<span class="badge {html.escape(image.moderation)}">{html.escape(image.moderation)}</span></div></figcaption>'
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
        f'<figure><a href="{source}"><img src="{source}" alt="{_text(name)}" loading="lazy"></a>'
        f"{_caption(image, size)}</figure>"
    )


def _filtered_card(image: ImageRecord) -> str:
    return f'<figure><div class="filtered-image">filtered by moderation</div>{_caption(image, "")}</figure>'
