"""The package is what the notebooks export; the README's generated parts are fresh."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the only hand-written files of the package: the package docstring and the
# `python -m backpack` entry
HAND_WRITTEN = {"__init__.py", "__main__.py"}


def export_into(tmp_path: Path) -> Path:
    """Run nbdev-export on a copy of the chapters; return the exported package."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_build", ".*")
    )
    shutil.copytree(
        ROOT / "backpack",
        tmp_path / "backpack",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for module in (tmp_path / "backpack").glob("*.py"):
        if module.name not in HAND_WRITTEN:
            module.unlink()  # exported modules must come back from the notebooks alone
    nbdev_export = Path(sys.executable).with_name("nbdev-export")
    subprocess.run([str(nbdev_export)], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path / "backpack"


def test_package_matches_notebooks(tmp_path):
    exported = export_into(tmp_path)
    ours = sorted(p.name for p in (ROOT / "backpack").glob("*.py"))
    theirs = sorted(p.name for p in exported.glob("*.py"))
    assert ours == theirs, f"modules differ: {ours} vs {theirs}"
    stale = [
        name
        for name in ours
        if not filecmp.cmp(ROOT / "backpack" / name, exported / name, shallow=False)
    ]
    assert not stale, (
        f"backpack/{stale} differ from the notebooks: run `nbdev-export` "
        "(see CONTRIBUTING.md)"
    )


@pytest.mark.slow
def test_editing_an_exported_cell_without_exporting_is_caught(tmp_path):
    """The check above must notice a notebook edit that was not exported."""
    import json
    exported = export_into(tmp_path)
    nb_path = tmp_path / "book" / "02_senses.ipynb"
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if (
            cell["cell_type"] == "code"
            and source.startswith("#| export")
            and "def gelu_new" in source
        ):
            cell["source"] = source.replace('approximate="tanh"', 'approximate="none"')
    nb_path.write_text(json.dumps(nb))
    nbdev_export = Path(sys.executable).with_name("nbdev-export")
    subprocess.run([str(nbdev_export)], cwd=tmp_path, check=True, capture_output=True)
    assert not filecmp.cmp(
        ROOT / "backpack" / "senses.py", exported / "senses.py", shallow=False
    )


@pytest.mark.slow
def test_import_from_outside_the_repository(tmp_path):
    code = (
        "import backpack; from backpack.data import get_batch, load_tokenizer; "
        "from backpack.model import BackpackLM, TransformerLM; "
        "from backpack.train import train; "
        "from backpack.checkpoint import load_pretrained; "
        "from backpack.attention import attention; "
        "print(backpack.__version__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.1.0"


@pytest.mark.slow
def test_readme_results_table_is_generated():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "update_readme_results.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
