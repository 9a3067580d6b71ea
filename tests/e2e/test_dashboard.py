"""The dashboard in headless Chromium against the app served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import unavailable

from taskloom import TaskManager, TaskRun, TaskState, task
from taskloom.api.auth import TOKEN_ENV

ROOT = Path(__file__).resolve().parents[2]
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
    raise ValueError(f"card declined for order {order}")


@task
async def crawl(ctx: TaskRun, site: str) -> None:
    """Crawl a site (long)."""


TASKS = [resize, charge, crawl]


async def seed(url: str) -> tuple[str, str]:
    """A few runs in every state, a live worker; return (failed run id, running run id)."""
    async with TaskManager(url, tasks=TASKS) as manager:
        for width in (640, 800):
            await manager.execute("resize", width=width)
        failed = await manager.execute("charge", order="A-1042")
        assert failed.state is TaskState.failure
        await manager.queue("resize", width=1024, priority="high")
        running = await manager.queue("crawl", site="example.org")
        # what a worker's claim and heartbeat write, so the page shows a run in progress
        running.state, running.worker = TaskState.running, "worker-1"
        running.start, running.progress, running.progress_note = running.queued, 0.6, "page 60/100"
        await manager.store.save(running)
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


def test_failed_run_is_retried_from_the_dashboard(
    browser: Any, served: tuple[str, str, str]
) -> None:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, failed, running = served
    # the page re-renders its tables on every poll: find elements afresh on each try
    wait = WebDriverWait(
        browser, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )

    def read(css: str, attribute: str | None = None) -> str:
        def probe(driver: Any) -> str | bool:
            found = driver.find_element(By.CSS_SELECTOR, css)
            return (found.text if attribute is None else found.get_attribute(attribute)) or False

        return str(wait.until(probe))

    def click(css: str) -> None:
        def probe(driver: Any) -> bool:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True

        wait.until(probe)

    def shows(element_id: str, text: str) -> None:
        wait.until(ec.text_to_be_present_in_element((By.ID, element_id), text))

    browser.get(base)
    failed_row = f'#runs tr[data-run-id="{failed}"]'
    assert "charge" in read(f'{failed_row}[data-state="failure"]')
    assert read('#stats tr[data-task="charge"] td[data-state="failure"]') == "1"
    assert "worker-1" in read("#workers tbody tr")

    # the run in progress shows its progress bar
    click(f'#runs tr[data-run-id="{running}"]')
    shows("detail-id", running)
    shows("detail-progress-note", "page 60/100")
    assert "60%" in read("#detail-progress", "style")

    # retry from the failed run's row: a new queued run appears, pointing back at it
    click(f"{failed_row} .btn-retry")
    new_id = read(f'#runs tr[data-from-run="{failed}"][data-state="queued"]', "data-run-id")
    assert new_id != failed
    shows("detail-id", new_id)

    # and the failed run's detail shows its error text
    click(failed_row)
    shows("detail-error-message", "ValueError: card declined for order A-1042")
    assert "Traceback" in read("#detail-traceback")

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # no script error, no blocked resource (the page has a strict CSP)

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "dashboard.png"))
    if os.environ.get("TASKLOOM_UPDATE_DOCS"):  # refresh the picture in docs/ on request only
        shutil.copyfile(artifacts / "dashboard.png", ROOT / "docs" / "dashboard.png")
