"""The dashboard in headless Chromium against the app served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import unavailable

from taskloom import Task, TaskManager, TaskRun, TaskState, every, task
from taskloom.api.auth import TOKEN_ENV

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1400,1000",
)  # fmt: skip
WAIT = 20.0


@task
def resize(width: int, height: int = 600) -> str:
    """Resize an image."""
    return f"{width}x{height}"


@task
def charge(order: str) -> None:
    """Charge an order; the card is declined."""
    log.warning("charging order %s", order)
    raise ValueError(f"card declined for order {order}")


@task
async def crawl(ctx: TaskRun, site: str) -> None:
    """Crawl a site (long)."""


@task(schedule=every(timedelta(hours=1)))
async def heartbeat() -> None:
    """Say the system is alive (scheduled in code)."""


@task(report=True)
async def summarize(ctx: TaskRun, pages: int) -> int:
    """Summarise a crawl on a report page."""
    ctx.report(f"## Crawl summary\n\n{pages} pages crawled")
    return pages


TASKS: list[Task] = [resize, charge, crawl, heartbeat, summarize]


SUMMARY: dict[str, str] = {}


async def seed(url: str) -> tuple[str, str]:
    """A few runs in every state, a live worker; return (failed run id, running run id)."""
    async with TaskManager(url, tasks=TASKS) as manager:
        for width in (640, 800):
            await manager.execute("resize", width=width)
        SUMMARY["id"] = (await manager.execute("summarize", pages=12)).id
        failed = await manager.execute("charge", order="A-1042")
        assert failed.state is TaskState.failure
        await manager.queue("resize", width=1024, priority="high")
        await manager.queue("resize", width=2048, delay=3600)
        running = await manager.queue("crawl", site="example.org")
        # what a worker's claim and heartbeat write, so the page shows a run in progress
        running.state, running.worker = TaskState.running, "worker-1"
        running.start, running.progress, running.progress_note = running.queued, 0.6, "page 60/100"
        await manager.store.save(running)
        await manager.add_schedule(
            "nightly-thumbs", "resize", every(timedelta(hours=24)), params={"width": 64}
        )
        info = {"pid": 4242, "active": 1, "queues": None}
        await manager.store.worker_beat("worker-1", info, 3600, manager.clock())
        return failed.id, running.id


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, str]]:
    """(base URL, failed run id, running run id) of the app served by uvicorn in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    from taskloom.api import create_app

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    url = f"sqlite:///{tmp_path}/dashboard.db"
    failed, running = asyncio.run(seed(url))
    app = create_app(TaskManager(url, tasks=TASKS))  # connected by the app, in uvicorn's loop
    sock = socket.create_server(("127.0.0.1", 0))
    # bound and listening before the browser starts: its first request waits in the backlog
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/", failed, running
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        unavailable("chromium and chromedriver missing: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chrome-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser on the dashboard, with waits that survive the page's re-rendering."""

    def __init__(self, driver: Any) -> None:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        # the page re-renders its tables on every poll: find elements afresh on each try
        self.wait = WebDriverWait(
            driver,
            WAIT,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def read(self, css: str, attribute: str | None = None) -> str:
        from selenium.webdriver.common.by import By

        def probe(driver: Any) -> str | bool:
            found = driver.find_element(By.CSS_SELECTOR, css)
            return (found.text if attribute is None else found.get_attribute(attribute)) or False

        return str(self.wait.until(probe))

    def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        def probe(driver: Any) -> bool:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True

        self.wait.until(probe)

    def shows(self, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.wait.until(ec.text_to_be_present_in_element((By.ID, element_id), text))

    def visible(self, css: str, shown: bool = True) -> None:
        from selenium.webdriver.common.by import By

        self.wait.until(
            lambda d: any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, css)) is shown
        )

    def confirm(self, text: str, accept: bool) -> None:
        """The confirmation dialog is open and says `text`; answer it."""
        self.visible("#confirm")
        self.shows("confirm-text", text)
        self.click("#confirm-yes" if accept else "#confirm-no")
        self.visible("#confirm", shown=False)

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))

    def no_script_errors(self) -> None:
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        # optional panels probe endpoints a server may not offer: those 404s are expected
        errors = [e for e in errors if not _optional_probe(e["message"])]
        assert errors == []  # no script error, no blocked resource (the page has a strict CSP)


