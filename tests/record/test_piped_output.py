"""Tables stay readable when stdout is not a terminal (CI logs, ``| tee``)."""

from __future__ import annotations

import io

from rtvla.cli.common import PIPED_WIDTH, PipeAwareConsole
from rtvla.metrics import Recorder, build_report, render_table


def _report() -> dict:
    rec = Recorder()
    for name in ("communication", "perception_multicam_optimizer", "navigation", "control"):
        rec.latency(name, 0.002)
        rec.count(name)
    return build_report(rec)


def test_piped_console_renders_tables_at_full_width(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()  # not a terminal
    con = PipeAwareConsole(file=out)
    assert not con.is_terminal and con.width == PIPED_WIDTH
    con.print(render_table(_report()))
    text = out.getvalue()
    assert "…" not in text
    assert "perception_multicam_optimizer" in text and "communication" in text
    for header in ("component", "budget ms", "violations", "status"):
        assert header in text
    widths = [len(line) for line in text.splitlines()]
    assert max(widths) > 80  # laid out on one line per row, not squeezed to 80 columns
    assert max(widths) < PIPED_WIDTH  # tables keep their natural width


def test_an_80_column_console_folds_cells_instead_of_cutting_them(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    con = PipeAwareConsole(file=out, width=80)
    con.print(render_table(_report()))
    text = out.getvalue()
    assert "…" not in text
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)
    assert "perception_multicam_optimizer" in first_column  # folded over lines, complete


def test_columns_in_the_environment_still_wins(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    con = PipeAwareConsole(file=io.StringIO())
    assert con.width == 120
