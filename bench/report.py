"""Rich tables of a `Report`: one per phase, peers' rows carrying the ratio taskloom/peer."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

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


def render(report: Report) -> Group:
    """Every phase's table, then the notes."""
    parts: list[Table | Text] = [phase_table(report, phase) for phase in report.phases()]
    if report.notes:
        parts.append(Text("notes:\n" + "\n".join(f"- {n}" for n in report.notes)))
    return Group(*parts)


def print_report(report: Report, console: Console | None = None) -> None:
    """Print every table to the console (wide enough not to wrap the ratio columns)."""
    (console or Console(width=140)).print(render(report))
