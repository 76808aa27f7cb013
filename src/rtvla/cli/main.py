"""The ``rtvla`` command. Each sub-command lives in its own module with ``register(app, bench)``."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import typer

import rtvla.cli

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

# Every command module here defines register(app, bench_app); a new command is a new module.
# Commands import their heavy dependencies (MuJoCo, ONNX Runtime, OpenCV) inside the command,
# so `rtvla --help` is quick.
_NOT_COMMANDS = {"main", "__main__", "common"}
for _info in sorted(pkgutil.iter_modules(rtvla.cli.__path__), key=lambda m: m.name):
    if _info.name not in _NOT_COMMANDS:
        _mod = importlib.import_module(f"rtvla.cli.{_info.name}")
        if hasattr(_mod, "register"):
            _mod.register(app, bench_app)


def main() -> None:
    # Warnings and errors on the terminal; a run folder's run.log gets INFO and up.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    app()
