"""Fault injection for users: ``rtvla run --inject FAULT@SECONDS[,FAULT@SECONDS...]``.

Each fault happens for real at its time (seconds after the stack started) and is handled
the way DESIGN.md says: a critical part is restarted, a non-critical one degrades, the robot
is stopped when control is lost. ``report.json`` lists every fault with when it happened and
its outcome, read from what the stack recorded.

=================  ==========================================================================
fault              what happens
=================  ==========================================================================
control-kill       SIGKILL to the control process (as the OOM killer would)
control-hang       the robot's ``send_command`` blocks forever inside the control process
perception-crash   the perception step raises once
detector-hang      the detector blocks for 3 s inside one detection
camera-drop        the camera delivers no new frame for 3 s
llm-hang           LLM requests go to a server on 127.0.0.1 that accepts and never answers
llm-garbage        LLM requests go to a server on 127.0.0.1 that answers text holding no plan
disk-full          writes to the run folder fail with ENOSPC from then on
=================  ==========================================================================

``llm-*`` faults: from the fault's time on, the planning service's requests go to an
OpenAI-compatible server on 127.0.0.1 that rtvla starts for the purpose and that hangs (it
reads the request and never answers) or answers a well-formed chat completion whose text
holds no plan. Before that time the configured planner answers (the LLM, or the embedded
rule planner). The rule planner is the fallback, as in any run.

Usage::

    faults = parse_faults("control-kill@5,camera-drop@2")
    injector = FaultInjector(faults)
    injector.prepare(stack)        # before start (llm servers, wrappers)
    injector.start(stack)          # the schedule, relative to now
    ...
    report["faults"] = injector.outcomes(stack, report)
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rtvla.errors import ConfigError

__all__ = ["FAULTS", "Fault", "FaultInjector", "parse_faults"]

logger = logging.getLogger(__name__)

FAULTS: dict[str, str] = {
    "control-kill": "SIGKILL to the control process",
    "control-hang": "the robot's send_command blocks forever in the control process",
    "perception-crash": "the perception step raises once",
    "detector-hang": "the detector blocks for 3 s",
    "camera-drop": "the camera delivers no new frame for 3 s",
    "llm-hang": "LLM requests go to a local server that never answers",
    "llm-garbage": "LLM requests are answered with text that holds no plan",
    "disk-full": "writes to the run folder fail with ENOSPC",
}
_OUTAGE_S = 3.0  # how long detector-hang and camera-drop last


@dataclass
class Fault:
    kind: str
    at_s: float
    injected_at_s: float | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"fault": self.kind, "at_s": self.at_s, "injected_at_s": self.injected_at_s,
                "what": FAULTS[self.kind], "detail": self.detail}


def parse_faults(text: str | None) -> list[Fault]:
    """``"control-kill@5,camera-drop@2.5"`` -> faults; errors name the bad item."""
    if not text:
        return []
    out: list[Fault] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        kind, sep, at = item.partition("@")
        if kind not in FAULTS:
            raise ConfigError(f"--inject: unknown fault {kind!r} in {item!r}; known: {', '.join(FAULTS)}")
        if not sep:
            raise ConfigError(f"--inject: {item!r} needs a time: {kind}@SECONDS")
        try:
            at_s = float(at)
        except ValueError:
            raise ConfigError(f"--inject: time of {item!r} must be a number of seconds, got {at!r}") from None
        if not (at_s >= 0 and at_s < 1e6):
            raise ConfigError(f"--inject: time of {item!r} must be >= 0 s, got {at_s}")
        out.append(Fault(kind, at_s))
    return sorted(out, key=lambda f: f.at_s)


# -- the control process side (imported by the child: keep it light) ---------------------

class _HangOnSignal:
    """Wraps the robot built in the control process: after SIGUSR1, ``send_command`` blocks
    forever (a driver call that never returns). Everything else is the robot's own."""

    def __init__(self, robot: Any) -> None:
        self._robot = robot
        self._hang = False
        signal.signal(signal.SIGUSR1, self._arm)

    def _arm(self, signum: int, frame: Any) -> None:
        self._hang = True

    def send_command(self, cmd: Any) -> None:
        if self._hang:
            threading.Event().wait()  # never set: this call never returns
        self._robot.send_command(cmd)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._robot, name)


def hang_capable(factory: Any) -> Any:
    """Build the robot from ``factory`` and make it hang on SIGUSR1 (picklable partial)."""
    return _HangOnSignal(factory())


# -- run-folder writes ----------------------------------------------------------------------

class _FullDisk:
    """A file object whose writes fail like a full disk."""

    def write(self, data: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device (injected disk-full)")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (injected disk-full)")

    def close(self) -> None:
        return None


