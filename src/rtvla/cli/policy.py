"""``rtvla policy info SOURCE`` and ``rtvla serve-policy SOURCE``.

``policy info`` opens a policy (an ONNX file, ``builtin:NAME``, ``ws://HOST:PORT``), prints
its metadata, builds one observation through the mapping (``--preset``/``--mapping``, else
the policy's own, else its declared inputs; zeros where nothing is connected), runs one
inference and prints the actions' shape, dtype and finiteness with the round trip and the
server's timing. ``serve-policy`` serves an ONNX policy over openpi's websocket protocol.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rtvla.cli.common import console, fail, write_json
from rtvla.errors import ConfigError, PolicyError

__all__ = ["parse_options", "policy_info", "register"]


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (numbers, true, lists) is taken as such."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _mapping_table(preset: str | None, mapping: Path | None) -> Any:
    if preset and mapping:
        raise ConfigError("give --preset or --mapping, not both")
    if preset:
        return preset
    if mapping is None:
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        data = tomllib.loads(mapping.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--mapping {mapping}: {exc}") from None
    policy = data.get("policy", data)
    return policy.get("observation", policy)


def _zeros_from_specs(meta: Any, prompt: str) -> dict[str, Any]:
    from rtvla.policy.base import set_path

    obs: dict[str, Any] = {}
    for s in meta.observation:
        set_path(obs, s.key, prompt if s.dtype == "str" else s.zeros())
    return obs


def _describe_obs(obs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obs.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_describe_obs(v, key + "/"))
        elif isinstance(v, str):
            out[key] = {"type": "str", "value": v}
        else:
            out[key] = {"shape": list(getattr(v, "shape", ())), "dtype": str(getattr(v, "dtype", type(v).__name__))}
    return out


def _issues(meta: Any, obs: dict[str, Any]) -> list[str]:
    from rtvla.policy.base import get_path

    issues = []
    for s in meta.observation:
        try:
            v = get_path(obs, s.key)
        except KeyError:
            issues.append(f"{s.text}: expected by the policy, not in the observation")
            continue
        if s.dtype != "str" and s.shape and tuple(getattr(v, "shape", ())) != s.shape:
            issues.append(f"{s.text}: shape {tuple(getattr(v, 'shape', ()))}, the policy expects {s.shape}")
    return issues


def policy_info(source: str, options: dict[str, Any], *, observation: Any = None, prompt: str = "",
                dof: int | None = None, process: bool = False) -> dict[str, Any]:
    """Open ``source``, run one inference on a zero observation; what ``policy info`` prints."""
    import numpy as np

    from rtvla.policy.base import check_output
    from rtvla.policy.observation import ObservationMapping
    from rtvla.policy.sources import describe_source, open_policy

    kind = describe_source(source)
    if process:
        from rtvla.policy.process import PolicyProcess

        policy: Any = PolicyProcess(source, options)
        policy.start()
    else:
        policy = open_policy(source, options)
    try:
        meta = policy.metadata
        table = observation if observation is not None else meta.observation_mapping
        if table is not None:
            mapping = ObservationMapping.from_table(table)
            obs = mapping.build(None, {}, prompt, allow_missing=True, dof=dof)
            built_from = "preset/mapping" if observation is not None else "the policy's own mapping"
        elif meta.observation:
            obs = _zeros_from_specs(meta, prompt)
            built_from = "the policy's declared inputs"
        else:
            raise ConfigError(f"policy {source} declares no observation keys (an openpi server's metadata "
                              "rarely does); pass --preset libero|droid|aloha or --mapping FILE")
        run = getattr(policy, "infer_unchecked", policy.infer)  # show a bad answer, then judge it
        t0 = time.perf_counter()
        out = run(obs)
        rtt_ms = (time.perf_counter() - t0) * 1e3
        if kind == "websocket" and isinstance(out, dict) and isinstance(out.get("actions"), np.ndarray) \
                and out["actions"].ndim == 2 and (meta.horizon is None or meta.action_dim is None):
            # What an openpi server's metadata leaves out, its first chunk tells.
            meta = meta.with_overrides(horizon=meta.horizon or out["actions"].shape[0],
                                       action_dim=meta.action_dim or out["actions"].shape[1])
        raw = out.get("actions") if isinstance(out, dict) else None
        arr = raw if isinstance(raw, np.ndarray) else None
        result: dict[str, Any] = {
            "source": source,
            "kind": kind + (" (own process)" if process else ""),
            "metadata": json.loads(meta.model_dump_json()),
            "observation_from": built_from,
            "observation": _describe_obs(obs),
            "observation_issues": _issues(meta, obs),
            "actions": {
                "shape": list(arr.shape) if arr is not None else None,
                "dtype": str(arr.dtype) if arr is not None else type(raw).__name__,
                "finite": bool(np.all(np.isfinite(arr))) if arr is not None and arr.dtype.kind in "fiu" else False,
            },
            "round_trip_ms": rtt_ms,
            "server_timing": out.get("server_timing") if isinstance(out, dict) else None,
            "policy_timing": out.get("policy_timing") if isinstance(out, dict) else None,
            "other_keys": sorted(k for k in (out if isinstance(out, dict) else {})
                                 if k not in ("actions", "server_timing", "policy_timing")),
        }
        if arr is not None and arr.size and arr.dtype.kind in "fiu":
            result["actions"].update(min=float(np.nanmin(arr)), max=float(np.nanmax(arr)))
        try:
            check_output(out, meta, source=source)
            result["valid"], result["error"] = True, None
        except PolicyError as exc:
            result["valid"], result["error"] = False, str(exc)
        return result
    finally:
        policy.close()


def _print(info: dict[str, Any]) -> None:
    m = info["metadata"]
    t = Table(title=f"policy {info['source']} ({info['kind']})")
    t.add_column("field")
    t.add_column("value")
    for k in ("name", "action_dim", "horizon", "rate_hz"):
        t.add_row(k, str(m.get(k)))
    t.add_row("capabilities", ", ".join(m.get("capabilities") or []) or "none")
    for s in m.get("observation") or []:
        t.add_row("expects " + "/".join(s["key"]), f"{tuple(s['shape'])} {s['dtype']}")
    if m.get("extra"):
        t.add_row("server metadata", json.dumps(m["extra"], default=str)[:200])
    console.print(t)
    o = Table(title=f"observation (from {info['observation_from']}; zeros where nothing is connected)")
    o.add_column("key")
    o.add_column("shape / value")
    for k, v in info["observation"].items():
        o.add_row(k, repr(v["value"]) if "value" in v else f"{tuple(v['shape'])} {v['dtype']}")
    console.print(o)
    for issue in info["observation_issues"]:
        console.print(f"[yellow]warning:[/] {issue}")
    a = info["actions"]
    r = Table(title="one inference")
    r.add_column("actions shape")
    r.add_column("dtype")
    r.add_column("finite")
    r.add_column("round trip ms", justify="right")
    r.add_column("server timing")
    r.add_column("policy timing")
    def fmt(d: dict[str, float] | None) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in d.items()) if d else "-"

    r.add_row(str(tuple(a["shape"]) if a["shape"] is not None else None), a["dtype"],
              "[green]yes[/]" if a["finite"] else "[red]no[/]", f"{info['round_trip_ms']:.2f}",
              fmt(info["server_timing"]), fmt(info["policy_timing"]))
    console.print(r)
    if info["valid"]:
        console.print("[green]actions valid[/]")
    else:
        console.print(f"[red]actions rejected:[/] {info['error']}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    policy_app = typer.Typer(help="Inspect policies (ONNX files, built-ins, openpi-protocol servers).",
                             no_args_is_help=True)
    app.add_typer(policy_app, name="policy")

    @policy_app.command("info")
    def info(
        source: str = typer.Argument(..., help="an ONNX file, builtin:NAME or ws://HOST:PORT"),
        option: list[str] = typer.Option([], "--option", "-o", help="backend option KEY=VALUE (repeatable)"),
        preset: str | None = typer.Option(None, "--preset", help="observation layout: libero, droid or aloha"),
        mapping: Path | None = typer.Option(None, "--mapping", help="TOML file with a [policy.observation] table"),
        prompt: str = typer.Option("", "--prompt", help="the instruction sent as prompt"),
        dof: int | None = typer.Option(None, "--dof", help="arm joints, to size state vectors without a size"),
        process: bool = typer.Option(False, "--process", help="run the policy in its own process"),
        json_path: str | None = typer.Option(None, "--json", help="write the result as JSON to PATH, or - for stdout"),
    ) -> None:
        """Print a policy's metadata, build one observation (zeros where nothing is connected),
        run one inference and print the actions' shape, dtype, finiteness and timing."""
        try:
            opts = parse_options(option)
            result = policy_info(source, opts, observation=_mapping_table(preset, mapping), prompt=prompt,
                                 dof=dof, process=process)
        except (ConfigError, PolicyError) as exc:
            fail(str(exc))
        if json_path == "-":
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            _print(result)
            if json_path:
                write_json(json_path, result)
        if not result["valid"]:
            raise typer.Exit(1)

    @app.command("serve-policy")
    def serve_policy(
        source: str = typer.Argument(..., help="an ONNX file or builtin:NAME"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (0.0.0.0: every interface)"),
        port: int = typer.Option(8000, "--port", help="port (0: any free port)"),
        api_key_env: str | None = typer.Option(None, "--api-key-env",
                                               help="env var holding the API key clients must send"),
        delay_ms: float = typer.Option(0.0, "--delay-ms", help="server-side latency added to each answer"),
        option: list[str] = typer.Option([], "--option", "-o", help="backend option KEY=VALUE (repeatable)"),
    ) -> None:
        """Serve an ONNX policy over openpi's websocket protocol (clients: rtvla, openpi-client),
        with GET /healthz, per-request server_timing and an optional API key."""
        from rtvla.policy.server import PolicyServer
        from rtvla.policy.sources import describe_source, open_policy

        if describe_source(source) == "websocket":
            fail("serve-policy serves an ONNX file or builtin:NAME, not another server")
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                fail(f"--api-key-env: environment variable {api_key_env!r} is not set or empty")
        try:
            policy = open_policy(source, parse_options(option))
            server = PolicyServer(policy, host=host, port=port, api_key=api_key, delay_s=delay_ms / 1e3)
        except (ConfigError, PolicyError) as exc:
            fail(str(exc))

        def ready(s: PolicyServer) -> None:
            meta = policy.metadata
            auth = f", API key from ${api_key_env}" if api_key_env else ""
            typer.echo(f"serving {meta.name} ({meta.horizon}x{meta.action_dim} at {meta.rate_hz} Hz) on "
                       f"{s.url} (health: http://{s.url.removeprefix('ws://')}/healthz; delay {delay_ms:g} ms{auth})")
            sys.stdout.flush()

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # SIGTERM (a supervisor, docker stop) ends it like Ctrl-C

        signal.signal(signal.SIGTERM, on_term)
        try:
            server.serve_forever(on_ready=ready)
        except KeyboardInterrupt:
            typer.echo("stopped")
        except PolicyError as exc:
            fail(str(exc))
        finally:
            policy.close()
