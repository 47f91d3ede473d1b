"""Write the browser's Backpack next to the built pages (chapter 9, last section).

The page `book/09c_browser` runs the book's Backpack in the reader's browser. The model
reaches it as a bundle of script files (`backpack.browser.write_bundle`: float16 weights
in base64, the tokenizer's tables, the interventions' tables), converted at every build
from `data/models/backpack-gutenberg` into `_build/html/_static/backpack-web`, so the
repository holds only the code. A bundle built before for the same weights and tokenizer
is copied from the package's cache (the first build computes it: about half a minute
on a 2-core CPU).

Enabled in _config.yml (`sphinx: local_extensions: {browser_bundle: book/_ext}`).
"""

from __future__ import annotations

import time
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def write_browser_bundle(app: Sphinx, exception: Exception | None) -> None:
    """After a successful HTML build: the bundle into <outdir>/_static/backpack-web."""
    if exception is not None or app.builder.format != "html":
        return
    from backpack.browser import WEB_DIR_NAME, write_bundle
    from backpack.checkpoint import trained_model_dir

    start = time.perf_counter()
    out = Path(app.outdir) / "_static" / WEB_DIR_NAME
    sizes = write_bundle(trained_model_dir("backpack-gutenberg"), out)
    logger.info(
        f"browser bundle: {len(sizes)} files, {sum(sizes.values()) / 1e6:.1f} MB in "
        f"{out} ({time.perf_counter() - start:.1f} s)"
    )


def setup(app: Sphinx) -> dict:
    app.connect("build-finished", write_browser_bundle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
