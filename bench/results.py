"""Samples, medians and ratios of one benchmark run, and their JSON form."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINE = "taskloom"


@dataclass
class Measurement:
    """Every sample of one metric of one system on one store in one phase."""

    phase: str
    store: str
    system: str
    metric: str
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median over repetitions."""
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        """Smallest sample."""
        return min(self.samples)

    @property
    def high(self) -> float:
        """Largest sample."""
        return max(self.samples)


@dataclass
class Report:
    """A whole run: measurements in the order they were first taken, plus free-form notes."""

    meta: dict[str, Any] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)

    def add(
        self, phase: str, store: str, system: str, metric: str, value: float, *, unit: str,
        higher_is_better: bool,
    ) -> None:  # fmt: skip
        """Record one sample (creating the measurement on first use)."""
        for m in self.measurements:
            if (m.phase, m.store, m.system, m.metric) == (phase, store, system, metric):
                m.samples.append(value)
                return
        m = Measurement(phase, store, system, metric, unit, higher_is_better, [value])
        self.measurements.append(m)

    def baseline(self, m: Measurement) -> Measurement | None:
        """taskloom's measurement that `m` compares against (None for taskloom itself)."""
        if m.system == BASELINE:
            return None
        for other in self.measurements:
            if other.system == BASELINE and (other.phase, other.store, other.metric) == (
                m.phase, m.store, m.metric,
            ):  # fmt: skip
                return other
        return None

    def ratio(self, m: Measurement) -> float | None:
        """taskloom's median divided by `m`'s median, on the same store, phase and metric."""
        base = self.baseline(m)
        if base is None or not base.samples or not m.samples or m.median == 0:
            return None
        return base.median / m.median

    def phases(self) -> list[str]:
        """Phase keys in the order they ran."""
        return list(dict.fromkeys(m.phase for m in self.measurements))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: meta, one row per measurement (with its ratio), notes."""
        rows = []
        for m in self.measurements:
            ratio = self.ratio(m)
            rows.append({
                "phase": m.phase, "title": self.titles.get(m.phase, m.phase), "store": m.store,
                "system": m.system, "metric": m.metric, "unit": m.unit,
                "higher_is_better": m.higher_is_better, "samples": m.samples,
                "median": m.median, "min": m.low, "max": m.high,
                "ratio_taskloom_over_peer": ratio,
            })  # fmt: skip
        return {"meta": self.meta, "measurements": rows, "notes": self.notes}

    def write(self, path: Path) -> Path:
        """Write the JSON document (creating the directory) and return its path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path
