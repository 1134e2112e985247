"""Chapters 1 and 2 run with other parameters, and what they print stays true.

Each chapter is executed with papermill (``ci/run_papermill.py``) into a temporary folder,
with its smoke parameters (``ci/smoke/<chapter>.yaml``) and with the same plus ``SEEDS=[0]``;
then its printed lines are read back:

- no ``nan`` anywhere in what a reader sees (text outputs and printed lines);
- every printed line fits the book's page (``fedlib.report.PAGE_WIDTH``);
- with one seed: no method is called "best" or said to "lead", and the text says "one seed";
- a gap sentence states a share only between 0 % and 100 % (otherwise it says why not);
- parameters that make no sense stop the chapter in its first cells with one clear line.

These tests start a Jupyter kernel per run (about two minutes in all on one free core). They
run in ``make unit``; alone: ``.venv/bin/python -m pytest tests/test_chapter_outputs.py -q``.
Set ``FEDLIB_SKIP_NOTEBOOK_RUNS=1`` to skip them (e.g. while iterating on unit tests).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from fedlib.report import PAGE_WIDTH

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = ("01_fedavg_across_hospitals", "02_class_imbalance")
RUNS = {"smoke": {}, "one seed": {"SEEDS": [0]}}

pytestmark = pytest.mark.skipif(os.environ.get("FEDLIB_SKIP_NOTEBOOK_RUNS") == "1",
                                reason="FEDLIB_SKIP_NOTEBOOK_RUNS=1")


def execute(stem: str, parameters: dict, out_dir: Path) -> subprocess.CompletedProcess:
    """Run notebooks/<stem>.ipynb with the given parameters; the copy lands in ``out_dir``."""
    params = out_dir / f"{stem}.yaml"
    params.write_text(yaml.safe_dump(parameters))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PLOTLY_RENDERER": "json", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    command = [sys.executable, str(ROOT / "ci" / "run_papermill.py"),
               str(NOTEBOOKS / f"{stem}.ipynb"), str(out_dir / f"{stem}.ipynb"),
               "--kernel", "python3", "--cwd", str(NOTEBOOKS), "--no-progress-bar",
               "--execution-timeout", "600", "--parameters_file", str(params)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)


def smoke_parameters(stem: str) -> dict:
    return yaml.safe_load((ROOT / "ci" / "smoke" / f"{stem}.yaml").read_text())


def shown_text(path: Path) -> tuple[list[str], list[str]]:
    """(printed lines, every text output) of an executed notebook."""
    printed, texts = [], []
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                printed += output.text.splitlines()
                texts.append(output.text)
            elif "data" in output and "text/plain" in output.data:
                text = output.data["text/plain"]
                if not text.startswith(("Figure(", "interactive(")):
                    texts.append(text)
    return printed, texts


@pytest.fixture(scope="module", params=[(c, r) for c in CHAPTERS for r in RUNS],
                ids=lambda p: f"{p[0][:2]}-{p[1].replace(' ', '-')}")
def executed(request, tmp_path_factory):
    stem, run = request.param
    out_dir = tmp_path_factory.mktemp(f"{stem[:2]}_{run.replace(' ', '_')}")
    result = execute(stem, {**smoke_parameters(stem), **RUNS[run]}, out_dir)
    assert result.returncode == 0, f"{stem} ({run}) failed:\n{result.stderr[-3000:]}"
    printed, texts = shown_text(out_dir / f"{stem}.ipynb")
    return stem, run, printed, texts


def test_no_nan_is_shown(executed):
    stem, run, _, texts = executed
    bad = [text for text in texts if re.search(r"\bnan\b", text, flags=re.IGNORECASE)]
    assert not bad, f"{stem} ({run}) shows 'nan':\n" + "\n---\n".join(bad)[:3000]


def test_printed_lines_fit_the_page(executed):
    stem, run, printed, _ = executed
    long = [line for line in printed if len(line) > PAGE_WIDTH]
    assert not long, f"{stem} ({run}) prints lines over {PAGE_WIDTH} characters: {long}"


def test_one_seed_names_no_winner(executed):
    stem, run, printed, _ = executed
    if run != "one seed":
        pytest.skip("several seeds")
    text = "\n".join(printed)
    assert "one seed" in text, f"{stem}: with one seed the text must say so."
    claims = [line for line in printed if re.search(r"\b(best|leads?)\b", line)]
    assert not claims, f"{stem}: with one seed nothing is 'best' or 'leads': {claims}"
    assert "SEEDS" in text and "[0]" in text  # the parameters listed are the ones used


def test_gap_share_only_when_its_premise_holds(executed):
    stem, run, printed, _ = executed
    text = " ".join(line.strip() for line in printed)
    for share in re.findall(r"closes (-?\d+)% of the gap", text):
        assert 0 < int(share) < 100, f"{stem} ({run}): 'closes {share}% of the gap'"


@pytest.mark.parametrize(("stem", "parameters", "message"), [
    ("01_fedavg_across_hospitals", {"SEEDS": []},
     "Chapter 1: 'SEEDS' must be a non-empty list of distinct ints >= 0, got []."),
    ("02_class_imbalance", {"SEEDS": 0},
     "Chapter 2: 'SEEDS' must be a non-empty list of distinct ints >= 0, got 0."),
    ("02_class_imbalance", {"LT_HEAD": 100000},
     "Chapter 2: LT_HEAD = 100000, BALANCED_TEST_PER_CLASS = 48, SCALE = 0.05, "
     "IMAGE_SIZE = 28 would generate 801,915 images"),
])
def test_bad_parameters_stop_with_one_clear_line(stem, parameters, message, tmp_path):
    result = execute(stem, parameters, tmp_path)
    assert result.returncode != 0
    nb = json.loads((tmp_path / f"{stem}.ipynb").read_text())
    errors = [output for cell in nb["cells"] for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["evalue"].startswith(message), errors[0]["evalue"]
    first_code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(nb["cells"]) if any(
        o.get("output_type") == "error" for o in c.get("outputs", [])))
    # install, parameters, papermill's injected values, then the checks
    assert failed in first_code[:5], "the parameters must be checked in the first cells"
