"""The page checker (scripts/check_pages.py) fails on a broken page, passes a good one.

A tiny site is written to a temporary folder: good.html (a title, an image, code that
fits, math that MathJax renders offline, a wide table that scrolls in its own box, an
exercise whose solution cell is collapsed), bad.html (a missing image, a traceback in a
cell output, a code line too wide for its box, raw TeX and a math element MathJax never
rendered, an nbdev marker in a code cell, a Markdown table left as text, a wide table
cut off at the edge, an exercise whose solution cell shows its source and output) and
untitled.html (no <h1>). Runs in a few seconds; skipped where Debian's Chromium or
Playwright is missing.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
import sysconfig
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs playwright (python)",
    ),
]

MATHJAX = (
    Path(sysconfig.get_paths()["purelib"])
    / "sphinx-mathjax-offline"
    / "static"
    / "mathjax"
)

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>{head}
<style>article {{ width: 600px; }}
pre {{ overflow: auto; font: 14px monospace; }}</style></head>
<body><article class="bd-article">{body}</article></body></html>"""


def png(width: int = 4, height: int = 4) -> bytes:
    """A small grey PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def load_checker():
    spec = importlib.util.spec_from_file_location(
        "check_pages", ROOT / "scripts" / "check_pages.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# a table 900 px wide, in a 600 px text column
WIDE_TABLE = (
    '<table style="width: 900px">'
    "<tr><td>nurse</td><td>mother</td><td>aunt</td></tr></table>"
)
# a line of code far too long for a 600 px box
LONG_LINE = (
    "x = 1  # this comment makes the line far too long for a six hundred pixel box, "
    "so it is clipped ..."
)


def write_site(folder: Path) -> bool:
    """Write the tiny site; returns whether the good page has math (book's MathJax)."""
    (folder / "dot.png").write_bytes(png())
    with_math = (MATHJAX / "tex-chtml.js").exists()
    head = ""
    math = ""
    if with_math:
        os.symlink(MATHJAX, folder / "mathjax")
        head = '<script defer src="mathjax/tex-chtml.js"></script>'
        math = (
            r'<p>Inline <span class="math notranslate nohighlight">\(x^2\)</span>'
            " math.</p>"
        )
    good = f"""<h1>A good page</h1>
<p>Text with an image: <img src="dot.png" alt="dot"></p>{math}
<div class="cell_input"><pre>print("short line")</pre></div>
<div class="cell_output"><pre>short line</pre></div>
<p>A table of | pipes | in prose is fine.</p>
<div class="cell_output"><div class="output text_html" style="overflow-x: auto">
{WIDE_TABLE}</div></div>
<section><h2>Exercises</h2><p>1. Print a short line.</p>
<div class="cell"><details class="hide"><summary>Show code cell content</summary>
<div class="cell_input"><pre>print("the solution")</pre></div>
<div class="cell_output"><pre>the solution</pre></div></details></div></section>"""
    (folder / "good.html").write_text(PAGE.format(title="good", head=head, body=good))
    bad = """<h1>A broken page</h1><p><img src="missing.png" alt="missing"></p>
<div class="cell_output"><div class="output traceback">
<pre>Traceback (most recent call last):
ZeroDivisionError: division by zero</pre></div></div>
<div class="cell_input"><pre>{LONG_LINE}</pre></div>
<p>Raw display math that was never typeset: $$\\sum_i \\alpha_i$$</p>
<p>An unrendered element: <span class="math notranslate nohighlight">\\(y\\)</span></p>
<div class="cell_input"><pre>#| export
def f(): pass</pre></div>
<p>| a | b |
|---|---|
| 1 | 2 |</p>
<div class="cell_output"><div class="output text_html">{WIDE_TABLE}</div></div>
<section><h2><span class="section-number">1.9. </span>Exercises</h2>
<p>1. Print a short line.</p>
<div class="cell"><div class="cell_input"><pre>print("the solution")</pre></div>
<div class="cell_output"><pre>the solution</pre></div></div></section>"""
    # no MathJax on the broken page: its math element stays unrendered, its raw TeX raw
    bad = bad.replace("{WIDE_TABLE}", WIDE_TABLE).replace("{LONG_LINE}", LONG_LINE)
    (folder / "bad.html").write_text(PAGE.format(title="bad", head="", body=bad))
    (folder / "untitled.html").write_text(
        PAGE.format(title="untitled", head="", body="<p>no title</p>")
    )
    return with_math


@pytest.mark.slow
def test_checker_fails_on_a_broken_page_and_passes_a_good_one(tmp_path):
    checker = load_checker()
    site = tmp_path / "html"
    site.mkdir()
    with_math = write_site(site)
    shots = tmp_path / "screenshots"
    results = {r.page: r for r in checker.run(site, shots, full_page=False)}
    assert set(results) == {"good.html", "bad.html", "untitled.html"}

    good = results["good.html"]
    assert good.failures == [], good.failures
    assert (shots / "good.png").stat().st_size > 0
    if with_math:
        assert good.math == 1  # MathJax rendered the one math element, offline

    problems = "\n".join(
        f"[{kind}] {message}" for kind, message in results["bad.html"].failures
    )
    assert "[image] broken image (naturalWidth 0): missing.png" in problems
    assert "[image] a file of the page failed to load: 404 missing.png" in problems
    assert (
        "[error] error output in a cell: ZeroDivisionError: division by zero"
        in problems
    )
    assert "[clipped] 1 code blocks wider than the page, 1 lines cut off" in problems
    assert (
        "[math] raw TeX in the text: 'Raw display math that was never typeset: $$"
        in problems
    )
    assert "[math] the page has 1 math elements but MathJax did not run" in problems
    assert "[marker] a code block shows an nbdev marker: '#| export'" in problems
    assert "[table] a Markdown table shown as text: '| a | b |'" in problems
    assert "[cut] a table runs 300 px past the text column at 1280 px" in problems
    assert "a code cell of the exercises shows its source" in problems
    assert "a code cell of the exercises shows its output" in problems
    assert [k for k, _ in results["untitled.html"].failures] == ["title"]


@pytest.mark.slow
def test_command_line_exit_status_and_report(tmp_path, capsys):
    checker = load_checker()
    site = tmp_path / "html"
    site.mkdir()
    write_site(site)
    assert checker.main([str(site), "--no-screenshots", "--page", "good"]) == 0
    assert "OK: 1 pages, no problems" in capsys.readouterr().out
    assert checker.main([str(site), "--no-screenshots", "--page", "bad"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: " in out and "bad.html: [error] error output in a cell" in out
    assert checker.main([str(tmp_path / "nowhere")]) == 2
