"""The review form in a real browser: headless Chromium (driven by the ``playwright`` package, with the
system's Chromium) signs in to the Airflow UI, opens the review task's required action, sees the 4
thumbnails loaded, ticks two images and responds; a user who may not read the DAG sees no image.

Needs ``playwright`` (the dev extra) and Debian's ``chromium`` package (which ``make test`` installs);
nothing is downloaded. The form's screenshot goes to the test's temporary folder, or to
``XAI_REVIEW_SCREENSHOT`` (``XAI_REVIEW_SCREENSHOT=docs/review.png`` renews the one in
docs/gallery-and-review.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from review_support import DAG_ID, REVIEWER
from support.auth_manager import OUTSIDER
from support.browser import CHROMIUM_FLAGS, find_chromium

from airflow_provider_xai_image.ledger.review import REVIEW_NAME

playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs `pip install playwright`")
THUMBNAILS = 'img[src*="/xai-image-gallery/"]'

CHROMIUM, WHY_NO_CHROMIUM = find_chromium()

pytestmark = [pytest.mark.dag, pytest.mark.skipif(CHROMIUM is None, reason=WHY_NO_CHROMIUM)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            yield chromium
        finally:
            chromium.close()


def signed_in_page(browser: Any, services: Any, user: str) -> tuple[Any, list[str]]:
    """A new browser session signed in to the UI through its sign-in form; and every URL it requests."""
    page = browser.new_context(viewport={"width": 1280, "height": 1300}).new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{services.api.base_url}/auth/login", wait_until="networkidle")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(services.api.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    return page, requested


def required_action_url(services: Any, run_id: str) -> str:
    return f"{services.api.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/review/required_actions"


def loaded_thumbnails(page: Any) -> list[str]:
    """The sources of the gallery images the page shows, loaded (complete, with a width)."""
    return page.eval_on_selector_all(
        THUMBNAILS, "images => images.filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)"
    )


def test_reviewer_ticks_two_images_in_the_ui(review_services: SimpleNamespace, browser: Any, tmp_path: Path) -> None:
    env, services = review_services, review_services.services
    run_id = services.trigger(DAG_ID)
    services.wait_for_input(DAG_ID, run_id, "review")
    names = services.request("GET", f"{services.run_path(DAG_ID, run_id)}/taskInstances/review/-1/hitlDetails").json()[
        "options"
    ][:-1]

    page, requested = signed_in_page(browser, services, REVIEWER)
    page.goto(required_action_url(services, run_id), wait_until="networkidle")
    page.wait_for_function(
        f"[...document.querySelectorAll('{THUMBNAILS}')].filter(i => i.complete && i.naturalWidth > 0).length == 4"
    )
    assert sorted(source.split("/images/")[1].split("?")[0] for source in loaded_thumbnails(page)) == sorted(names)
    assert not [url for url in requested if "elsewhere" in url]  # the prompt's markup fetched nothing

    outsider, _ = signed_in_page(browser, services, OUTSIDER)
    outsider.goto(required_action_url(services, run_id), wait_until="networkidle")
    outsider.wait_for_timeout(2000)
    assert loaded_thumbnails(outsider) == []
    image = outsider.context.request.get(page.eval_on_selector(THUMBNAILS, "image => image.src"))
    assert image.status == 403

    approved = [names[0], names[3]]
    options = page.locator("#element_chosen_options input[role=combobox]")
    for name in approved:
        options.fill(name)
        options.press("Enter")
    page.locator("#element_comment").fill("Two pass, from the browser")
    page.screenshot(path=os.environ.get("XAI_REVIEW_SCREENSHOT") or str(tmp_path / "review.png"), full_page=True)
    page.get_by_role("button", name="Respond").click()

    services.assert_run_ends(DAG_ID, run_id)
    folder = f"s3://aws_moto@{env.bucket}/approved/{run_id}/"
    assert services.xcom(DAG_ID, run_id, "review") == [folder + name for name in approved]
    assert services.xcom(DAG_ID, run_id, "use_approved") == [folder + name for name in approved]
    manifest_uri = services.xcom(DAG_ID, run_id, "generate", "manifest")
    review_key = manifest_uri.split(f"{env.bucket}/", 1)[1].rsplit("/", 1)[0] + f"/{REVIEW_NAME}"
    decision = json.loads(env.moto_s3.get_bytes(env.bucket, review_key))
    assert (decision["approved"], decision["comment"]) == (approved, "Two pass, from the browser")
    assert decision["decided_by"]["name"] == REVIEWER
