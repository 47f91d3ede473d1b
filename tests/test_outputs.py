"""Stored outputs that nbval compares must be the same on every CPU.

nbval re-executes each chapter and compares what it prints, character by character, with
the output stored in the notebook. Two kinds of output depend on the CPU that printed
them, because PyTorch picks its kernels (and so its rounding) by the CPU's instructions
(AVX2, AVX-512, NEON):

- a measured floating-point error printed as a number (``max |error| 2.0e-15``): the
  check is the assert beside it, so print the bound it asserts (``< 1e-12``) instead;
- a training run's log (``step 100 | loss 7.1252 | ...``): after a hundred steps the
  rounding differences have grown into the third decimal. Tag such a cell
  ``nbval-ignore-output`` (the reader still sees the run) and check what it shows with
  asserts that carry a tolerance.

This scan finds both, in every code cell that nbval compares (CONTRIBUTING says more).
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
NOT_COMPARED = {"nbval-ignore-output", "nbval-skip"}

# a number in scientific notation, e.g. 2.0e-15 or 1e-18
SCIENTIFIC = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?[eE][-+]?\d+\b")
# words that say the number is a measured error, not a setting such as a learning rate
ERROR_WORDS = re.compile(r"error|differ|deviat|mismatch|distance|moves? by|gap", re.I)
# a bound is fine: "< 1e-12", "within 1e-12"
BOUND_BEFORE = re.compile(r"(<|<=|≤|within|below|under)\s*$", re.I)
# one line of a training log: "step   100 | loss 7.1252 | val ..."
TRAINING_LOG = re.compile(r"\bstep\s+\d+\s*[|:].*\bloss\b", re.I)


def compared_output_lines(notebook: dict):
    """(cell index, line) of every output line that nbval compares."""
    for index, cell in enumerate(notebook["cells"]):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & NOT_COMPARED:
            continue
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", ""))
            text += "".join(output.get("data", {}).get("text/plain", ""))
            for line in text.splitlines():
                yield index, line


def cpu_dependent_lines(notebook: dict) -> list[str]:
    """The compared output lines that print an unbounded error or a training log."""
    found = []
    for index, line in compared_output_lines(notebook):
        if TRAINING_LOG.search(line):
            found.append(f"cell {index}: a training log: {line.strip()}")
            continue
        if not ERROR_WORDS.search(line):
            continue
        for number in SCIENTIFIC.finditer(line):
            if not BOUND_BEFORE.search(line[: number.start()]):
                found.append(f"cell {index}: an unbounded error: {line.strip()}")
                break
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_compared_outputs_do_not_depend_on_the_cpu(chapter):
    found = cpu_dependent_lines(json.loads(chapter.read_text()))
    assert not found, (
        f"{chapter.name} stores outputs that another CPU prints differently, and nbval "
        "compares them:\n  "
        + "\n  ".join(found)
        + "\nPrint the bound the cell asserts "
        "(e.g. '< 1e-12') instead of the measured error, or tag a training run's cell "
        "nbval-ignore-output and check it with asserts (see CONTRIBUTING.md)."
    )


def notebook_printing(*lines: str, tags: tuple[str, ...] = ()) -> dict:
    """A one-cell notebook whose stored output is lines."""
    output = {
        "output_type": "stream",
        "name": "stdout",
        "text": [f"{x}\n" for x in lines],
    }
    cell = {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": [],
            "outputs": [output], "execution_count": 1}
    return {"cells": [cell]}


@pytest.mark.parametrize("line", [
    "max |error| of o, dq: 8.9e-16, 2.0e-15",
    "weight 0 vs alpha zeroed by hand: max |difference| = 8.6e-06",
    "gradients within 1e-12 of the default's; the rest differs by 3e-07",
    "step   100 | loss 7.1252 | val 6.8615 (ppl 954.8) | lr 2.59e-03 | RATE",
])
def test_the_scan_catches_cpu_dependent_lines(line):
    assert cpu_dependent_lines(notebook_printing(line))


@pytest.mark.parametrize("line", [
    "max |error| of o, dq, dk, dC: each < 1e-12",
    "union of 3 micro-batches: gradients within 1e-12 of the plain ones",
    "exercise 1: step    0: learning rate 5.000e-06",
    "largest difference from the logits: below 1e-3",
])
def test_the_scan_lets_bounds_and_settings_through(line):
    assert not cpu_dependent_lines(notebook_printing(line))


def test_the_scan_skips_cells_nbval_does_not_compare():
    log = "step   100 | loss 7.1252 | val 6.8615"
    assert not cpu_dependent_lines(
        notebook_printing(log, tags=("nbval-ignore-output",))
    )
