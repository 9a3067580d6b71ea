"""Rich tables of a `Report`: one per phase, peers' rows carrying the ratio taskloom/peer."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .goals import FLOOR, FLOOR_ROWS, GOALS, median
from .results import Measurement, Report


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _verdict(ratio: float, higher_is_better: bool) -> Text:
    """How many times better or worse taskloom is, whatever the metric's direction."""
    better = ratio if higher_is_better else 1 / ratio
    if better >= 1:
        return Text(f"{better:.2f}x better", style="green")
    return Text(f"{1 / better:.2f}x worse", style="red")


def phase_table(report: Report, phase: str) -> Table:
    """The table of one phase."""
    table = Table(title=report.titles.get(phase, phase), title_justify="left")
    for column in ("store", "system", "metric", "median", "min", "max", "unit"):
        table.add_column(column, justify="right" if column in ("median", "min", "max") else "left")
    table.add_column("taskloom/peer", justify="right")
    table.add_column("taskloom is", justify="right")
    rows: list[Measurement] = [m for m in report.measurements if m.phase == phase]
    last_store = None
    for m in rows:
        if last_store is not None and m.store != last_store:
            table.add_section()
        last_store = m.store
        ratio = report.ratio(m)
        table.add_row(
            m.store, m.system, m.metric, _num(m.median), _num(m.low), _num(m.high), m.unit,
            "" if ratio is None else f"{ratio:.3g}",
            "" if ratio is None else _verdict(ratio, m.higher_is_better),
        )  # fmt: skip
    return table


def goals_table(report: Report) -> Table:
    """Every goal with the value this run measured (blank where a phase did not run)."""
    table = Table(title="goals (taskloom; ratios are against the peer in this run)",
                  title_justify="left")  # fmt: skip
    for column in ("goal", "measured", "bar", "met"):
        table.add_column(column, justify="left" if column == "goal" else "right")
    for goal in GOALS:
        value = goal.value(report)
        bar = f"{'>=' if goal.higher_is_better else '<='} {_num(goal.bar)} {goal.unit}"
        if value is None:
            table.add_row(goal.what, "", bar, "")
            continue
        met = Text("yes", style="green") if goal.met(value) else Text("no", style="red")
        table.add_row(goal.what, f"{_num(value)} {goal.unit}", bar, met)
    floor = [(label, median(report, phase, "redis", FLOOR, metric))
             for label, phase, metric in FLOOR_ROWS]  # fmt: skip
    if any(value is not None for _, value in floor):
        shown = ", ".join(f"{label} {_num(v)}" for label, v in floor if v is not None)
        table.caption = f"bare-Redis floor (LPUSH/BRPOP): {shown} (runs/s; p50 in ms)"
    return table


def render(report: Report) -> Group:
    """Every phase's table, the goals, the load average, then the notes."""
    parts: list[Table | Text] = [phase_table(report, phase) for phase in report.phases()]
    parts.append(goals_table(report))
    load = report.meta.get("loadavg")
    if load:
        parts.append(Text(f"load average (1, 5, 15 min) at start {load['start']}, "
                          f"at end {load['end']}; {report.meta.get('machine', '')}"))  # fmt: skip
    if report.notes:
        parts.append(Text("notes:\n" + "\n".join(f"- {n}" for n in report.notes)))
    return Group(*parts)


def print_report(report: Report, console: Console | None = None) -> None:
    """Print every table to the console (wide enough not to wrap the ratio columns)."""
    (console or Console(width=140)).print(render(report))
