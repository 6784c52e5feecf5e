"""The console in a real headless Chromium: log in, every page, live refresh, the
dead-letter forms clicked for real (checked through the broker), a screenshot."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Served
from tests.browser.console_server import SCRIPT

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need Playwright: pip install playwright"
)
expect = sync_api.expect

pytestmark = pytest.mark.timeout(900)  # the first test may install Chromium


def log_in(page: Any, served: Served) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#token", served.token)
    page.click("form.login button")
    expect(page).to_have_url(served.base + "/")
    expect(page.locator("h1")).to_have_text("Overview")


def test_login_refuses_a_wrong_token_and_logout_ends_the_session(
    page: Any, served: Served, console_errors: list[str]
) -> None:
    page.goto("/workers")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fworkers$"))
    page.fill("#token", "not-the-token")
    page.click("form.login button")
    expect(page.locator(".notice.error")).to_contain_text("not the server's token")
    refused = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    assert console_errors == [refused]  # the wrong token's answer, as Chromium logs it
    console_errors.clear()
    page.fill("#token", served.token)
    page.click("form.login button")
    expect(page).to_have_url(served.base + "/workers")
    cookies = page.context.cookies()
    (session,) = [cookie for cookie in cookies if cookie["name"] == "conveyor_console"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    assert served.token not in session["value"]
    page.click("form.account button")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_every_page_renders_its_data(page: Any, served: Served) -> None:
    log_in(page, served)
    expect(page.locator("#queues")).to_contain_text("mail")
    expect(page.locator("#charts svg.plot")).to_have_count(6)  # mail and raw, three each
    expect(page.locator("#dead-letters")).to_contain_text("mail.dlq")
    expect(page.locator("#alerts")).to_contain_text("Health")

    page.click("#queues >> text=raw")
    expect(page.locator("h1")).to_have_text("Queue raw")
    body = page.locator("#messages details.body summary")
    expect(body).to_have_text(SCRIPT)  # shown as text, never run

    page.click("nav >> text=Topics")
    expect(page.locator("#topics")).to_contain_text("orders")
    expect(page.locator("#partitions table tbody tr")).to_have_count(3)

    page.click("nav >> text=Consumer groups")
    expect(page.locator("#groups")).to_contain_text("billing")
    expect(page.locator("#lag")).to_contain_text("orders")

    page.click("nav >> text=Workers")
    expect(page.locator("#workers")).to_contain_text("seed-1")
    expect(page.locator("#workers")).to_contain_text("seed-host")

    page.click("nav >> text=Job lookup")
    page.fill("#job-id", served.done_job)
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#job")).to_contain_text("succeeded")
    expect(page.locator("#job")).to_contain_text("sent to ada@example.com")

    page.click("nav >> text=Dead letters")
    expect(page.locator("#queues")).to_contain_text("mail.dlq")


def test_replay_and_purge_from_the_dead_letter_inspector(page: Any, served: Served) -> None:
    first, second = served.dead_jobs
    log_in(page, served)
    page.click("nav >> text=Dead letters")
    page.click("#queues >> text=mail")
    expect(page.locator("#dead-letters tbody tr")).to_have_count(2)
    page.click(f"text={first}")
    expect(page.locator("h1")).to_have_text(f"Dead letter {first}")
    expect(page.locator("#dead-letter")).to_contain_text("PermanentError")
    expect(page.locator("#dead-letter")).to_contain_text(SCRIPT)
    expect(page.locator("#traceback")).to_contain_text("Traceback")

    page.click("#replay button")
    expect(page.locator(".notice")).to_contain_text("Replayed 1 dead letter(s) to queue 'mail'")
    assert first in served.waiting("mail")
    assert served.waiting("mail.dlq") == [second]

    # the console asks before purging; the page fixture confirms
    page.get_by_role("button", name="Purge all").click()
    expect(page.locator(".notice")).to_contain_text("Purged 1 dead letter(s)")
    assert served.waiting("mail.dlq") == []
    assert first in served.waiting("mail")


def test_live_panels_refresh_without_losing_typed_input(page: Any, served: Served) -> None:
    log_in(page, served)
    page.goto("/queues/mail")
    expect(page.locator("#live-status")).to_have_text("live")
    served.publish("mail", b"live-refresh-probe")
    expect(page.locator("#messages")).to_contain_text("live-refresh-probe", timeout=15_000)
    expect(page.locator("#live-status")).to_contain_text("updated")

    page.goto(f"/jobs?id={served.done_job}")
    expect(page.locator("#job")).to_contain_text("succeeded")
    page.fill("#job-id", "half-typed")
    page.evaluate("document.getElementById('live-status').textContent = ''")
    expect(page.locator("#live-status")).to_contain_text("updated", timeout=15_000)
    expect(page.locator("#job-id")).to_have_value("half-typed")
    expect(page.locator("#job")).to_contain_text("succeeded")


def test_screenshot_of_the_overview(page: Any, served: Served) -> None:
    log_in(page, served)
    expect(page.locator("#charts svg.plot").first).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "overview.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
