"""`python -m tests.chaos.execute_here N`: run N `work` runs with execute() in this process.

They hold here until the process is killed (CHAOS_HOLD): a worker must then finish them.
"""

from __future__ import annotations

import asyncio
import sys

from .chaos_app import make


async def main(n: int) -> None:
    async with make() as manager:
        await asyncio.gather(*(manager.execute("work", i=i, pause=0.02) for i in range(n)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
