"""The benchmark record (``benchmarks/results.json``): targets, merging of the sections that
separate programs write, the chapters' figures read from executed copies, and the resource
record that ``ci/run_papermill.py`` leaves beside each of them. No timing here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "ci"))

import chapters  # noqa: E402
import record  # noqa: E402
import run_papermill  # noqa: E402


def test_target_compares_in_the_stated_direction():
    low = record.target("ratio", 1.02, "<=", 1.05, "x")
    assert low["met"] and low["value_over_bound"] == pytest.approx(1.02 / 1.05)
    assert not record.target("ratio", 1.08, "<=", 1.05)["met"]
    assert record.target("rate", 2500.0, ">=", 2000.0)["met"]
    assert not record.target("rate", 1500.0, ">=", 2000.0)["met"]
    with pytest.raises(ValueError, match="'op' must be"):
        record.target("rate", 1.0, "<", 2.0)


def test_merge_keeps_the_sections_of_other_programs(tmp_path):
    out = tmp_path / "results.json"
    record.merge(out, {"scale": {"rows": [1]}})
    record.merge(out, {"flower": {"rows": [2]}})
    record.merge(out, {"scale": {"rows": [3]}})
    data = json.loads(out.read_text())
    assert data["flower"] == {"rows": [2]} and data["scale"] == {"rows": [3]}
    assert data["schema"] == record.SCHEMA
    assert not list(tmp_path.glob("*.tmp"))


def test_run_records_machine_and_load():
    run = record.Run("test").finish(extra=1)
    assert run["machine"]["cores"] >= 1 and run["machine"]["cpu"]
    assert run["wall_s"] >= 0 and run["extra"] == 1 and run["command"] == "test"
    assert run["started"] <= run["finished"]


def test_chapter_row_reads_papermill_and_resources(tmp_path):
    source = tmp_path / "01_topic.ipynb"
    notebook = {
        "cells": [{"cell_type": "markdown", "source": ["# 1. A topic\n", "text"]}],
        "metadata": {"papermill": {"duration": 12.5, "start_time": "a", "end_time": "b",
                                   "exception": None, "parameters": {}}},
    }
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / source.name).write_text(json.dumps(notebook))
    row = chapters.chapter_row(source, executed)
    assert row["duration_s"] == 12.5 and row["title"] == "1. A topic"
    assert row["mode"] == "book" and row["failed"] is False and "peak_rss_bytes" not in row

    run_papermill.write_resources(str(executed / source.name), started=0.0,
                                  load_start=[1.0, 1.0, 1.0])
    row = chapters.chapter_row(source, executed)
    assert row["peak_rss_bytes"] >= 0 and row["load_start"] == [1.0, 1.0, 1.0]

    assert chapters.chapter_row(tmp_path / "02_other.ipynb", executed) == {
        "chapter": "02_other", "missing": True}


def test_execution_spans_the_chapters_runs():
    rows = [{"started": "2026-01-01T10:00:00.5+00:00", "finished": "2026-01-01T10:05:00+00:00",
             "load_start": [1.0, 1.0, 1.0], "load_end": [2.0, 2.0, 2.0]},
            {"started": "2026-01-01T10:01:00+00:00", "finished": "2026-01-01T10:09:00+00:00",
             "load_start": [3.0, 3.0, 3.0], "load_end": [4.0, 4.0, 4.0]}]
    span = chapters.execution(rows)
    assert span["started"] == "2026-01-01T10:00:00+00:00"
    assert span["finished"] == "2026-01-01T10:09:00+00:00" and span["wall_s"] == 540.0
    assert span["load_start"] == [1.0, 1.0, 1.0] and span["load_end"] == [4.0, 4.0, 4.0]
    assert chapters.execution([{"chapter": "x"}]) == {}