# -- a broken LLM server ------------------------------------------------------------------

_GARBAGE = "I am sorry, as a language model I cannot {decide} that. ]]}{ <|im_end|>"


class _BrokenLLMServer:
    """OpenAI-compatible ``POST /v1/chat/completions`` on 127.0.0.1 that hangs (reads the
    request, then holds the connection until the server stops) or answers garbage text."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug("broken llm server: " + fmt, *args)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.requests += 1
                if owner.mode == "hang":
                    owner._stop.wait()  # until the server stops: the client's deadline decides
                    return
                body = json.dumps({
                    "id": f"fault-{owner.requests}", "object": "chat.completion", "created": int(time.time()),
                    "model": "fault", "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": _GARBAGE}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="rtvla-broken-llm", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(2.0)


class _SwitchPlanner:
    """The configured planner until ``at`` (monotonic s), then the broken server's."""

    def __init__(self, before: Any, after: Any, at: list[float]) -> None:
        self.before, self.after, self.at = before, after, at

    async def plan(self, instruction: str, context: Any = None) -> Any:
        live = self.at[0] and time.monotonic() >= self.at[0]
        return await (self.after if live else self.before).plan(instruction, context)

    async def close(self) -> None:
        for p in (self.before, self.after):
            close = getattr(p, "close", None)
            if close is not None:
                await close()


# -- the injector ---------------------------------------------------------------------------

