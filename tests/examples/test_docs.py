"""Every Python block in README.md and docs/ runs, unless it is marked as a fragment.

The rules, stated here where they are enforced:

- A fenced block that starts with ```python is code. The blocks of one page run in order in one
  namespace, in a fresh interpreter whose working folder is an empty temporary one, so a page
  reads like one session: a later block may use what an earlier one defined.
- Top-level `await` is allowed (the page runs inside an event loop); a block that calls
  `asyncio.run(...)` itself runs outside it.
- Coroutine functions a block defines whose names start with `test_` are awaited after it,
  so a documented test is run, not just defined.
- A block that cannot run on its own (it needs a cluster, a service, or names the page never
  defines) carries the line `<!-- fragment -->` just before its fence. It is still compiled,
  so its syntax is checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT = "<!-- fragment -->"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

# Runs one page's blocks (JSON on stdin: [[line, source, fragment], ...]).
RUNNER = r"""
import ast, asyncio, inspect, json, sys, types

blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
loop = asyncio.new_event_loop()  # one loop for every awaiting block: what they open stays usable

for line, source, fragment in blocks:
    code = compile(source, f"{sys.argv[1]}:{line}", "exec", flags=flags)
    if fragment:
        continue
    before = set(namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        loop.run_until_complete(types.FunctionType(code, namespace)())
    else:
        exec(code, namespace)  # outside the loop: a block may call asyncio.run itself
    for name in sorted(set(namespace) - before):
        if name.startswith("test_") and inspect.iscoroutinefunction(namespace[name]):
            loop.run_until_complete(namespace[name]())
"""


def blocks(page: Path) -> list[tuple[int, str, bool]]:
    """(line, source, is fragment) of each Python block of `page`."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 2
        found.append((line, match[1], before.strip() == FRAGMENT))
    return found


def test_the_pages_have_python_blocks() -> None:
    assert sum(len(blocks(p)) for p in PAGES) >= 20
    assert any(fragment for p in PAGES for _, _, fragment in blocks(p))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_page_blocks_run(page: Path, tmp_path: Path) -> None:
    import json

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    env.pop("TASKLOOM_STORE", None)  # the blocks' own store URLs, relative to tmp_path
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(page.relative_to(ROOT))],
        input=json.dumps(blocks(page)), cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
