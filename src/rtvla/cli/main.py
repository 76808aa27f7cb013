"""The ``rtvla`` command. Each sub-command lives in its own module with ``register(app, bench)``."""

from __future__ import annotations

import importlib
import logging

import typer

__all__ = ["app", "bench_app", "main"]

app = typer.Typer(
    name="rtvla",
    help="Run Vision-Language-Action stacks in real time, measure them against budgets, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks: figures side by side with a baseline measured in the same run.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Every module here defines register(app, bench_app).
_COMMAND_MODULES = (
    "config_cmd",
    "bench_timing",
    "perceive",
    "plan",
    "control",
    "channels",
    "run",
)

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"rtvla.cli.{_name}")
    except ModuleNotFoundError as exc:  # during development a module may not exist yet
        if exc.name != f"rtvla.cli.{_name}":
            raise
        continue
    _mod.register(app, bench_app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