@dataclass
class FaultInjector:
    """Prepares, schedules and reports the faults of one run."""

    faults: list[Fault]
    run_dir: Any = None  # the RunDir (disk-full)
    metrics: Any = None  # the MetricsLog (disk-full)
    _t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _server: Any = None
    _crash_armed: threading.Event = field(default_factory=threading.Event)
    _hang_until: list[float] = field(default_factory=lambda: [0.0])
    _drop_until: list[float] = field(default_factory=lambda: [0.0])
    _llm_at: list[float] = field(default_factory=lambda: [0.0])

    def kinds(self) -> set[str]:
        return {f.kind for f in self.faults}

    def prepare(self, stack: Any) -> None:
        """Install what must be in place before the stack starts."""
        kinds = self.kinds()
        if "control-hang" in kinds:
            if not stack.control_in_process:
                raise ConfigError("--inject control-hang needs control.placement = 'process'")
            proc = stack.control
            proc.robot_factory = functools.partial(hang_capable, proc.robot_factory)
        if "perception-crash" in kinds:
            self._wrap_perception(stack.pipeline)
        if "detector-hang" in kinds:
            for det in stack.pipeline.detectors.values():
                self._wrap_detector(det)
        if "camera-drop" in kinds:
            self._wrap_camera(stack.pipeline.source)
        llm = kinds & {"llm-hang", "llm-garbage"}
        if llm:
            from rtvla.language import LLMSettings, OpenAIPlanner

            self._server = _BrokenLLMServer("hang" if "llm-hang" in llm else "garbage")
            service = stack.planner
            broken = OpenAIPlanner(LLMSettings(base_url=self._server.base_url, model="fault",
                                               max_retries=0))
            service.planner = _SwitchPlanner(service.planner or service.fallback, broken, self._llm_at)

    def _wrap_perception(self, pipeline: Any) -> None:
        real = pipeline.step
        armed = self._crash_armed

        def step(tick: Any = None) -> Any:
            if armed.is_set():
                armed.clear()
                raise RuntimeError("injected perception-crash")
            return real(tick)

        pipeline.step = step

    def _wrap_detector(self, det: Any) -> None:
        until = self._hang_until

        def hanging(fn: Any) -> Any:
            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                wait = until[0] - time.monotonic()
                if wait > 0:
                    until[0] = 0.0  # one detection hangs, for the rest of the outage
                    self._stop.wait(wait)
                return fn(*args, **kwargs)
            return call

        det.detect = hanging(det.detect)
        if hasattr(det, "infer"):
            det.infer = hanging(det.infer)

    def _wrap_camera(self, source: Any) -> None:
        until = self._drop_until
        real_read, real_wait = source.read, getattr(source, "wait_newer", None)
        frozen: list[Any] = [None]

        def read() -> Any:
            if time.monotonic() < until[0]:
                return frozen[0]  # the last frame before the drop: nothing new arrives
            frame = real_read()
            frozen[0] = frame
            return frame

        def wait_newer(seq: int, timeout: float | None = None) -> Any:
            if time.monotonic() < until[0]:
                self._stop.wait(timeout if timeout is not None else 0.1)
                return None
            return real_wait(seq, timeout) if real_wait is not None else None

        source.read = read
        if real_wait is not None:
            source.wait_newer = wait_newer

    def start(self, stack: Any) -> None:
        """Run the schedule in a thread, from now."""
        self._t0 = time.monotonic()
        if not self.faults:
            return
        self._thread = threading.Thread(target=self._run, args=(stack,), name="rtvla-faults", daemon=True)
        self._thread.start()

    def _run(self, stack: Any) -> None:
        for fault in self.faults:
            wait = self._t0 + fault.at_s - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            try:
                fault.detail = self._inject(fault, stack)
            except Exception as exc:  # report it; a fault that could not be injected is news
                fault.detail = f"could not inject: {type(exc).__name__}: {exc}"
                logger.error("fault %s: %s", fault.kind, fault.detail)
            fault.injected_at_s = round(time.monotonic() - self._t0, 3)
            stack.recorder.event("faults", "injected", f"{fault.kind}: {fault.detail}",
                                 fault=fault.kind, at_s=fault.injected_at_s)
            logger.warning("injected fault %s at %.2f s: %s", fault.kind, fault.injected_at_s, fault.detail)

    def _inject(self, fault: Fault, stack: Any) -> str:
        kind = fault.kind
        if kind in ("control-kill", "control-hang"):
            pid = stack.control.pid if stack.control_in_process else None
            if pid is None:
                raise ConfigError(f"{kind} needs the control process")
            os.kill(pid, signal.SIGKILL if kind == "control-kill" else signal.SIGUSR1)
            return f"{'SIGKILL' if kind == 'control-kill' else 'send_command blocked'} (pid {pid})"
        if kind == "perception-crash":
            self._crash_armed.set()
            return "the next perception step raises"
        if kind == "detector-hang":
            self._hang_until[0] = time.monotonic() + _OUTAGE_S
            return f"the next detection blocks for {_OUTAGE_S:g} s"
        if kind == "camera-drop":
            self._drop_until[0] = time.monotonic() + _OUTAGE_S
            return f"no new frame for {_OUTAGE_S:g} s"
        if kind in ("llm-hang", "llm-garbage"):
            self._llm_at[0] = time.monotonic()
            return (f"LLM requests now go to {self._server.base_url}, which "
                    f"{'never answers' if kind == 'llm-hang' else 'answers garbage'}")
        if kind == "disk-full":
            if self.run_dir is not None:
                self.run_dir.refuse_writes(errno.ENOSPC)
            if self.metrics is not None:
                self.metrics.swap_file(_FullDisk())
            return "the run folder refuses writes (ENOSPC)"
        raise ConfigError(f"unknown fault {kind!r}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- outcomes -------------------------------------------------------------------------

    def outcomes(self, stack: Any, report: dict[str, Any]) -> list[dict[str, Any]]:
        """Each fault with what the stack made of it, from the report's records."""
        events = report.get("events", [])

        def had(component: str, *kinds: str) -> list[dict[str, Any]]:
            return [e for e in events if e.get("component") == component and e.get("kind") in kinds]

        sup = report.get("supervisor", {})
        rows = []
        for f in self.faults:
            row = f.as_dict()
            if f.injected_at_s is None:
                row["outcome"] = "not injected: the run ended first"
            elif f.kind in ("control-kill", "control-hang"):
                lost = had("control", "lost")
                row["outcome"] = (f"control lost ({lost[0]['message']}); robot stopped; run ended"
                                  if lost else "control was not reported lost")
            elif f.kind == "perception-crash":
                restarts = sup.get("perception", {}).get("restarts", 0)
                row["outcome"] = f"perception restarted ({restarts} restart{'s' if restarts != 1 else ''})"
            elif f.kind == "detector-hang":
                p = report.get("perception", {})
                row["outcome"] = (f"detections re-published stale while it hung "
                                  f"({p.get('timeouts', 0)} timeouts); perception kept its loop")
            elif f.kind == "camera-drop":
                deg, rec = had("perception", "degraded"), had("perception", "recovered")
                row["outcome"] = ("perception degraded (no frames; detections marked stale)"
                                  + (", then recovered" if rec else "")) if deg else "no degradation recorded"
            elif f.kind in ("llm-hang", "llm-garbage"):
                task = report.get("task", {})
                row["outcome"] = (f"plan from {task.get('plan_source')}"
                                  + (f" (degraded: {task.get('degraded_reason')})" if task.get("degraded_reason") else ""))
            elif f.kind == "disk-full":
                row["outcome"] = "run folder unwritable; the report went to stderr"
            rows.append(row)
        return rows
