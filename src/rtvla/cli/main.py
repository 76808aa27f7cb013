"""The ``rtvla`` command. Each sub-command lives in its own module with ``register(app, bench)``."""

from __future__ import annotations

import logging

import typer

from rtvla.cli import (
    bench_timing,
    channels,
    config_cmd,
    control,
    parts,
    perceive,
    plan,
    policy,
    record,
    run,
    soak,
)

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

# Every module here defines register(app, bench_app). Commands import their heavy
# dependencies (MuJoCo, ONNX Runtime, OpenCV) inside the command, so `rtvla --help` is quick.
for _mod in (config_cmd, bench_timing, perceive, plan, control, channels, run, parts, record, policy, soak):
    _mod.register(app, bench_app)


def main() -> None:
    # Warnings and errors on the terminal; a run folder's run.log gets INFO and up.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    app()
