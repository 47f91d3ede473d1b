"""Chapter 8's static sense explorer works in a browser, from file://, with no network.

Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; nothing downloads a
browser) opens the page, types a word and checks that its sense table appears with the
words of the data file. Two pages: the explorer as the chapter's stored output carries
it (always), and the built book's page when `_build/html` exists.

The data file is not in the repository: the book's build writes it (the extension
book/_ext/explorer_data.py), and these tests compute their own copy with the
extension's functions, in a temporary folder.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from backpack.analysis import EXPLORER_DATA_NAME, read_explorer_data, visible

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
BUILT_PAGE = ROOT / "_build" / "html" / "book" / "08_analysis.html"
EXTENSION = ROOT / "book" / "_ext" / "explorer_data.py"  # writes the data at build time


def load_module(name: str, path: Path):
    """A module from a file of the repository that is not in a package."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_page_checker():
    """scripts/check_pages.py, whose browser flags and known theme errors we share."""
    return load_module("check_pages", ROOT / "scripts" / "check_pages.py")


PAGE_CHECKER = load_page_checker()
ARGS = PAGE_CHECKER.CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium "
    "(apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """The explorer's data, as the book's build writes it: from the package's cache
    (CACHE_DIR/sense_explorer), computed there first (10 to 30 s on 2 cores) unless
    a build or an earlier run put it there."""
    extension = load_module("explorer_data", EXTENSION)
    path = tmp_path_factory.mktemp("explorer") / "_static" / EXPLORER_DATA_NAME
    extension.write_explorer_file(path)
    return path


def explorer_output() -> str:
    """The HTML of the explorer, as stored in the chapter's outputs."""
    nb = json.loads((ROOT / "book" / "08_analysis.ipynb").read_text())
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            html = "".join(output.get("data", {}).get("text/html", ""))
            if 'id="sense-explorer"' in html:
                return html
    raise AssertionError(
        "no explorer output in book/08_analysis.ipynb: run the chapter"
    )


def expected_rows(data_file: Path, word: str) -> list[list[str]]:
    """The top words of every sense of word, decoded from the data file in Python."""
    data = read_explorer_data(data_file)
    ids = np.frombuffer(base64.b64decode(data["top_ids"]), dtype="<u2")
    ids = ids.reshape(len(data["words"]), data["senses"], data["top"])
    row = [data["vocab"][t].strip() for t in data["words"]].index(word)
    return [[visible(data["vocab"][t]) for t in sense] for sense in ids[row].tolist()]


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def page_from_notebook(tmp_path: Path, data_file: Path) -> Path:
    """A page laid out like the built book (book/, _static/), with the output."""
    (tmp_path / "book").mkdir()
    (tmp_path / "_static").mkdir()
    shutil.copy(data_file, tmp_path / "_static" / EXPLORER_DATA_NAME)
    page = tmp_path / "book" / "page.html"
    page.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        f"{explorer_output()}</body></html>",
        encoding="utf-8",
    )
    return page


def check_explorer(
    browser, page_path: Path, data_file: Path, offline: bool = True
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_path.as_uri())
    field = page.locator("#sense-explorer input")
    field.fill("")
    field.type("king")
    table = page.locator("#sense-explorer table")
    table.wait_for(timeout=10_000)
    rows = table.locator("tr")
    expected = expected_rows(data_file, "king")
    assert rows.count() == 1 + len(expected)
    assert "king" in rows.nth(0).inner_text()
    cells = [
        [c.strip() for c in rows.nth(r + 1).locator("td").all_inner_texts()[1:]]
        for r in range(rows.count() - 1)
    ]
    assert cells == expected
    field.fill("zzzznotaword")
    assert "not one of the" in page.locator("#sense-explorer").inner_text()
    known = PAGE_CHECKER.KNOWN_JS_ERRORS  # the theme's own, on every page
    errors = [e for e in errors if not any(k in e for k in known)]
    assert not errors, errors
    if offline:  # the explorer itself asks nothing of the network
        assert all(url.startswith(("file:", "data:")) for url in requests), requests
    page.close()


@pytest.mark.slow
def test_a_second_build_copies_the_cached_file(data_file, tmp_path):
    extension = load_module("explorer_data", EXTENSION)
    copy = tmp_path / EXPLORER_DATA_NAME
    assert not extension.write_explorer_file(copy)  # in the cache now: not computed
    assert copy.read_bytes() == data_file.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [EXPLORER_DATA_NAME]  # no temp file


@pytest.mark.slow
def test_explorer_in_the_chapter_output(browser, data_file, tmp_path):
    check_explorer(browser, page_from_notebook(tmp_path, data_file), data_file)


@pytest.mark.skipif(
    not BUILT_PAGE.exists(),
    reason="the book is not built (_build/html): "
    "run `jupyter-book build .` to check the built page too",
)
@pytest.mark.slow
def test_explorer_in_the_built_book(browser, data_file):
    check_explorer(browser, BUILT_PAGE, data_file, offline=False)
