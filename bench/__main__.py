"""`python -m bench`: run the phases, print one table per phase, write the JSON.

python -m bench --setup                 # create bench/.venv with taskloom and the peers
python -m bench                         # every phase, store and installed peer
python -m bench --quick                 # < 60 s smoke run: SQLite, taskloom vs huey
python -m bench --stores redis --peers huey,saq --reps 3 --n 10000
python -m bench --stores redis --peers huey,redis-floor --phases c   # one phase

The last table checks the goals (ratios against the peers of the same run); the load average
at start and end is printed under it. Phase f also runs on the in-memory store.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from . import fanout, venv
from .peers import MODULES, PEERS, installed
from .peers.base import STORES
from .phases import PHASES, Settings
from .report import print_report
from .results import Report
from .runner import Plan, run_sync

QUICK_N = 300
ALL_PHASES = [p.key for p in PHASES] + ["f"]
#: The smoke run skips the 2- and 4-process drains: process start-up would dominate it.
QUICK_PHASES = [p for p in ALL_PHASES if p not in ("s2", "s4")]


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="phases (--phases):\n"
        + "\n".join(f"  {p.key:<3} {p.title}" for p in PHASES)
        + f"\n  f   {fanout.TITLE}",
    )
    quick = f"smoke run: n={QUICK_N}, 1 rep, SQLite, taskloom vs huey, no s2/s4"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--stores", help=f"comma list of {','.join(STORES)}")
    parser.add_argument("--peers", help=f"comma list of {','.join(PEERS)}, or none (default: all)")
    parser.add_argument("--phases", help=f"comma list of {','.join(ALL_PHASES)}")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    parser.add_argument("--n", type=int, help=f"runs per sample (default 10000; quick {QUICK_N})")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    parser.add_argument("--setup", action="store_true", help="create bench/.venv and exit")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/taskloom-bench"),
                        help="SQLite files and worker logs")  # fmt: skip
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379"))
    parser.add_argument(
        "--redis-cluster",
        default=os.environ.get("BENCH_REDIS_CLUSTER", ""),
        help="redis+cluster://host:port,... (taskloom only; skipped without it)",
    )
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))  # fmt: skip
    return parser.parse_args(argv)


def _checked(kind: str, names: list[str] | None, known: Sequence[str]) -> list[str] | None:
    """`names` if each is one of `known`; else exit with the unknown ones named."""
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise SystemExit(
            f"python -m bench: unknown {kind} {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return names


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _versions(systems: list[str]) -> dict[str, str]:
    out = {}
    for system in systems:  # every system's name is its distribution's name
        try:
            out[system] = importlib.metadata.version(MODULES[system][1])
        except importlib.metadata.PackageNotFoundError:
            out[system] = "?"
    return out


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=venv.ROOT,
                              capture_output=True, text=True, check=False)  # fmt: skip
    except OSError:
        return "?"
    return done.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    err = Console(stderr=True)
    say = err.print
    if args.setup:
        failed = venv.setup(say)
        say(f"bench/.venv ready; failed: {', '.join(failed) or 'none'}")
        return 1 if failed else 0
    # names are checked before anything runs (or re-executes in bench/.venv)
    quick = args.quick
    stores = _checked("store", _split(args.stores), STORES) or (
        ["sqlite"] if quick else list(STORES)
    )
    if args.peers == "none":  # taskloom alone
        wanted: list[str] = []
    else:
        wanted = _checked("peer", _split(args.peers), PEERS) or (["huey"] if quick else list(PEERS))
    phases = _checked("phase", _split(args.phases), ALL_PHASES)
    if venv.exists() and not venv.in_venv():
        venv.reexec(argv)
    notes = []
    if quick and "huey" in wanted and not venv.quick_huey(say):
        notes.append("huey could not be installed for the quick run: taskloom only")
    peers = [p for p in wanted if installed(p)]
    missing = [p for p in wanted if p not in peers]
    if missing:
        notes.append(f"not installed (run `python -m bench --setup`): {', '.join(missing)}")
    n = args.n or (QUICK_N if quick else 10_000)
    settings = Settings(
        n=n, reps=args.reps or (1 if quick else 3), latency_runs=min(200, n),
        sleep_runs=min(1000, n), workdir=args.workdir,
    )  # fmt: skip
    default_phases = QUICK_PHASES if quick else ALL_PHASES
    plan = Plan(stores, ["taskloom", *peers], settings, phases or default_phases,
                args.redis, args.postgres, args.redis_cluster)  # fmt: skip
    started = time.time()
    load_start = _loadavg()
    say(f"load average at start: {load_start}")
    report: Report = run_sync(plan, say)
    report.notes[:0] = notes
    report.meta = {
        "argv": argv, "quick": quick, "n": n, "reps": settings.reps, "stores": stores,
        "systems": _versions(list(plan.systems)), "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
        "commit": _commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "loadavg": {"start": load_start, "end": _loadavg()},
    }  # fmt: skip
    print_report(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default = venv.ROOT / "bench" / "results" / f"{'quick' if quick else 'run'}-{stamp}.json"
    path = report.write(args.json or default)
    say(f"JSON: {path} ({report.meta['seconds']} s)")
    return 0 if report.measurements else 1


if __name__ == "__main__":
    sys.exit(main())
