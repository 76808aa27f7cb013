"""Helpers shared by the CLI modules: console, JSON output, progress."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from rtvla.metrics.report import json_safe

__all__ = ["PIPED_WIDTH", "PipeAwareConsole", "console", "err_console", "fail", "stage_progress",
           "write_json"]

#: Line width when output goes to a file or pipe: wide enough for every table, so CI logs
#: and ``| tee`` get whole cells instead of rich's 80-column default (``com…``).
PIPED_WIDTH = 400


class PipeAwareConsole(Console):
    """A rich console that, writing to a file or pipe, lays out at :data:`PIPED_WIDTH`.

    On a terminal it is an ordinary console. ``COLUMNS`` or an explicit ``width`` still
    win. Tables keep their natural width (they do not expand), so short tables stay short.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = PipeAwareConsole()
err_console = PipeAwareConsole(stderr=True)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN/inf become null); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(json_safe(data), indent=2) + "\n", encoding="utf-8")
    return p


def fail(message: str, code: int = 2) -> None:
    """Print an error and exit with ``code``."""
    import typer

    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def stage_progress(total: int, describe: Callable[[str], str]) -> Iterator[Callable[[str], None]]:
    """A transient progress bar over ``total`` stages of a benchmark.

    Yields the callback benches take as ``progress``: each call completes the previous stage
    and shows ``describe(label)`` for the one starting; leaving the block completes the last.
    """
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("starting", total=total)
        started = False

        def step(label: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=describe(label))

        yield step
        progress.advance(task)
