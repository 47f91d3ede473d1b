"""Hide nbdev's cell markers (`#| export`, `#| default_exp data`) in the rendered book.

The chapters are the source of the `backpack` package: nbdev reads the lines that start
with `#|` to know which cells to export and where. They are instructions to the
exporter, not code a reader needs, so this extension removes them from the code cells of
the HTML pages (the notebooks keep them). A cell whose source was only markers (the
`#| default_exp` cell of each chapter) leaves no empty box: its input is removed, and
the whole cell when it has no output either.

Enabled in _config.yml (`sphinx: local_extensions: {nbdev_markers: book/_ext}`).
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx

MARKER = re.compile(r"^\s*#\|")


def strip_markers(source: str) -> str:
    """source without its `#|` lines and the blank lines they leave at its start."""
    kept = [line for line in source.split("\n") if not MARKER.match(line)]
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept).rstrip()


def remove_markers(app: Sphinx, doctree: nodes.document) -> None:
    """Strip the markers from every notebook code cell's source block of a page."""
    for cell_input in list(doctree.findall(nodes.container)):
        if cell_input.get("nb_element") != "cell_code_source":
            continue
        for block in list(cell_input.findall(nodes.literal_block)):
            source = block.astext()
            if not any(MARKER.match(line) for line in source.split("\n")):
                continue
            code = strip_markers(source)
            if code:
                # Sphinx highlights a block only when its rawsource equals its text
                block.rawsource = code
                block.children = [nodes.Text(code)]
            else:
                block.parent.remove(block)
        if not any(cell_input.findall(nodes.literal_block)):
            cell = cell_input.parent
            cell.remove(cell_input)
            if not cell.children:
                cell.parent.remove(cell)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", remove_markers)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
