"""``rtvla config show`` and ``rtvla config check FILE``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from rtvla.cli.common import console, fail, write_json
from rtvla.config import Config, load_config
from rtvla.errors import ConfigError

__all__ = ["register"]


def _budget_table(cfg: Config) -> Table:
    t = Table(title=f"Effective budgets ({cfg.source or 'defaults'} + RTVLA_* env)")
    for col in ("component", "rate Hz", "max latency ms", "min Hz", "CPU %", "memory MB",
                "deadline s", "critical"):
        t.add_column(col, justify="left" if col == "component" else "right")
    rows = dict(cfg.requirements.budgets)
    rows["(any other)"] = cfg.requirements.other
    for name, b in rows.items():
        t.add_row(name, f"{b.rate_hz:g}" if b.rate_hz else "-", f"{b.max_latency_ms:g}",
                  f"{b.min_throughput_hz:g}", f"{b.max_cpu_percent:g}", f"{b.max_memory_mb:g}",
                  f"{b.deadline_s:g}" if b.deadline_s else "-", "yes" if b.critical else "no")
    return t


def _validate_sections(cfg: Config) -> list[str]:
    """Validate the tables owned by other packages where a validator exists."""
    try:
        from rtvla.runtime.settings import validate_sections
    except ImportError:
        return []
    return validate_sections(cfg)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    config_app = typer.Typer(help="Show or check budgets and configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(
        config: Path | None = typer.Option(None, "--config", "-c", help="rtvla.toml to load"),
        json_path: Path | None = typer.Option(None, "--json", help="also write the budgets as JSON"),
    ) -> None:
        """Print the effective budgets (defaults, file, then RTVLA_* environment overrides)."""
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            fail(str(exc))
        console.print(_budget_table(cfg))
        if json_path:
            data = {
                "source": cfg.source,
                "budgets": {k: v.model_dump() for k, v in cfg.requirements.budgets.items()},
                "other": cfg.requirements.other.model_dump(),
                "sections": cfg.sections,
            }
            write_json(json_path, data)

    @config_app.command("check")
    def check(file: Path = typer.Argument(..., help="the rtvla.toml file to validate")) -> None:
        """Validate FILE: exit 0 when valid, 2 with the field and bad value when not."""
        try:
            cfg = load_config(file, search_cwd=False)
            _validate_sections(cfg)
        except ConfigError as exc:
            fail(str(exc))
        console.print(f"[green]{file}: valid[/] ({len(cfg.requirements.budgets)} budgets, "
                      f"sections: {', '.join(sorted(cfg.sections)) or 'none'})")
