"""The code a reader sees fits the page: checked with ruff (through nbQA) on every chapter.

The exported modules are copies of the notebook cells, so checking the cells checks them too
(only nbdev's generated `__all__` lines and cell markers are longer, and no reader sees them).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_LINE = 88        # what the rendered book shows without clipping (the page checker checks it)
MAX_CELL_LINES = 45  # one idea per cell: about 40 lines, with some slack


def nbqa() -> str:
    """The nbqa executable of this environment."""
    path = Path(sys.executable).with_name("nbqa")
    return str(path) if path.exists() else (shutil.which("nbqa") or "nbqa")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_code_line_is_too_long(chapter):
    result = subprocess.run(
        [nbqa(), "ruff", str(chapter), "--select", "E501",
         "--line-length", str(MAX_LINE), "--no-cache", "--output-format", "concise"],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{chapter.name} has code lines over {MAX_LINE} characters (they are clipped in the "
        f"rendered book); wrap them:\n{result.stdout}{result.stderr}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_code_cell_is_too_long(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    long_cells = [(number, len("".join(cell["source"]).splitlines()))
                  for number, cell in enumerate(cells)
                  if cell["cell_type"] == "code"
                  and len("".join(cell["source"]).splitlines()) > MAX_CELL_LINES]
    assert not long_cells, (
        f"{chapter.name}: code cells (index, lines) over {MAX_CELL_LINES} lines: {long_cells}; "
        "split them into explained steps")


def test_the_check_catches_a_long_line(tmp_path):
    """The ruff check above must fail on a notebook with a too-long line."""
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": ["x = " + " + ".join(["1"] * 40) + "\n"]}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "long.ipynb"
    path.write_text(json.dumps(notebook))
    result = subprocess.run([nbqa(), "ruff", str(path), "--select", "E501",
                             "--line-length", str(MAX_LINE), "--no-cache"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "E501" in result.stdout
