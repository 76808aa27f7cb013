"""``rtvla node PART --config FILE``: one part of a stack in its own process, over Zenoh."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import typer

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("node")
    def node(
        part: str = typer.Argument(..., help="camera or perception (a policy node is `rtvla serve-policy`)"),
        config: str | None = typer.Option(None, "--config", help="rtvla.toml with the tables robot, perception and remote (zenoh endpoints)"),
        camera: str | None = typer.Option(None, "--camera", help="which camera (default: the first)"),
        startup_timeout: float = typer.Option(30.0, "--startup-timeout", help="seconds to the first output"),
        json_path: str | None = typer.Option(None, "--json", help="write the node's figures to PATH on exit"),
    ) -> None:
        """Run one part of a stack (a camera, or camera + perception) as its own process on this
        or another host. It connects as the config's remote table says (peer or client mode,
        listen/connect endpoints, no multicast scouting unless enabled), publishes under
        rtvla/<robot>/, sends its figures on rtvla/<robot>/metrics/<part>, answers clock pings and
        holds a liveliness token. A stack uses it through its remote.<part> table. Ctrl-C or
        SIGTERM stops it."""
        from rtvla.config import load_config
        from rtvla.errors import ConfigError, RtvlaError
        from rtvla.runtime.node import Node

        try:
            cfg = load_config(config)
            n = Node(part, cfg, camera=camera)
        except ConfigError as exc:
            fail(str(exc))
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            n.start(startup_timeout)
            assert n.keys is not None
            s = n.settings
            console.print(f"node {part} up on {n.host}: keys rtvla/{n.keys.robot}/..., "
                          f"listen {s.listen or '-'}, connect {s.connect or '-'} ({s.mode} mode)")
            sys.stdout.flush()
            n.wait(stop)
        except RtvlaError as exc:
            console.print(f"[red]error:[/] {exc}")
            code = 4
        finally:
            n.stop()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        summary = n.summary()
        console.print(f"node {part} stopped: {summary['published']} published")
        if json_path:
            write_json(json_path, summary)
        if code:
            raise typer.Exit(code)
