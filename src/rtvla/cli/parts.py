"""``rtvla parts [KIND] [--check] [--json PATH|-]``: every available part and where it comes from."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from rtvla.cli.common import console, fail, write_json
from rtvla.errors import PartError

__all__ = ["parts_listing", "register"]


def _check(ref: Any) -> dict[str, Any]:
    """Import the factory: does it load, and which options does it declare?"""
    from rtvla.parts import options_model

    try:
        factory = ref.load()
    except PartError as exc:
        return {"loads": False, "error": str(exc)}
    model = options_model(factory)
    if model is None:
        return {"loads": True, "options_model": None}
    fields = {name: (None if f.is_required() else repr(f.default)) for name, f in model.model_fields.items()}
    return {"loads": True, "options_model": f"{model.__module__}.{model.__qualname__}", "options": fields}


def parts_listing(kind: str | None = None, *, check: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Kind -> the parts available for it (``rtvla parts --json``'s content)."""
    from rtvla.parts import KINDS, available

    kinds = KINDS if kind is None else (kind,)
    out: dict[str, list[dict[str, Any]]] = {}
    for k in kinds:
        rows = []
        for ref in available(k):
            row = ref.to_dict()
            if check:
                row.update(_check(ref))
            rows.append(row)
        out[k] = rows
    return out


def _table(listing: dict[str, list[dict[str, Any]]], check: bool) -> Table:
    t = Table(title="Available parts (config: a name, or 'package.module:factory')")
    for col in ("kind", "name", "from", "target"):
        t.add_column(col)
    if check:
        t.add_column("loads")
        t.add_column("options")
    for kind, rows in listing.items():
        if not rows:
            t.add_row(kind, "[dim](none installed)[/]", "", "", *(["", ""] if check else []))
        for r in rows:
            origin = r["origin"] + (f" [yellow](shadowed by {r['shadowed_by']})[/]" if r.get("shadowed_by") else "")
            cells = [kind, r["name"], origin, r["target"]]
            if check:
                if r["loads"]:
                    cells.append("[green]yes[/]")
                    opts = r.get("options")
                    cells.append(", ".join(opts) if opts else "(keyword arguments)")
                else:
                    cells += ["[red]no[/]", r["error"]]
            t.add_row(*cells)
    return t


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("parts")
    def parts(
        kind: str | None = typer.Argument(None, help="robot, camera, detector, planner or policy (default: all)"),
        check: bool = typer.Option(False, "--check", help="import each factory and list its options"),
        json_path: str | None = typer.Option(None, "--json", help="write the list as JSON to PATH, or - for stdout"),
    ) -> None:
        """List every part rtvla can build, by kind, with where it comes from: built in, an
        entry point of an installed distribution (groups rtvla.robots, rtvla.cameras,
        rtvla.detectors, rtvla.planners, rtvla.policies), or a module path."""
        from rtvla.parts import check_kind

        try:
            if kind is not None:
                check_kind(kind)
            listing = parts_listing(kind, check=check)
        except PartError as exc:
            fail(str(exc))
        if json_path == "-":
            typer.echo(json.dumps(listing, indent=2))
            return
        console.print(_table(listing, check))
        if json_path:
            write_json(json_path, listing)
