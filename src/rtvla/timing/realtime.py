"""Real-time process setup: CPU affinity, SCHED_FIFO, frozen GC, mlockall.

Each setting is optional and each outcome is reported, never silently dropped: a setting the
OS refuses (no CAP_SYS_NICE in a container, say) gives one clear warning and an ``"refused:
..."`` entry in the report, which the loop's stats carry.

Usage::

    report = apply_realtime(RealtimeSettings(cpus=[1], fifo_priority=80, freeze_gc=True))
    loop.realtime.update(report)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from dataclasses import dataclass

from rtvla.errors import RealtimeSetupError

__all__ = ["RealtimeSettings", "apply_realtime"]

logger = logging.getLogger(__name__)

_MCL_CURRENT = 1
_MCL_FUTURE = 2


@dataclass(frozen=True)
class RealtimeSettings:
    """Which real-time measures to apply to the calling process (or thread, for the scheduler).

    ``strict`` turns a refused setting into :class:`~rtvla.errors.RealtimeSetupError`
    instead of a warning.
    """

    cpus: tuple[int, ...] | list[int] | None = None
    fifo_priority: int | None = None
    freeze_gc: bool = False
    mlockall: bool = False
    strict: bool = False


def _refused(report: dict[str, str], key: str, why: str, strict: bool) -> None:
    report[key] = f"refused: {why}"
    if strict:
        raise RealtimeSetupError(f"real-time setting {key} refused: {why}")
    logger.warning("real-time setting %s not applied: %s", key, why)


def apply_realtime(settings: RealtimeSettings) -> dict[str, str]:
    """Apply ``settings`` to the calling process; returns ``{setting: outcome}``."""
    report: dict[str, str] = {}
    if settings.cpus is not None:
        cpus = set(settings.cpus)
        try:
            available = os.sched_getaffinity(0)
            if not cpus <= available:
                raise OSError(f"cpus {sorted(cpus - available)} not available (have {sorted(available)})")
            os.sched_setaffinity(0, cpus)
            report["affinity"] = f"cpus {sorted(cpus)}"
        except (OSError, AttributeError) as exc:
            _refused(report, "affinity", str(exc), settings.strict)
    if settings.fifo_priority is not None:
        prio = settings.fifo_priority
        try:
            lo, hi = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
            if not lo <= prio <= hi:
                raise RealtimeSetupError(f"fifo_priority must be in [{lo}, {hi}], got {prio}")
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            report["scheduler"] = f"SCHED_FIFO priority {prio}"
        except PermissionError as exc:
            _refused(
                report, "scheduler",
                f"{exc.strerror or exc} (needs CAP_SYS_NICE or an rtprio limit; running SCHED_OTHER)",
                settings.strict,
            )
        except (OSError, AttributeError) as exc:
            _refused(report, "scheduler", str(exc), settings.strict)
    if settings.freeze_gc:
        gc.collect()
        gc.freeze()
        report["gc"] = f"frozen ({gc.get_freeze_count()} objects moved to the permanent generation)"
    if settings.mlockall:
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name or "libc.so.6", use_errno=True)
            if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            report["mlockall"] = "locked current and future pages"
        except OSError as exc:
            _refused(report, "mlockall", f"{exc} (raise RLIMIT_MEMLOCK or run with CAP_IPC_LOCK)",
                     settings.strict)
    return report
