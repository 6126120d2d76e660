"""The staff console in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a real
`ihanoi serve` process: staff sign in through the VNeID stand-in and answer a report from the queue (the
resident's inbox gets it), a second admin approves a city broadcast, a clerk of another ward cannot open the
report, and a form without its CSRF token is refused.

These run with the rest of the suite. They are skipped only when IHANOI_SKIP_BROWSER_TESTS=1 says so (CI never
sets it; .ci/run installs chromium); without a browser otherwise they fail, they do not skip.
Set CONSOLE_SCREENSHOTS=<folder> to keep screenshots of the queue, a report page and the broadcast composer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app import migrate
from app.asgi import migration_sources
from app.identity import service as identity
from app.identity.crypto import Vault, load_master_key
from app.identity.devlogin import persona, sign_in
from app.identity.models import GrantRequest
from app.identity.service import IdentityRuntime
from app.identity.stand_in import DEMO_RESIDENTS
from app.identity.units import load_units
from tests.conftest import (
    EXTRA_MODULES,
    IHANOI,
    MASTER_KEY,
    ROOT,
    TEST_MODULES,
    free_port,
    process_env,
    stop_process,
    wait_ready,
)
from tests.feedback.support import OTHER_CLERK, OTHER_WARD, RESIDENT_A, WARD, report_body

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("IHANOI_SKIP_BROWSER_TESTS") == "1",
                       reason="IHANOI_SKIP_BROWSER_TESTS=1: browser tests switched off on purpose"),
]

CHROMIUM = os.environ.get("IHANOI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# demo residents of the VNeID stand-in: pick them on its page as a person would
CLERK_DEMO, ADMIN_DEMO, SECOND_ADMIN_DEMO = 1, 3, 0
SCREENS = os.environ.get("CONSOLE_SCREENSHOTS")
if SCREENS:
    Path(SCREENS).mkdir(parents=True, exist_ok=True)


async def _grant(conn, rt: IdentityRuntime, personal_id: str, role: str, scope: str = "") -> None:
    resident = await identity.resident_for_personal_id(rt, conn, personal_id, create=True)
    await identity.grant_role(rt, conn, actor="test", resident_id=resident["id"], request_id=None,
                              request=GrantRequest(resident_id=str(resident["id"]), role=role, scope=scope))


@pytest_asyncio.fixture(scope="module")
async def server(databases, redis_url, tmp_path_factory):
    """A fresh database (what the browser commits stays out of the other tests' way) and one server process."""
    database_url = await databases.create("console")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate.migrate(conn, migration_sources(TEST_MODULES))
        rt = IdentityRuntime(settings=None, vault=Vault(load_master_key(MASTER_KEY, env="test", data_dir=ROOT)),
                             keys=None, revoked=None, provider=None, units=load_units(), provider_issuer="",
                             settings_client_id="", settings_client_secret="")
        async with conn.transaction():
            await _grant(conn, rt, DEMO_RESIDENTS[CLERK_DEMO]["personal_id"], "staff", WARD)
            await _grant(conn, rt, OTHER_CLERK, "staff", OTHER_WARD)
            await _grant(conn, rt, DEMO_RESIDENTS[ADMIN_DEMO]["personal_id"], "admin")
            await _grant(conn, rt, DEMO_RESIDENTS[SECOND_ADMIN_DEMO]["personal_id"], "admin")
    finally:
        await conn.close()
    base, proc = _serve(database_url, redis_url, tmp_path_factory.mktemp("console") / "server.log")
    try:
        yield base
    finally:
        stop_process(proc)


def _serve(database_url: str, redis_url: str, log_path: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = process_env(DATABASE_URL=database_url, REDIS_URL=redis_url, IHANOI_EXTRA_MODULES=EXTRA_MODULES,
                      IHANOI_REDIS_PREFIX=f"test:{uuid.uuid4().hex[:8]}:", IHANOI_LOG_LEVEL="WARNING")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*IHANOI, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
    except Exception:
        stop_process(proc)
        raise
    return base, proc


@pytest_asyncio.fixture(scope="module")
async def chromium():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no browser at {CHROMIUM}: apt-get install -y chromium (or IHANOI_SKIP_BROWSER_TESTS=1)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture
async def new_page(chromium, server):
    """Pages in browser contexts of their own (own cookies); CSP violations are collected and must not happen."""
    contexts, violations = [], []

    async def make():
        context = await chromium.new_context(base_url=server, locale="vi-VN", viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = await context.new_page()
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
        return page

    yield make
    for context in contexts:
        await context.close()
    assert violations == [], violations


async def resident_report(server: str) -> tuple[dict, int]:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        signed = await sign_in(client, RESIDENT_A)
        headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        sent = await client.post("/v1/feedback/reports", headers=headers | {"Idempotency-Key": uuid.uuid4().hex},
                                 json=report_body(duplicates_checked=True,
                                                  description=f"Rác thải đổ trộm đầu ngõ {uuid.uuid4().hex[:6]}"))
        assert sent.status_code == 201, sent.text
    return headers, sent.json()["id"]


async def report_status(server: str, headers: dict, report_id: int) -> str:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        return (await client.get(f"/v1/feedback/reports/{report_id}", headers=headers)).json()["status"]


async def browser_sign_in(page, path: str, *, demo: int | None = None, personal_id: str | None = None) -> None:
    """Open a console page, get sent to sign in, sign in at the VNeID stand-in, come back to the page."""
    await page.goto(path)
    assert "/console/login" in page.url
    await page.click("#sign-in")
    await page.wait_for_url("**/stand-in/vneid/authorize**")
    if demo is not None:
        await page.select_option("select[name=demo]", str(demo))
    else:
        details = persona(personal_id)
        await page.fill("input[name=personal_id]", details["personal_id"])
        await page.fill("input[name=full_name]", details["full_name"])
        await page.fill("input[name=birth_date]", details["birth_date"])
        await page.select_option("select[name=sex]", details["sex"])
    await page.select_option("select[name=level]", "2")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"**{path}")


async def screenshot(page, name: str) -> None:
    if SCREENS:
        await page.screenshot(path=str(Path(SCREENS) / name), full_page=True)


async def test_staff_answer_a_report_from_the_queue_and_the_resident_gets_it(server, new_page):
    resident, report_id = await resident_report(server)
    page = await new_page()
    await browser_sign_in(page, "/console/feedback", demo=CLERK_DEMO)
    link = page.locator(f"a[href='/console/feedback/reports/{report_id}']")
    await link.wait_for()
    await screenshot(page, "queue.png")
    # from the keyboard: focus the report's link and press Enter
    await link.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/console/feedback/reports/{report_id}")
    await page.click("#form-receive button[type=submit]")
    await page.wait_for_url(f"**/console/feedback/reports/{report_id}?done=receive")
    assert await page.inner_text("#report-status") == "Đã tiếp nhận"
    await page.select_option("#answer-template", "da-khac-phuc")
    await page.fill("#answer-details", "Tổ vệ sinh đã thu gom toàn bộ rác.")
    await screenshot(page, "report.png")
    await page.click("#form-answer button[type=submit]")
    await page.wait_for_url(f"**/console/feedback/reports/{report_id}?done=answer")
    assert await page.inner_text("#report-status") == "Đã trả lời"
    assert "Tổ vệ sinh đã thu gom toàn bộ rác." in await page.inner_text("#answer-text")
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        inbox = (await client.get("/v1/notifications", headers=resident)).json()["items"]
    answered = [item for item in inbox if item["data"].get("id") == report_id and "Tổ vệ sinh" in item["body"]]
    assert answered, inbox
    # the queue's filters update the list in place (htmx): answered reports are no longer open ones
    await page.click("nav a[href='/console/feedback']")
    await page.wait_for_url("**/console/feedback")
    assert await page.locator(f"a[href='/console/feedback/reports/{report_id}']").count() == 0
    await page.select_option("#f-status", "answered")
    await page.locator(f"#queue a[href='/console/feedback/reports/{report_id}']").wait_for()
    assert "status=answered" in page.url  # pushed, so the filtered list has an address
    await page.click("nav a[href='/console/feedback/figures']")
    await page.wait_for_url("**/console/feedback/figures")
    assert await page.locator("svg.chart rect.bar-answered").count() > 0
    await screenshot(page, "figures.png")


async def test_a_second_admin_approves_a_city_broadcast(server, new_page):
    author = await new_page()
    await browser_sign_in(author, "/console/broadcasts", demo=ADMIN_DEMO)
    await author.select_option("#b-target", "hanoi")
    await author.select_option("#b-urgency", "emergency")
    await author.fill("#b-title-vi", "Cắt nước toàn thành phố")
    await author.fill("#b-body-vi", "Tạm dừng cấp nước từ 22:00 đến 04:00 để bảo dưỡng đường ống.")
    await author.fill("#b-title-en", "City-wide water cut")
    await author.fill("#b-body-en", "Water is off from 22:00 to 04:00 for pipe maintenance.")
    await author.click("#preview-button")  # htmx: the preview comes back into the page
    await author.locator("#preview .phone[lang=en]").wait_for()
    assert "pipe maintenance" in await author.inner_text("#preview")
    await screenshot(author, "broadcast-composer.png")
    await author.click("#compose button[type=submit]")
    await author.wait_for_url("**/console/broadcasts/*")
    broadcast_path = author.url.split(server, 1)[1]
    assert await author.inner_text("#broadcast-status") == "awaiting_approval"
    assert await author.locator("#approve").count() == 0  # not for the author (the HTTP tests post it anyway)

    approver = await new_page()
    await browser_sign_in(approver, "/console/broadcasts", demo=SECOND_ADMIN_DEMO)
    await approver.click(f"a[href='{broadcast_path}']")
    await approver.click("#approve")
    await approver.wait_for_url(f"**{broadcast_path}?done=approve")
    assert await approver.inner_text("#broadcast-status") == "scheduled"
    # the author's page, left open, follows along without a reload (htmx polls the status and counts)
    # (polled from here: a wait_for_function would evaluate a string, which the page's CSP rightly forbids)
    status = author.locator("#broadcast-status")
    for _ in range(50):
        if await status.inner_text() == "scheduled":
            break
        await author.wait_for_timeout(200)
    assert await status.inner_text() == "scheduled"
    assert author.url.endswith(broadcast_path)


async def test_a_clerk_of_another_ward_cannot_open_the_report(server, new_page):
    resident, report_id = await resident_report(server)
    page = await new_page()
    await browser_sign_in(page, f"/console/feedback/reports/{report_id}", personal_id=OTHER_CLERK)
    assert "only its staff may open it here" in await page.inner_text("#message")
    assert await page.locator("#form-receive").count() == 0
    assert await report_status(server, resident, report_id) == "submitted"


async def test_a_form_without_its_csrf_token_is_refused(server, new_page):
    resident, report_id = await resident_report(server)
    page = await new_page()
    await browser_sign_in(page, f"/console/feedback/reports/{report_id}", demo=CLERK_DEMO)
    # a forged form: the same fields, no token
    await page.eval_on_selector("#form-receive input[name=csrf]", "input => input.remove()")
    await page.click("#form-receive button[type=submit]")
    await page.wait_for_load_state()
    assert "mã bảo vệ" in await page.inner_text("#message")
    assert await report_status(server, resident, report_id) == "submitted"