def _optional_probe(message: str) -> bool:
    return " 404 " in message and any(
        part in message for part in ("/api/queues", "/api/schedules", "/logs", "/report")
    )


def test_failed_run_is_retried_from_the_dashboard(
    browser: Any, served: tuple[str, str, str]
) -> None:
    base, failed, running = served
    page = Page(browser)

    browser.get(base)
    failed_row = f'#runs tr[data-run-id="{failed}"]'
    assert "charge" in page.read(f'{failed_row}[data-state="failure"]')
    assert page.read('#stats tr[data-task="charge"] td[data-state="failure"]') == "1"
    assert "worker-1" in page.read("#workers tbody tr")

    # the run in progress shows its progress bar
    page.click(f'#runs tr[data-run-id="{running}"]')
    page.shows("detail-id", running)
    page.shows("detail-progress-note", "page 60/100")
    assert "60%" in page.read("#detail-progress", "style")

    # retry from the failed run's row asks first: declining changes nothing
    page.click(f"{failed_row} .btn-retry")
    page.confirm(f"Retry run {failed}?", accept=False)
    assert page.count(f'#runs tr[data-from-run="{failed}"]') == 0
    # confirmed, a new queued run appears, pointing back at it
    page.click(f"{failed_row} .btn-retry")
    page.confirm(f"Retry run {failed}?", accept=True)
    new_id = page.read(f'#runs tr[data-from-run="{failed}"][data-state="queued"]', "data-run-id")
    assert new_id != failed
    page.shows("detail-id", new_id)
    assert browser.current_url.endswith(f"#/runs/{new_id}")

    # and the failed run's detail shows its error text
    page.click(failed_row)
    page.shows("detail-error-message", "ValueError: card declined for order A-1042")
    assert "Traceback" in page.read("#detail-traceback")

    page.no_script_errors()
    browser.set_window_size(1400, 1500)  # the picture shows the side panels too
    page.visible("#schedules-section")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "dashboard.png"))
    if os.environ.get("TASKLOOM_UPDATE_DOCS"):  # refresh the picture in docs/ on request only
        shutil.copyfile(artifacts / "dashboard.png", ROOT / "docs" / "dashboard.png")


def test_deep_links_search_chart_delays_and_tracebacks(
    browser: Any, served: tuple[str, str, str]
) -> None:
    base, failed, running = served
    page = Page(browser)

    # a deep link opens the run at once
    browser.get(f"{base}#/runs/{failed}")
    page.shows("detail-id", failed)
    page.shows("detail-error-message", "card declined")
    # the traceback keeps the task's own frame and drops taskloom's (a note counts them)
    traceback = page.read("#detail-traceback")
    assert "test_dashboard.py" in traceback and "in charge" in traceback
    assert "taskloom frame" in traceback and "executors" not in traceback
    assert "concurrent" not in traceback  # the worker thread's machinery is not the task's
    page.click("#detail-all-frames")
    page.wait.until(lambda d: "executors" in page.read("#detail-traceback"))

    # cancel asks first too; declined, the run stays as it is
    page.click(f'#runs tr[data-run-id="{running}"] .btn-cancel')
    page.confirm(f"Cancel run {running}?", accept=False)
    assert page.read(f'#runs tr[data-run-id="{running}"]', "data-state") == "running"

    # the run due in an hour shows as delayed, in its row and its detail
    delayed = page.read('#runs tr[data-delayed="true"]', "data-run-id")
    assert "delayed" in page.read(f'#runs tr[data-run-id="{delayed}"] .state')
    assert re.search(r"in \d+ min", page.read(f'#runs tr[data-run-id="{delayed}"]'))  # in 60 min
    page.click(f'#runs tr[data-run-id="{delayed}"]')
    page.shows("detail-id", delayed)
    assert page.read("#detail", "data-delayed") == "true"

    # search by an id prefix: a unique one opens the run, a shared one lists the matches
    page.driver.find_element("id", "search-id").send_keys(failed[:20] + "\n")
    page.shows("detail-id", failed)
    assert browser.current_url.endswith(f"#/runs/{failed}")
    page.driver.find_element("id", "search-id").send_keys(failed[:4] + "\n")
    page.visible("#search-matches li")
    assert failed in page.read("#search-matches")
    page.driver.find_element("id", "search-id").clear()
    page.driver.find_element("id", "search-id").send_keys("zz-not-hex\n")
    page.shows("search-message", "is not a run id")

    # the chart counts what finished in the last hour: two resizes and a summary, one charge
    assert page.read("#chart", "data-success") == "3"
    assert page.read("#chart", "data-failure") == "1"
    page.shows("chart-caption", "3 succeeded, 1 failed")
    page.no_script_errors()

    # a run id that does not exist says so
    browser.get(f"{base}#/runs/{'0' * 32}")
    page.shows("status", "no run")


