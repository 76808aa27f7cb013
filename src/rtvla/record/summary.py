"""``summarize_mcap``: what a ``run.mcap`` holds, read back with the ``mcap`` reader.

The summary section (written on close) gives channels, schemas, message counts and the
time range without reading the messages; a file without one (the writer was killed)
is scanned record by record up to where it was cut, and the result says so.

Usage::

    info = summarize_mcap("runs/…/run.mcap")
    info["message_count"], info["duration_s"], info["channels"][0]["topic"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from rtvla.errors import RecordError

__all__ = ["render_mcap_summary", "summarize_mcap"]

_MAGIC = b"\x89MCAP0\r\n"


def _reader_module() -> Any:
    try:
        from mcap.reader import make_reader
    except ImportError as exc:  # pragma: no cover - mcap is a dependency of rtvla
        raise RecordError("reading MCAP needs the `mcap` package (pip install mcap)") from exc
    return make_reader


def _scan(p: Path) -> tuple[Any, ...]:
    """Read a file without a summary record by record, up to where it was cut off."""
    from mcap.exceptions import InvalidMagic
    from mcap.records import Channel, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader

    chans: dict[int, Any] = {}
    schemas: dict[int, Any] = {}
    counts: dict[int, int] = {}
    metadata: dict[str, dict[str, str]] = {}
    start = end = None
    total = 0
    truncated = False
    with p.open("rb") as f:
        try:
            for rec in StreamReader(f).records:
                if isinstance(rec, Message):
                    counts[rec.channel_id] = counts.get(rec.channel_id, 0) + 1
                    total += 1
                    start = rec.log_time if start is None else min(start, rec.log_time)
                    end = rec.log_time if end is None else max(end, rec.log_time)
                elif isinstance(rec, Channel):
                    chans[rec.id] = rec
                elif isinstance(rec, Schema):
                    schemas[rec.id] = rec
                elif isinstance(rec, Metadata):
                    metadata[rec.name] = dict(rec.metadata)
        except InvalidMagic as exc:
            raise RecordError(f"{p} is not a readable MCAP file: {exc}") from exc
        except Exception:  # cut off mid-record: everything up to the cut is counted
            truncated = True
    return chans, schemas, counts, metadata, start, end, total, truncated


def summarize_mcap(path: str | Path) -> dict[str, Any]:
    """Channels (topic, schema, encoding, message count), time range and metadata of ``path``.

    ``path`` may be a run folder (its ``run.mcap`` is read). A file without a summary (its
    writer was killed) is read record by record up to where it ends (``indexed`` False,
    ``truncated`` True when it was cut mid-record). Times are in the recording's
    clock (nanoseconds); ``wall_offset_ns`` from the ``rtvla.clock`` metadata, when there,
    converts them to Unix time. Raises :class:`RecordError` for a missing or corrupt file.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "run.mcap"
    if not p.is_file():
        raise RecordError(f"no MCAP file at {p}")
    make_reader = _reader_module()
    with p.open("rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise RecordError(f"{p} is not a readable MCAP file: it does not start with the MCAP magic")
    truncated = False
    try:
        with p.open("rb") as f:
            reader = make_reader(f)
            try:
                summary = reader.get_summary()
            except Exception:  # a file cut off mid-write: its footer is garbage
                summary = None
            indexed = summary is not None and summary.statistics is not None
            if indexed:
                metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
                stats = summary.statistics
                counts = dict(stats.channel_message_counts)
                chans, schemas = summary.channels, summary.schemas
                start, end, total = stats.message_start_time, stats.message_end_time, stats.message_count
    except Exception as exc:  # the reader raises several types for a foreign file
        raise RecordError(f"{p} is not a readable MCAP file: {type(exc).__name__}: {exc}") from exc
    if not indexed:
        chans, schemas, counts, metadata, start, end, total, truncated = _scan(p)
    channels = []
    for cid, c in sorted(chans.items(), key=lambda kv: kv[1].topic):
        schema = schemas.get(c.schema_id)
        channels.append({
            "id": cid, "topic": c.topic, "message_encoding": c.message_encoding,
            "schema": schema.name if schema is not None else None,
            "schema_encoding": schema.encoding if schema is not None else None,
            "messages": int(counts.get(cid, 0)),
        })
    clock = metadata.get("rtvla.clock", {})
    offset = int(clock["wall_offset_ns"]) if "wall_offset_ns" in clock else None
    return {
        "path": str(p),
        "bytes": p.stat().st_size,
        "indexed": indexed,
        "truncated": truncated,
        "message_count": int(total),
        "channel_count": len(channels),
        "schemas": sorted({c["schema"] for c in channels if c["schema"]}),
        "start_ns": start,
        "end_ns": end,
        "duration_s": (end - start) / 1e9 if start is not None and end is not None else 0.0,
        "wall_offset_ns": offset,
        "channels": channels,
        "metadata": metadata,
    }


def render_mcap_summary(info: dict[str, Any]) -> Table:
    """A rich table of :func:`summarize_mcap`'s channels."""
    title = (f"{info['path']}: {info['message_count']:,} messages over {info['duration_s']:.1f} s, "
             f"{info['bytes'] / 1e6:.1f} MB" + ("" if info["indexed"] else " (no summary: scanned"
                + (", cut off" if info.get("truncated") else "") + ")"))
    t = Table(title=title, header_style="bold")
    for col, justify in (("topic", "left"), ("schema", "left"), ("encoding", "left"),
                         ("messages", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in info["channels"]:
        t.add_row(c["topic"], c["schema"] or "-", c["message_encoding"], f"{c['messages']:,}")
    return t
