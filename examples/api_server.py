"""The HTTP API and dashboard mounted into an existing FastAPI app, with a worker alongside.

    python examples/api_server.py                 # http://127.0.0.1:8000/taskloom/
    TASKLOOM_API_TOKEN=s3cret python examples/api_server.py --host 0.0.0.0

Queue a run from another shell:

    curl -X POST localhost:8000/taskloom/api/tasks/resize/runs \\
         -H 'content-type: application/json' -d '{"params": {"width": 640}}'

The app's own lifespan owns the manager and runs a worker in the same process (fine for a
demo; in production run `taskloom worker` processes next to `taskloom serve`). Metrics are at
`/taskloom/metrics`; spans go to whatever OpenTelemetry SDK the process configures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from taskloom import RetryPolicy, TaskConsumer, TaskManager, TaskRun, task
from taskloom.api import create_app
from taskloom.api.server import check_bind
from taskloom.metrics import PrometheusHooks, TracingHooks


@task(retry=RetryPolicy(max_attempts=3, wait=0.2))
def resize(width: int, height: int = 600) -> str:
    """Resize an image (pretend)."""
    return f"{width}x{height}"


@task
async def crawl(ctx: TaskRun, pages: int = 5) -> int:
    """Crawl a few pages, reporting progress."""
    for page in range(pages):
        ctx.set_progress((page + 1) / pages, f"page {page + 1}/{pages}")
        await asyncio.sleep(0.05)
    return pages


@task
def charge(order: str) -> None:
    """Charge an order; always declined here, so the dashboard has a failure to show."""
    raise ValueError(f"card declined for order {order}")


manager = TaskManager(
    os.environ.get("TASKLOOM_STORE", "sqlite:///taskloom-api.db"),
    tasks=[resize, crawl, charge],
    hooks=[PrometheusHooks(), TracingHooks()],
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """The parent app owns the manager: mounted apps get no lifespan of their own."""
    async with manager, TaskConsumer(manager, max_concurrent_tasks=4):
        yield


app = FastAPI(title="shop", lifespan=lifespan)
app.mount("/taskloom", create_app(manager))  # token: TASKLOOM_API_TOKEN, if set


@app.get("/")
async def home() -> dict[str, str]:
    """The host app's own route."""
    return {"dashboard": "/taskloom/", "api": "/taskloom/docs"}


def main() -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    check_bind(args.host, os.environ.get("TASKLOOM_API_TOKEN") or None)  # as `serve` does
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
