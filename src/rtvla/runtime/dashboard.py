"""The live terminal dashboard of ``rtvla run``: per component rate, latency p99 and budget
status, the adaptive level and the task's progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["Dashboard", "DashboardState", "render_dashboard"]


@dataclass
class DashboardState:
    """What the dashboard shows besides the recorder's figures (updated by the runtime)."""

    instruction: str = ""
    phase: str = "starting"
    plan_source: str = ""
    steps: list[str] = field(default_factory=list)
    step_index: int = -1
    step_status: str = ""
    adapt_level: int = 0
    adapt_levels: int = 1
    elapsed_s: float = 0.0
    deadline_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _status_cell(row: dict[str, Any]) -> Text:
    viols = row.get("violations") or {}
    if not viols:
        return Text("ok", style="green")
    crit = row["budget"].get("critical")
    label = ", ".join(f"{k} {v}" for k, v in sorted(viols.items()))
    return Text(label, style="red" if crit else "yellow")


def render_dashboard(snapshot: dict[str, dict[str, Any]], state: DashboardState) -> Group:
    table = Table(expand=True, header_style="bold")
    for col in ("component", "rate Hz", "budget Hz", "p99 ms", "budget ms", "missed", "CPU %", "status"):
        table.add_column(col, justify="left" if col in ("component", "status") else "right")
    for name, row in sorted(snapshot.items()):
        b = row["budget"]
        p99 = row["latency_ms"].get("p99")
        target = b.get("rate_hz") or b.get("min_throughput_hz")
        table.add_row(
            name,
            f"{row['rate_hz']:.1f}",
            f"{target:g}" if target else "-",
            f"{p99:.2f}" if p99 is not None else "-",
            f"{b['max_latency_ms']:g}",
            str(row["missed"]),
            f"{row['cpu_percent']:.0f}",
            _status_cell(row),
        )
    steps = Text()
    for i, s in enumerate(state.steps):
        if i < state.step_index:
            steps.append(f"  [done] {s}\n", style="green")
        elif i == state.step_index:
            steps.append(f"  [{state.step_status or 'running'}] {s}\n", style="bold cyan")
        else:
            steps.append(f"  [ ] {s}\n", style="dim")
    header = Text.assemble(
        ("task: ", "bold"), state.instruction or "-", "   ",
        ("phase: ", "bold"), state.phase, "   ",
        ("plan: ", "bold"), state.plan_source or "-", "   ",
        ("adaptive level: ", "bold"), f"{state.adapt_level}/{max(0, state.adapt_levels - 1)}", "   ",
        ("time: ", "bold"), f"{state.elapsed_s:.1f}/{state.deadline_s:g} s",
    )
    parts: list[Any] = [header, table]
    if state.steps:
        parts.append(Panel(steps, title="plan", expand=True))
    if state.notes:
        parts.append(Text("\n".join(state.notes[-4:]), style="yellow"))
    return Group(*parts)


class Dashboard:
    """A rich Live view refreshed from ``snapshot_fn`` at ``refresh_hz``."""

    def __init__(self, snapshot_fn: Callable[[], dict[str, dict[str, Any]]], state: DashboardState,
                 *, console: Console | None = None, refresh_hz: float = 4.0) -> None:
        self.snapshot_fn = snapshot_fn
        self.state = state
        self.console = console or Console()
        self._live = Live(get_renderable=self._render, console=self.console,
                          refresh_per_second=refresh_hz, transient=False)

    def _render(self) -> Group:
        return render_dashboard(self.snapshot_fn(), self.state)

    def __enter__(self) -> Dashboard:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()
