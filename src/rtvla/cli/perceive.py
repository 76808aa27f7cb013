"""``rtvla perceive`` and ``rtvla bench perception``."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from rtvla.errors import RtvlaError

__all__ = ["register"]

console = Console()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def perceive(
    source: str = typer.Argument(..., help="camera index, video file, stream URL, or 'synthetic'"),
    detector: str = typer.Option("color", "--detector", help="color | onnx"),
    model: Path | None = typer.Option(None, "--model", help="ONNX model (YOLOv8/YOLO11 layout)"),
    class_names: str | None = typer.Option(None, "--class-names", help="comma-separated names"),
    resolution: str = typer.Option("640x480", "--resolution", help="processing size WxH"),
    seconds: float = typer.Option(10.0, "--seconds", help="how long to run"),
    min_confidence: float = typer.Option(0.5, "--min-confidence"),
    loop: bool = typer.Option(False, "--loop", help="loop a video file"),
    json_path: Path | None = typer.Option(None, "--json", help="write per-second figures here"),
    save_annotated: Path | None = typer.Option(None, "--save-annotated",
                                               help="write annotated frames to this folder"),
) -> None:
    """Run the vision pipeline on a source; print detections and timing every second."""
    from rtvla.metrics import Recorder
    from rtvla.perception import (
        ColorDetector,
        OpenCVSource,
        PipelineSettings,
        SourceStatus,
        SyntheticSource,
        VisionPipeline,
        parse_resolution,
    )
    from rtvla.perception import (
        save_annotated as write_annotated,
    )

    if seconds <= 0:
        raise typer.BadParameter(f"--seconds must be > 0, got {seconds}")
    try:
        res = parse_resolution(resolution)
        if detector == "color":
            det: Any = ColorDetector()
        elif detector == "onnx":
            if model is None:
                raise typer.BadParameter("--detector onnx needs --model PATH")
            from rtvla.perception import OnnxDetector

            names = [n.strip() for n in class_names.split(",")] if class_names else None
            det = OnnxDetector(model, class_names=names)
        else:
            raise typer.BadParameter(f"--detector must be color or onnx, got {detector!r}")
        src: Any = (SyntheticSource(depth=True) if source == "synthetic"
                    else OpenCVSource(source, loop=loop))
        src.open()
    except RtvlaError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if save_annotated is not None:
        save_annotated.mkdir(parents=True, exist_ok=True)
    rec = Recorder()
    pipe = VisionPipeline(
        src, det, recorder=rec, own_source=False,
        settings=PipelineSettings(resolutions=(res,), min_confidence=min_confidence,
                                  keep_image=save_annotated is not None),
    )
    worker = threading.Thread(target=pipe.run, kwargs={"duration_s": seconds}, daemon=True)
    table = Table(title=f"rtvla perceive {source} ({det.name}, {res[0]}x{res[1]})")
    for col in ("t s", "fps", "age p50 ms", "age max ms", "dropped", "stale", "detections"):
        table.add_column(col, justify="right" if col != "detections" else "left")
    rows: list[dict[str, Any]] = []
    seq, saved = 0, 0
    start = time.monotonic()
    worker.start()
    try:
        with console.status("perceiving...") as status:
            second_end = start + 1.0
            ages: list[float] = []
            n = stale = 0
            last_dropped = 0
            labels: Counter[str] = Counter()
            while True:
                sample = pipe.channel.wait_newer(seq, timeout=0.1)
                now = time.monotonic()
                if sample is not None:
                    seq = sample.seq
                    dets = sample.value
                    if dets.stale:
                        stale += 1
                    else:
                        n += 1
                        ages.append((sample.stamp_ns - dets.frame_stamp_ns) / 1e6)
                        labels = Counter(dets.labels())
                        if save_annotated is not None and dets.image is not None:
                            path = save_annotated / f"frame_{dets.frame_seq:06d}.jpg"
                            saved += write_annotated(str(path), dets.image, dets)
                done = not worker.is_alive() or getattr(src, "status", None) is SourceStatus.ENDED
                if now >= second_end or done:
                    row = {
                        "t_s": round(now - start, 2), "fps": n / max(1e-9, now - second_end + 1.0),
                        "frame_age_ms": {"p50": _pct(ages, 50), "max": max(ages) if ages else None},
                        "dropped": pipe.dropped - last_dropped, "stale": stale,
                        "detections": dict(labels), "degraded": pipe.degraded,
                    }
                    rows.append(row)
                    table.add_row(f"{row['t_s']:.1f}", f"{row['fps']:.1f}",
                                  _fmt(row["frame_age_ms"]["p50"]), _fmt(row["frame_age_ms"]["max"]),
                                  str(row["dropped"]), str(stale),
                                  ", ".join(f"{k}x{v}" for k, v in sorted(labels.items()))
                                  + (" [yellow]degraded[/yellow]" if pipe.degraded else ""))
                    status.update(f"perceiving... {row['t_s']:.0f} s, {row['fps']:.1f} fps")
                    last_dropped, ages, n, stale = pipe.dropped, [], 0, 0
                    second_end = now + 1.0
                if done:
                    break
    except KeyboardInterrupt:
        console.print("interrupted: stopping the pipeline")
    finally:
        pipe.stop()
        worker.join(timeout=5.0)
        src.close()
    console.print(table)
    summary = {"source": source, "detector": det.name, "resolution": list(res),
               "pipeline": {k: v for k, v in pipe.stats().items() if k != "loop"},
               "recorder": rec.snapshot().get("perception", {}), "per_second": rows,
               "annotated_saved": saved, "events": [e.as_dict() for e in rec.events]}
    latest = pipe.channel.latest()
    if latest is not None:
        summary["last_detections"] = latest.value.as_dict()
    console.print(f"processed {pipe.processed}, dropped {pipe.dropped}, timeouts "
                  f"{pipe.timeouts}, degraded episodes {pipe.degraded_episodes}"
                  + (f", {saved} annotated frames in {save_annotated}" if save_annotated else ""))
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        console.print(f"wrote {json_path}")


def bench_perception(
    seconds: float = typer.Option(4.0, "--seconds", help="seconds per pipeline and detector"),
    detectors: str = typer.Option("color,onnx", "--detectors", help="comma-separated"),
    onnx_stem: str | None = typer.Option(None, "--onnx-stem",
                                         help="conv channels of the test model, e.g. 16,32,64"),
    json_path: Path | None = typer.Option(None, "--json", help="write the rows here"),
    plot: Path | None = typer.Option(None, "--plot", help="PNG plot (default: beside --json)"),
) -> None:
    """rtvla's pipeline vs the reference design on a paced 640x480 @ 30 fps synthetic camera."""
    from rich.progress import Progress

    from rtvla.bench.perception import BENCH_MODEL_STEM, plot_rows, run_perception_bench

    kinds = [d.strip() for d in detectors.split(",") if d.strip()]
    bad = [k for k in kinds if k not in ("color", "onnx")]
    if bad or not kinds:
        raise typer.BadParameter(f"--detectors takes color and/or onnx, got {detectors!r}")
    if seconds <= 0:
        raise typer.BadParameter(f"--seconds must be > 0, got {seconds}")
    try:
        stem = tuple(int(c) for c in onnx_stem.split(",")) if onnx_stem else BENCH_MODEL_STEM
    except ValueError:
        raise typer.BadParameter(f"--onnx-stem must be ints like 16,32,64, got {onnx_stem!r}") from None
    import importlib.util

    if "onnx" in kinds and importlib.util.find_spec("onnx") is None:
        console.print("[yellow]the onnx package is not installed (pip install onnx): "
                      "skipping the ONNX rows, which build their test model with it[/yellow]")
        kinds.remove("onnx")
        if not kinds:
            raise typer.Exit(2)
    total = 2 * len(kinds)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("bench perception", total=total)
        rows = run_perception_bench(
            seconds, detectors=kinds, onnx_stem=stem,
            on_start=lambda p, d: progress.update(task, description=f"{p} / {d} ({seconds:g} s)"),
            on_row=lambda r: progress.advance(task),
        )
    table = Table(title="rtvla bench perception: 640x480 @ 30 fps, latest-frame vs reference")
    for col in ("pipeline", "detector", "fps", "age p50 ms", "age p99 ms", "dropped",
                "stale_processed"):
        table.add_column(col, justify="left" if col in ("pipeline", "detector") else "right")
    for r in rows:
        table.add_row(r["pipeline"], r["detector"], f"{r['fps']:.1f}",
                      _fmt(r["frame_age_ms"]["p50"]), _fmt(r["frame_age_ms"]["p99"]),
                      str(r["dropped"]), str(r["stale_processed"]))
    console.print(table)
    console.print(f"goal: 30 fps with the default detector, frame age p99 <= {2000 / 30:.1f} ms, "
                  "stale_processed = 0")
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        console.print(f"wrote {json_path}")
    if plot is None and json_path is not None:
        plot = json_path.with_suffix(".png")
    if plot is not None:
        console.print(f"wrote {plot_rows(rows, plot)}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("perceive")(perceive)
    bench.command("perception")(bench_perception)
