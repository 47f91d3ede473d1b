"""Regenerate the package and the stored outputs of chapters, in one command.

    python scripts/make_chapters.py book/05_model.ipynb [more notebooks...]
    python scripts/make_chapters.py --all

1. `nbdev-export`: the `#| export` cells of every chapter -> backpack/<module>.py
2. executes each given notebook in place (kernel python3, working directory book/), so
   that its stored outputs are the ones its code prints on this machine;
3. cleans it: nbdev's clean (volatile metadata removed) keeping cell tags, which nbval
   reads (nbval-ignore-output, nbval-skip), and numbering execution counts 1..N, which
   nbval needs; figures are stored as 256-colour PNGs (a third of the bytes; the
   repository must stay small enough to travel, and nbval does not compare images).

    python scripts/make_chapters.py --shrink-images-only book/*.ipynb   # no execution
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import base64
import io

import nbformat
from fastcore.nbio import read_nb, write_nb
from nbclient import NotebookClient
from nbdev.clean import clean_nb

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path, timeout: int = 900) -> None:
    """Run every cell of the notebook at path and store the outputs (raises on the first
    error)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)


# What the book build needs to highlight code without executing the notebook (and
# nothing volatile).
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}


def clean(path: Path) -> None:
    """Strip volatile metadata but keep tags; number the execution counts 1..N."""
    nb = read_nb(path)
    clean_nb(
        nb, allowed_cell_metadata_keys=["tags"], allowed_metadata_keys=["language_info"]
    )
    # saved widget state needs the widgets' JavaScript from a CDN, which the offline
    # book does not load; it only churns on every run (new model ids), so it is not kept
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for output in cell.get("outputs", []):
                if "execution_count" in output:
                    output["execution_count"] = count
            cell.outputs = [
                o for o in map(drop_profiler_log, cell.get("outputs", [])) if o
            ]
            for output in cell.outputs:
                shrink_png(output)
    write_nb(nb, path)


def shrink_png(output: dict) -> None:
    """Store a PNG figure of output as a 256-colour palette PNG when that is smaller
    (matplotlib's figures are RGBA with few colours: the palette keeps them as they
    look at about a third of the size)."""
    data = output.get("data", {})
    if "image/png" not in data:
        return
    from PIL import Image

    raw = base64.b64decode("".join(data["image/png"]))
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(
        buffer, "PNG", optimize=True
    )
    if buffer.tell() < len(raw):
        data["image/png"] = base64.b64encode(buffer.getvalue()).decode() + "\n"


def shrink_images_only(path: Path) -> None:
    """Shrink the stored figures of a notebook without executing it."""
    nb = read_nb(path)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            shrink_png(output)
    write_nb(nb, path)


def drop_profiler_log(output: dict) -> dict | None:
    """PyTorch's profiler logs its start and stop to stderr from C++ ("USDT:...
    profiler_start"), which no setting turns off; those lines say nothing to a reader,
    so they are dropped from the stored output (an output left empty goes with them)."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return output
    lines = [
        line for line in output["text"].splitlines(True) if not line.startswith("USDT:")
    ]
    if not lines:
        return None
    output["text"] = "".join(lines)
    return output


def main(argv: list[str]) -> None:
    if argv[:1] == ["--shrink-images-only"]:
        for path in argv[1:]:
            shrink_images_only(Path(path))
        return
    notebooks = (
        sorted((ROOT / "book").glob("*.ipynb"))
        if argv == ["--all"]
        else [Path(a) for a in argv]
    )
    subprocess.run(
        [str(Path(sys.executable).with_name("nbdev-export"))], cwd=ROOT, check=True
    )
    for path in notebooks:
        start = time.perf_counter()
        execute(path.resolve())
        clean(path.resolve())
        print(f"{path}: executed and cleaned in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
