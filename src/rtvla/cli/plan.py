"""``rtvla plan "INSTRUCTION"`` and ``rtvla bench planner``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rtvla.cli.common import console, fail, write_json

__all__ = ["register"]


def _plan_table(result: Any) -> Table:
    t = Table(title="Plan")
    t.add_column("#", justify="right")
    t.add_column("action")
    t.add_column("parameters")
    t.add_column("description")
    for i, a in enumerate(result.plan.actions):
        params = a.parameters.model_dump(mode="json", exclude_none=True)
        t.add_row(str(i + 1), a.type, json.dumps(params), a.description)
    return t


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("plan")
    def plan(
        instruction: str = typer.Argument(..., help='what the robot should do, e.g. "put the red cube in the blue bin"'),
        llm_url: str | None = typer.Option(None, "--llm-url", help="OpenAI-compatible base URL (…/v1); default: [llm].base_url, else the rule planner"),
        model: str | None = typer.Option(None, "--model", help="model name on that server"),
        deadline: float | None = typer.Option(None, "--deadline", help="answer deadline in s (default: budgets.llm, 5 s)"),
        at: str | None = typer.Option(None, "--at", help="the place the robot is at now"),
        holding: str | None = typer.Option(None, "--holding", help="the object the robot holds now"),
        priority: int = typer.Option(1, help="queue priority (lower first)"),
        config: Path | None = typer.Option(None, "--config", help="rtvla.toml"),
        json_path: str | None = typer.Option(None, "--json", help="write the result as JSON to PATH ('-' prints it)"),
    ) -> None:
        """Plan one instruction: the validated plan and its timing (source, latency, degraded reason)."""
        from rtvla.config import load_config
        from rtvla.errors import ConfigError, PlanningError
        from rtvla.language import LLMSettings, PlanContext, PlanningService

        try:
            cfg = load_config(config)
            raw = cfg.section("llm")
            if llm_url is not None:
                raw["base_url"] = llm_url
            if model is not None:
                raw["model"] = model
            settings = LLMSettings.from_mapping(raw)
            if deadline is not None and not deadline > 0:
                raise ConfigError(f"--deadline must be > 0, got {deadline}")
            service = PlanningService.from_settings(
                settings, deadline_s=deadline if deadline is not None else settings.deadline(cfg))
            ctx = PlanContext(capabilities=service.capabilities, robot_place=at, holding=holding)
        except (ConfigError, ValueError) as exc:
            fail(str(exc))
            return

        async def go() -> Any:
            try:
                return await service.plan(instruction, ctx, priority=priority)
            finally:
                await service.aclose()

        try:
            result = asyncio.run(go())
        except PlanningError as exc:
            if json_path:
                payload = {"instruction": instruction, "error": type(exc).__name__, "reason": str(exc)}
                if json_path == "-":
                    console.print_json(data=payload)
                else:
                    write_json(json_path, payload)
            fail(f"{type(exc).__name__}: {exc}", code=1)
            return
        payload = {"instruction": instruction, **result.to_json(), "deadline_s": service.deadline_s,
                   "llm_url": settings.base_url, "model": settings.model if settings.base_url else None}
        if json_path == "-":
            console.print_json(data=payload)
            return
        console.print(_plan_table(result))
        status = "[yellow]degraded[/]" if result.degraded else "[green]ok[/]"
        console.print(
            f"source: [bold]{result.source}[/]  latency: {result.latency_s * 1e3:.1f} ms "
            f"(deadline {service.deadline_s:g} s)  status: {status}"
            + (f"  tokens: {result.tokens}" if result.tokens else "")
        )
        if result.reason:
            console.print(f"reason: {result.reason}")
        if json_path:
            console.print(f"json: {write_json(json_path, payload)}")

    @bench.command("planner")
    def bench_planner_cmd(
        cache_trials: int = typer.Option(2000, help="cache-hit requests"),
        overhead_trials: int = typer.Option(200, help="requests for the overhead comparison"),
        hung_trials: int = typer.Option(10, help="requests against a hung server"),
        deadline: float = typer.Option(0.5, "--deadline", help="deadline for the hung-server trials, s"),
        json_path: Path | None = typer.Option(None, "--json", help="write the figures as JSON"),
        plot: Path | None = typer.Option(Path("rtvla-bench/planner.png"), help="latency histogram PNG"),
    ) -> None:
        """Cache-hit latency, service overhead over a direct call, deadline with a hung server."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from rtvla.bench.planner import GOALS, bench_planner

        total = cache_trials + overhead_trials + hung_trials
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task("planner bench", total=total)

                def step(stage: str, n: int) -> None:
                    progress.update(task, advance=n, description=stage)

                res = bench_planner(cache_trials=cache_trials, overhead_trials=overhead_trials,
                                    hung_trials=hung_trials, deadline_s=deadline, progress=step)
        except ValueError as exc:
            fail(str(exc))
            return
        j = res.to_json()
        side = res.side_by_side()
        goals = res.goals()

        def mark(ok: bool) -> str:
            return "[green]met[/]" if ok else "[red]missed[/]"

        t = Table(title="Planning service (scripted server on 127.0.0.1; machine load affects these)")
        for col, just in (("measure", "left"), ("p50", "right"), ("p99 / max", "right"),
                          ("goal", "right"), ("", "left")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        g = list(goals.values())
        t.add_row("cache hit (us)", f"{j['cache_hit_us']['p50']:.1f}", f"{j['cache_hit_us']['p99']:.1f}",
                  f"p99 <= {GOALS['cache_hit_us_p99']:g}", mark(g[0]))
        t.add_row("service overhead (ms)", f"{j['overhead_ms']['p50']:.3f}", f"{j['overhead_ms']['p99']:.3f}",
                  f"p99 <= {GOALS['overhead_ms_p99']:g}", mark(g[1]))
        t.add_row("direct call (ms)", f"{side['direct_ms']['p50']:.2f}", f"{side['direct_ms']['p99']:.2f}", "", "baseline")
        t.add_row("through the service (ms)", f"{side['service_ms']['p50']:.2f}", f"{side['service_ms']['p99']:.2f}", "", "")
        t.add_row(f"hung server answer (s), deadline {deadline:g}", "",
                  f"max {j['hung_server_answer_s']['max']:.3f}",
                  f"<= {deadline + GOALS['hung_margin_s']:.3f}", mark(g[2]))
        console.print(t)
        if plot is not None:
            from rtvla.metrics.plots import plot_latency_distribution

            png = plot_latency_distribution(
                {"cache hit": res.cache_hit_us,
                 "service overhead": [v * 1e3 for v in res.overhead_ms],
                 "direct call": [v * 1e3 for v in res.direct_ms],
                 "through the service": [v * 1e3 for v in res.service_ms]},
                plot, title="Planning service latencies", xlabel="latency (us)")
            console.print(f"plot: {png}")
        if json_path:
            console.print(f"json: {write_json(json_path, j)}")