def _api(base: str, path: str) -> Any:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{base}{path}", timeout=WAIT) as reply:
        return json.loads(reply.read())


def test_queues_schedules_and_logs_panels(browser: Any, served: tuple[str, str, str]) -> None:
    base, failed, _running = served
    page = Page(browser)
    browser.get(base)

    # queues: depth by priority, and a pause that asks first and is stored
    row = '#queues tr[data-queue="default"]'
    assert page.read(row, "data-paused") == "false"
    page.click(f"{row} .btn-pause")
    page.confirm("Pause queue default?", accept=False)
    assert page.read(row, "data-paused") == "false"
    page.click(f"{row} .btn-pause")
    page.confirm("Pause queue default?", accept=True)
    page.read(f'{row}[data-paused="true"]')
    assert [q["paused"] for q in _api(base, "api/queues") if q["name"] == "default"] == [True]
    page.click(f"{row} .btn-resume")
    page.confirm("Resume queue default?", accept=True)
    page.read(f'{row}[data-paused="false"]')

    # schedules: the one in code and the stored one, with next fire times
    code = '#schedules tr[data-schedule="heartbeat"]'
    stored = '#schedules tr[data-schedule="nightly-thumbs"]'
    assert page.read(code, "data-source") == "code"
    assert page.count(f"{code} .btn-remove") == 0  # a schedule in code is not removed here
    assert page.read(stored, "data-source") == "stored"
    assert "in " in page.read(f"{stored} .next-fire")
    page.click(f"{stored} .btn-disable")
    page.confirm("Disable schedule nightly-thumbs?", accept=True)
    page.read(f'{stored}[data-enabled="false"]')
    assert page.read(f"{stored} .next-fire") == "—"
    page.click(f"{stored} .btn-remove")
    page.confirm("Remove schedule nightly-thumbs?", accept=True)
    page.wait.until(lambda d: page.count(stored) == 0)
    assert "nightly-thumbs" not in [s["name"] for s in _api(base, "api/schedules")]

    # add one from the form; a bad one is refused with the server's reason
    page.click("#schedule-add summary")
    page.driver.find_element("id", "schedule-name").send_keys("thumbs-5m")
    page.driver.find_element("css selector", '#schedule-task option[value="resize"]').click()
    page.driver.find_element("id", "schedule-value").send_keys("300")
    params = page.driver.find_element("id", "schedule-params")
    params.clear()
    params.send_keys('{"width": 128}')
    page.click('#schedule-form button[type="submit"]')
    added = '#schedules tr[data-schedule="thumbs-5m"]'
    assert page.read(added, "data-source") == "stored"
    [item] = [s for s in _api(base, "api/schedules") if s["name"] == "thumbs-5m"]
    assert item["params"] == {"width": 128} and item["enabled"] is True

    # run logs on the run page; no report link for a task without reports
    browser.get(f"{base}#/runs/{failed}")
    page.shows("detail-id", failed)
    page.shows("detail-logs", "charging order A-1042")
    page.visible("#detail-report", shown=False)
    page.no_script_errors()

    # a run of a task with report=True links to its report page
    browser.get(f"{base}#/runs/{SUMMARY['id']}")
    page.shows("detail-id", SUMMARY["id"])
    page.visible("#detail-report")
    href = page.read("#detail-report", "href")
    assert href.endswith(f"api/runs/{SUMMARY['id']}/report")
    page.click("#detail-report")
    page.wait.until(lambda d: len(d.window_handles) == 2)
    browser.switch_to.window(browser.window_handles[1])
    page.wait.until(lambda d: "12 pages crawled" in d.page_source)
