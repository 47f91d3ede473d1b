"""Open every page of the built book in headless Chromium; check it as a reader would.

    python scripts/check_pages.py [_build/html] [--screenshots DIR] [--width 1280 ...]

The book's HTML folder is served on 127.0.0.1 and each page is opened in Debian's
Chromium (/usr/bin/chromium, driven by Playwright; no browser is ever downloaded). For
every page it checks:

- title:    the page has a non-empty <h1>;
- image:    no image is broken (loaded with naturalWidth 0), and no file the page loads
            fails (404);
- error:    no error output (a traceback or error block of a notebook cell, "Traceback
            (most recent call last)" anywhere in the text) and no uncaught JavaScript
            error;
- math:     where there is math, MathJax rendered it (an mjx-container in every math
            element, no MathJax error), and no raw TeX ($$, \\(, \\[, \\begin{...},
            $\\alpha$) is left in the text;
- clipped:  no code or output block is wider than its box (a <pre> whose scrollWidth
            exceeds its clientWidth hides the end of its long lines behind a scroll
            bar); the lines cut off are counted and the longest shown;
- cut:      no table, image or output runs past the right edge of the text column (a
            wide one must scroll in its own box);
- marker:   no code block shows a line of nbdev's cell markers (`#| export`);
- table:    no Markdown table is left as text (a paragraph of `| a | b |` lines);
- solution: no code cell of an "Exercises" section shows its source or output until
            the reader opens it (those cells hold the solutions: tag them `hide-cell`);
- offline:  the page requests nothing outside the book (it must work without a network);

at each window width (default 1280 px, the narrowest common laptop screen, and 1440 px,
where the text column has its full width), and saves a full-page screenshot at the first
width under DIR (default: _build/screenshots, next to html/). It prints a table of pages
and then every failure, page by page, and exits with status 1 when anything failed (2
when it could not run at all).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Pages Sphinx writes for itself rather than for the reader: no chapter content here.
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
SKIP_DIRS = {
    "_static",
    "_sources",
    "_images",
    "_downloads",
    "_sphinx_design_static",
    "_panels_static",
}
# JavaScript errors of the toolchain itself, the same on every page and harmless, not of
# the book: sphinx-thebe 0.3.1 under Sphinx 7 writes its one-line config script into
# every page twice, so the second `const THEBE_JS_URL` throws; the first copy has
# already set the values (thebe is not used).
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

# What the browser measures on a page, after MathJax has finished: a plain object.
MEASURE_JS = r"""
() => {
  const article = document.querySelector('article.bd-article, main, [role=main]')
    || document.body;
  const h1 = article.querySelector('h1') || document.querySelector('h1');
  const out = {title: h1 ? h1.textContent.replace(/[#¶]\s*$/, '').trim() : ''};

  out.brokenImages = [...document.images]
    .filter(img => img.getAttribute('src') && img.naturalWidth === 0)
    .map(img => img.getAttribute('src'));

  const errorBlocks = [...article.querySelectorAll(
      '.output.error, .output.traceback, div.traceback, .cell_output .traceback')];
  out.errorOutputs = errorBlocks.map(
    el => el.innerText.trim().split('\n').slice(-1)[0].slice(0, 160));
  const text = article.innerText;
  out.tracebackText = text.includes('Traceback (most recent call last)');

  const mathEls = [...article.querySelectorAll('.math')];
  out.mathElements = mathEls.length;
  out.mathRendered = article.querySelectorAll('mjx-container').length;
  out.mathUnrendered = mathEls.filter(el => !el.querySelector('mjx-container'))
    .map(el => el.textContent.trim().slice(0, 80));
  out.mathErrors = [...article.querySelectorAll('mjx-merror')]
    .map(el => (el.getAttribute('data-mjx-error') || el.textContent).slice(0, 120));

  // raw TeX left in the prose: text outside code, outputs and MathJax's own output
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, '
    + '.cell_output, .math';
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const raw = [];
  const rawTex = new RegExp(String.raw`\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|`
    + String.raw`\$[^$\s][^$\n]{0,80}?(\\[A-Za-z]+|[_^])[^$\n]{0,80}?\$`);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && n.parentElement.closest(skip)) continue;
    const m = n.textContent.match(rawTex);
    if (m) raw.push(n.textContent.trim().slice(0, 100));
  }
  out.rawMath = raw;

  // code and output blocks wider than their box; count the lines that are cut off
  const clipped = [];
  for (const pre of article.querySelectorAll('pre')) {
    if (pre.scrollWidth <= pre.clientWidth + 1) continue;
    const style = getComputedStyle(pre);
    const probe = document.createElement('span');
    probe.style.font = style.font;
    probe.style.whiteSpace = 'pre';
    probe.style.visibility = 'hidden';
    probe.style.position = 'absolute';
    probe.textContent = 'x'.repeat(100);
    document.body.appendChild(probe);
    const charWidth = probe.getBoundingClientRect().width / 100;
    probe.remove();
    const room = pre.clientWidth - parseFloat(style.paddingLeft)
      - parseFloat(style.paddingRight);
    const fits = Math.max(1, Math.floor(room / charWidth));
    const lines = pre.textContent.replace(/\n$/, '').split('\n')
      .map(l => l.replace(/\t/g, '        '));
    const cut = lines.filter(l => l.length > fits);
    const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
    clipped.push({lines: Math.max(cut.length, 1), fits: fits, longest: longest.length,
                  where: pre.closest('.cell_output, .output') ? 'output' : 'code',
                  example: longest.trim().slice(0, 100)});
  }
  out.clipped = clipped;

  // nbdev's cell markers shown in a code block (outputs excepted)
  out.markers = [];
  for (const pre of article.querySelectorAll('pre')) {
    if (pre.closest('.cell_output, .output')) continue;
    for (const line of pre.textContent.split('\n')) {
      if (/^\s*#\|/.test(line)) out.markers.push(line.trim().slice(0, 80));
    }
  }

  // a Markdown table left as text: a paragraph of lines that start and end with a pipe
  out.rawTables = [...article.querySelectorAll('p')]
    .map(p => p.textContent.trim().split('\n'))
    .filter(lines => lines.length >= 2 && lines.every(l => /^\|.*\|$/.test(l.trim())))
    .map(lines => lines[0].trim().slice(0, 80));

  // tables, images and outputs that run past the right edge of the text column, outside
  // any box that scrolls sideways (what is past the edge is cut off or hidden)
  const articleStyle = getComputedStyle(article);
  const right = article.getBoundingClientRect().right
    - parseFloat(articleStyle.paddingRight);
  const scrolls = el => {
    for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return true;
    }
    return false;
  };
  out.cut = [...article.querySelectorAll('table, img, svg, .cell_output .output')]
    .filter(el => el.getClientRects().length
                  && el.getBoundingClientRect().right > right + 1)
    .filter(el => !scrolls(el))
    .map(el => ({
      what: el.tagName.toLowerCase(),
      over: Math.round(el.getBoundingClientRect().right - right),
      text: (el.innerText || el.getAttribute('src') || '').trim().split('\n')[0]
        .slice(0, 60),
    }));

  // code cells of an "Exercises" section that show their source or output unasked
  const shown = el => el.getClientRects().length > 0 &&
    (!el.checkVisibility || el.checkVisibility({visibilityProperty: true}));
  out.solutions = [];
  for (const heading of article.querySelectorAll('h2, h3')) {
    // the heading's text is 'Exercises' or, numbered, '5.9. Exercises'
    if (!/^([\d.]+\s*)?Exercises\b/.test(heading.textContent.trim())) continue;
    const section = heading.closest('section') || heading.parentElement;
    for (const cell of section.querySelectorAll('div.cell')) {
      for (const [part, what] of [['.cell_input', 'source'],
                                  ['.cell_output', 'output']]) {
        const el = cell.querySelector(part);
        if (el && shown(el)) {
          const text = el.innerText.trim().split('\n')[0].slice(0, 80);
          out.solutions.push({what: what, text: text});
        }
      }
    }
  }
  return out;
}
"""

# Wait for MathJax (when the page loads it) to finish typesetting (harmless without it).
MATHJAX_DONE_JS = r"""
async () => {
  const usesMathJax = [...document.scripts].some(s => /mathjax/i.test(s.src || ''));
  if (!usesMathJax) return 'none';
  for (let i = 0; i < 200 && !(window.MathJax && window.MathJax.startup &&
                                window.MathJax.startup.promise); i++) {
    await new Promise(r => setTimeout(r, 50));
  }
  if (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) {
    return 'missing';
  }
  await window.MathJax.startup.promise;
  return 'done';
}
"""


@dataclass
class PageResult:
    page: str
    failures: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    clipped_lines: int = 0  # lines cut off in code (cell sources, code blocks)
    clipped_output_lines: int = 0  # lines cut off in cell outputs
    math: int = 0
    screenshot: str = ""

    def fail(self, kind: str, message: str) -> None:
        self.failures.append((kind, message))


def book_pages(html_dir: Path) -> list[str]:
    """Every reader-facing page of the built book, as paths relative to html_dir."""
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if rel.parts[0] in SKIP_DIRS or rel.name in SKIP_PAGES:
            continue
        head = path.read_text(encoding="utf-8", errors="replace")[:2000].lower()
        if (
            'http-equiv="refresh"' in head
        ):  # index.html: only a redirect to the first page
            continue
        pages.append(rel.as_posix())
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the report readable
        pass


def serve(html_dir: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve html_dir on 127.0.0.1 (a free port) in a daemon thread.

    Returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def check_page(
    browser, base: str, page_path: str, shots: Path | None, width: int, full_page: bool
) -> PageResult:
    """Open one page at one window width and check it (and screenshot it to shots)."""
    result = PageResult(page_path)
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    failed, external, js_errors = [], [], []

    def on_route(route):
        if route.request.url.startswith(base) or route.request.url.startswith(
            ("data:", "blob:")
        ):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    page.route("**/*", on_route)
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.status} {r.url[len(base) :]}")
            if r.status >= 400 and r.url.startswith(base)
            else None
        ),
    )
    page.on("pageerror", lambda e: js_errors.append(str(e).splitlines()[0][:160]))
    try:
        page.goto(base + page_path, wait_until="load", timeout=60_000)
        mathjax = page.evaluate(MATHJAX_DONE_JS)
        page.wait_for_timeout(100)
        m = page.evaluate(MEASURE_JS)
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            shot = shots / (page_path.replace("/", "__").removesuffix(".html") + ".png")
            page.screenshot(path=str(shot), full_page=full_page)
            result.screenshot = str(shot)
    except Exception as exc:  # noqa: BLE001 -- a page that cannot be opened fails
        result.fail(
            "error", f"could not open or measure the page: {exc}".splitlines()[0]
        )
        context.close()
        return result
    context.close()

    if not m["title"]:
        result.fail("title", "no <h1> title")
    for src in m["brokenImages"]:
        result.fail("image", f"broken image (naturalWidth 0): {src}")
    for item in dict.fromkeys(failed):
        result.fail("image", f"a file of the page failed to load: {item}")
    for last_line in m["errorOutputs"]:
        result.fail("error", f"error output in a cell: {last_line}")
    if m["tracebackText"] and not m["errorOutputs"]:
        result.fail("error", "the page shows 'Traceback (most recent call last)'")
    for err in dict.fromkeys(js_errors):
        if any(known in err for known in KNOWN_JS_ERRORS):
            continue
        result.fail("error", f"JavaScript error: {err}")
    result.math = m["mathRendered"]
    if m["mathElements"] and mathjax != "done":
        result.fail(
            "math",
            f"the page has {m['mathElements']} math elements but MathJax did not run "
            f"({mathjax})",
        )
    elif m["mathUnrendered"]:
        result.fail(
            "math",
            f"{len(m['mathUnrendered'])} math elements not rendered, "
            f"first: {m['mathUnrendered'][0]!r}",
        )
    for err in m["mathErrors"]:
        result.fail("math", f"MathJax error: {err}")
    for text in m["rawMath"]:
        result.fail("math", f"raw TeX in the text: {text!r}")
    for where in ("code", "output"):
        blocks = [c for c in m["clipped"] if c["where"] == where]
        if not blocks:
            continue
        lines = sum(c["lines"] for c in blocks)
        if where == "code":
            result.clipped_lines = lines
        else:
            result.clipped_output_lines = lines
        worst = max(blocks, key=lambda c: c["longest"])
        result.fail(
            "clipped",
            f"{len(blocks)} {where} blocks wider than the page, {lines} lines cut off "
            f"(at {width} px about {worst['fits']} characters fit; longest line "
            f"{worst['longest']}: {worst['example']!r})",
        )
    for item in m["cut"]:
        result.fail(
            "cut",
            f"a {item['what']} runs {item['over']} px past the text column at {width} "
            f"px and does not scroll in its own box: {item['text']!r}",
        )
    for line in m["markers"]:
        result.fail("marker", f"a code block shows an nbdev marker: {line!r}")
    for first in m["rawTables"]:
        result.fail("table", f"a Markdown table shown as text: {first!r}")
    for item in m["solutions"]:
        result.fail(
            "solution",
            f"a code cell of the exercises shows its {item['what']} (a solution; tag "
            f"the cell hide-cell): {item['text']!r}",
        )
    for url in dict.fromkeys(external):
        result.fail("offline", f"requests a resource outside the book: {url}")
    return result


DEFAULT_WIDTHS = (1280, 1440)


def merge(first: PageResult, other: PageResult, width: int) -> None:
    """Add to first the failures other found at another window width (each once)."""
    seen = set(first.failures)
    for kind, message in other.failures:
        if (kind, message) in seen:
            continue
        if f"{width} px" not in message:
            message = f"at {width} px: {message}"
        first.fail(kind, message)
    first.clipped_lines = max(first.clipped_lines, other.clipped_lines)
    first.clipped_output_lines = max(
        first.clipped_output_lines, other.clipped_output_lines
    )


def run(
    html_dir: Path,
    shots: Path | None,
    widths: int | tuple[int, ...] | list[int] = DEFAULT_WIDTHS,
    full_page: bool = True,
    only: list[str] | None = None,
) -> list[PageResult]:
    """Check the pages of html_dir (all, or those named in only) at each window width.

    Returns one result per page, its screenshot taken at the first width."""
    widths = [widths] if isinstance(widths, int) else list(widths)
    from playwright.sync_api import sync_playwright

    pages = book_pages(html_dir)
    if only:
        pages = [p for p in pages if any(o in p for o in only)]
    server, base = serve(html_dir)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                results = []
                for page in pages:
                    first, *others = widths
                    result = check_page(browser, base, page, shots, first, full_page)
                    for width in others:
                        other = check_page(browser, base, page, None, width, full_page)
                        merge(result, other, width)
                    results.append(result)
                return results
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()


def report(results: list[PageResult], out=sys.stdout) -> int:
    """Print a table of pages and every failure; returns the number of failures."""
    print(
        f"{'page':34s} {'fails':>5s} {'math':>5s} {'clipped lines: code':>19s} "
        f"{'output':>6s}  kinds",
        file=out,
    )
    for r in results:
        kinds = sorted({k for k, _ in r.failures})
        print(
            f"{r.page:34s} {len(r.failures):5d} {r.math:5d} {r.clipped_lines:19d} "
            f"{r.clipped_output_lines:6d}  {', '.join(kinds) or 'ok'}",
            file=out,
        )
    print(
        f"{'total':34s} {sum(len(r.failures) for r in results):5d} "
        f"{sum(r.math for r in results):5d} "
        f"{sum(r.clipped_lines for r in results):19d} "
        f"{sum(r.clipped_output_lines for r in results):6d}",
        file=out,
    )
    total = sum(len(r.failures) for r in results)
    if total:
        print(
            f"\nFAILED: {total} problems on "
            f"{sum(bool(r.failures) for r in results)} of "
            f"{len(results)} pages",
            file=out,
        )
        for r in results:
            for kind, message in r.failures:
                print(f"  {r.page}: [{kind}] {message}", file=out)
    else:
        print(f"\nOK: {len(results)} pages, no problems", file=out)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "html",
        nargs="?",
        default="_build/html",
        help="the built book (default _build/html)",
    )
    ap.add_argument(
        "--screenshots",
        default=None,
        help="where the screenshots go (default: screenshots/ next to the html folder)",
    )
    ap.add_argument(
        "--no-screenshots", action="store_true", help="check only, save no screenshots"
    )
    ap.add_argument(
        "--viewport-only",
        action="store_true",
        help="screenshots of the first screen only",
    )
    ap.add_argument(
        "--width",
        type=int,
        action="append",
        help="browser window width in pixels, repeatable (default: 1280 and 1440; 88 "
        "characters of code must fit at both); the screenshots are taken at the first",
    )
    ap.add_argument(
        "--page",
        action="append",
        help="check only pages whose path contains this (repeatable)",
    )
    ap.add_argument(
        "--json", default=None, help="also write the results to this JSON file"
    )
    args = ap.parse_args(argv)

    html_dir = Path(args.html).resolve()
    if not (html_dir / "index.html").exists() and not any(html_dir.rglob("*.html")):
        print(
            f"check_pages: no built book in {html_dir} (run jupyter-book build first)",
            file=sys.stderr,
        )
        return 2
    if not Path(CHROMIUM).exists():
        print(
            f"check_pages: {CHROMIUM} is missing (Debian: apt-get install chromium)",
            file=sys.stderr,
        )
        return 2
    shots = (
        None
        if args.no_screenshots
        else Path(args.screenshots or html_dir.parent / "screenshots")
    )
    results = run(
        html_dir,
        shots,
        widths=args.width or DEFAULT_WIDTHS,
        full_page=not args.viewport_only,
        only=args.page,
    )
    if not results:
        print(f"check_pages: no pages found in {html_dir}", file=sys.stderr)
        return 2
    failures = report(results)
    if shots is not None:
        print(f"screenshots: {shots}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
