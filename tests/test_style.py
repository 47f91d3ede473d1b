"""The code a reader sees fits the page and has no dead names: ruff on every chapter
(through nbQA), on the package, the tests and the scripts.

The rules are pyproject.toml's [tool.ruff]: E501 (lines over 88 characters, clipped in
the rendered book), F (pyflakes: unused imports and variables, undefined names) and B
(bugbear: loop variables caught by closures, zip without strict=...). The exported
modules are copies of the notebook cells; only nbdev's `__all__` lines are excused.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_CELL_LINES = 45  # one idea per cell: about 40 lines, with some slack


def tool(name: str) -> str:
    """An executable of this environment (ruff, nbqa), else the one on PATH."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or name)


def ruff_chapters(*notebooks: Path | str) -> subprocess.CompletedProcess:
    """`nbqa ruff` with the project's configuration, wherever the notebooks are."""
    return subprocess.run(
        [tool("nbqa"), "ruff", *map(str, notebooks), "--config", str(CONFIG),
         "--no-cache", "--output-format", "concise"],
        cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_in_the_package_tests_and_scripts():
    result = subprocess.run(
        [tool("ruff"), "check", "backpack", "tests", "scripts", "--config", str(CONFIG),
         "--no-cache", "--output-format", "concise"],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, (
        "ruff (E501: lines over 88 characters; F: pyflakes; B: bugbear) found:\n"
        f"{result.stdout}{result.stderr}")


@pytest.mark.slow
def test_ruff_finds_nothing_in_the_chapters():
    result = ruff_chapters(*CHAPTERS)
    assert result.returncode == 0, (
        "ruff through nbQA found, in the chapters' code cells (long lines are clipped "
        "in the rendered book; wrap them, starting with `nbqa 'ruff format'`):\n"
        f"{result.stdout}{result.stderr}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_code_cell_is_too_long(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    long_cells = [(number, len("".join(cell["source"]).splitlines()))
                  for number, cell in enumerate(cells)
                  if cell["cell_type"] == "code"
                  and len("".join(cell["source"]).splitlines()) > MAX_CELL_LINES]
    assert not long_cells, (
        f"{chapter.name}: code cells (index, lines) over {MAX_CELL_LINES} lines: "
        f"{long_cells}; split them into explained steps")


@pytest.mark.slow
def test_the_check_catches_a_long_line_and_an_unused_import(tmp_path):
    """The chapters' check above must fail on a notebook with a too-long line or an
    unused import, and pass on a notebook without them."""
    def notebook(*sources: str) -> Path:
        cells = [{"cell_type": "code", "metadata": {}, "execution_count": None,
                  "outputs": [], "source": [source]} for source in sources]
        path = tmp_path / f"chapter{len(list(tmp_path.iterdir()))}.ipynb"
        path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}))
        return path

    long_line = "x = " + " + ".join(["1"] * 40) + "\n"
    bad = ruff_chapters(notebook("import math\n", long_line))
    assert bad.returncode != 0
    assert "E501" in bad.stdout and "F401" in bad.stdout, bad.stdout + bad.stderr
    good = ruff_chapters(notebook("import math\n", "x = math.pi\nx\n"))
    assert good.returncode == 0, good.stdout + good.stderr
