"""Write chapter 8's sense explorer data into the built book.

The static sense explorer at the end of chapter 8 (`backpack.analysis.explorer_html`)
loads its data, the top words of every sense of the 5,000 most frequent words of the
training split, from `_static/sense_explorer_data.js` next to the pages. The file is
1.2 MB derived from data/models/backpack-gutenberg, so the repository does not hold it:
at the end of every HTML build this extension writes it into the output's `_static/`
with chapter 8's own functions (`frequent_words`, `explorer_data`,
`write_explorer_data`), the words and sizes the chapter chooses.

Computing it takes 10 to 20 s on 2 cores (plus about a minute in a fresh clone, where
the training split is tokenized first, as chapter 1 does); the file is kept in
`backpack.data.CACHE_DIR/sense_explorer/`, named by a fingerprint of the weights, the
tokenizer, the training text and the code that writes it, so a second build copies it.

Enabled in _config.yml (`sphinx: local_extensions: {explorer_data: book/_ext}`).
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import time
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

MODEL = "backpack-gutenberg"  # chapter 8's Backpack (data/models/<MODEL>)
SPLIT = "train"  # the split whose most frequent words the explorer offers
WORDS = 5000  # as chapter 8: frequent_words(train_tokens, tokenizer, 5000, ...)
TOP = 5  # top words per sense: explorer_data(..., top=5)

logger = logging.getLogger(__name__)


def fingerprint(model, tokenizer) -> str:
    """16 hex digits naming the file's inputs: the Backpack's weights (weights_digest,
    chapter 6), the tokenizer, the training text, the settings and the code."""
    from backpack import analysis
    from backpack.checkpoint import weights_digest
    from backpack.data import CORPUS_FILES, tokenizer_fingerprint

    digest = hashlib.blake2b(digest_size=8)
    digest.update(weights_digest(model.state_dict()).encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    with open(CORPUS_FILES[SPLIT], "rb") as corpus:  # its tokens: tokenizer + text
        digest.update(hashlib.file_digest(corpus, "blake2b").digest())
    digest.update(f"{SPLIT}:{WORDS}:{TOP};".encode())
    for function in (analysis.frequent_words, analysis.top_projected,
                     analysis.explorer_data, analysis.write_explorer_data):
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()


def cached_explorer_file(cache_dir: Path | None = None) -> tuple[Path, bool]:
    """The explorer's data file in cache_dir/sense_explorer (CACHE_DIR by default),
    computed first if it is not there; and whether it was computed."""
    import torch

    from backpack.analysis import explorer_data, frequent_words, write_explorer_data
    from backpack.checkpoint import atomic_write, load_trained
    from backpack.data import CACHE_DIR, load_tokenizer, load_tokens

    tokenizer = load_tokenizer()
    model = load_trained(MODEL).eval()
    folder = Path(CACHE_DIR if cache_dir is None else cache_dir) / "sense_explorer"
    path = folder / f"{fingerprint(model, tokenizer)}.js"
    if path.is_file():
        return path, False
    tokens = load_tokens(SPLIT, tokenizer)  # encoded into CACHE_DIR on first use
    with torch.no_grad():
        words = frequent_words(tokens, tokenizer, WORDS, model.config.vocab_size)
        data = explorer_data(model, tokenizer, words, top=TOP)
    atomic_write(path, lambda tmp: write_explorer_data(data, tmp))
    return path, True


def write_explorer_file(path: Path, cache_dir: Path | None = None) -> bool:
    """Write the explorer's data file at path (atomically), from the cache; return
    whether it had to be computed."""
    from backpack.checkpoint import atomic_write

    cached, computed = cached_explorer_file(cache_dir)
    atomic_write(Path(path), lambda tmp: shutil.copyfile(cached, tmp))
    return computed


def write_into_build(app: Sphinx, exception: Exception | None) -> None:
    """build-finished: write _static/sense_explorer_data.js into an HTML build."""
    if exception is not None or app.builder.format != "html":
        return
    from backpack.analysis import EXPLORER_DATA_NAME

    path = Path(app.outdir) / "_static" / EXPLORER_DATA_NAME
    start = time.perf_counter()
    try:
        computed = write_explorer_file(path)
    except Exception as err:
        raise ExtensionError(
            f"explorer_data: could not write {path} (chapter 8's sense explorer data, "
            f"from data/models/{MODEL}): {err}"
        ) from err
    how = "computed" if computed else "copied from the cache"
    logger.info(
        f"explorer_data: wrote {path.relative_to(app.outdir)} "
        f"({path.stat().st_size / 1e6:.1f} MB, {how}, "
        f"{time.perf_counter() - start:.1f} s)"
    )


def setup(app: Sphinx) -> dict:
    app.connect("build-finished", write_into_build)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
