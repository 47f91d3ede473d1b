"""The browser's Backpack beside PyTorch's, measured in one run on one machine.

Writes data/bench/browser_cpu.json, which chapter 9's last section (book/09c_browser)
reads. Headless Chromium (Debian's /usr/bin/chromium, through Playwright) opens a page
written by `backpack.browser.write_site` from disk; PyTorch runs the same weights
(float16 on disk, float32 in memory) in this process. Measured, each the best of
--repeats runs, alternating browser and PyTorch:
- cached generation: greedy tokens per second after a prompt (the browser's
  `Backpack.generate`, PyTorch's `model.generate`, both with key/value and sense
  caches),
  and the time to the first new token (the prompt read, then one token);
- loading the bundle in the page (scripts parsed, float16 expanded to float32);
- the largest |logit difference| over fixed prompts, and whether greedy tokens agree.

    .venv/bin/python scripts/bench_browser.py [--tokens 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from backpack.browser import CHECK_PROMPTS, WEB_DIR_NAME, write_site
from backpack.checkpoint import load_trained, trained_model_dir, write_json
from backpack.data import DATA_DIR, load_tokenizer

CHROMIUM = "/usr/bin/chromium"
OUT = DATA_DIR / "bench" / "browser_cpu.json"
PROMPTS = CHECK_PROMPTS  # five fixed prompts, from the chapter
JS_GENERATE = """async ([ids, count]) => {
  const t0 = performance.now();
  let first = null;
  const out = await Backpack.generate(B.model, ids, count, {onToken: () => {
    if (first === null) first = performance.now() - t0; }});
  return [out, (performance.now() - t0) / 1000, first / 1000];
}"""
JS_LOGITS = """ids => { const m = B.model, c = m.start();
  for (const id of ids) m.push(c, id); return Array.from(m.logits(c)); }"""


def cpu_name() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_generation(
    model, ids: list[int], count: int
) -> tuple[list[int], float, float]:
    """(new ids, seconds for count tokens, seconds to the first), greedy and cached."""
    idx = torch.tensor([ids])
    start = time.perf_counter()
    model.generate(idx, 1, temperature=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = model.generate(idx, count, temperature=0)
    return out[0, len(ids):].tolist(), time.perf_counter() - start, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100, help="new tokens per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the best is kept")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    model, tokenizer = load_trained("backpack-gutenberg"), load_tokenizer()
    ids = tokenizer.encode(PROMPTS[0]).ids
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        write_site(trained_model_dir("backpack-gutenberg"), folder)
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto((Path(folder) / "index.html").as_uri())
        load = page.evaluate(f"""async () => {{ const t0 = performance.now();
            window.B = await Backpack.loadBundle('{WEB_DIR_NAME}');
            return (performance.now() - t0) / 1000; }}""")
        diffs, agree = [], 0
        for prompt in PROMPTS:
            p = tokenizer.encode(prompt).ids
            with torch.no_grad():
                expected = model(torch.tensor([p])).logits[0, -1]
            got = torch.tensor(page.evaluate(JS_LOGITS, p))
            diffs.append(float((got - expected).abs().max()))
            js = page.evaluate(JS_GENERATE, [p, 20])[0]
            agree += js == model.generate(torch.tensor([p]), 20, temperature=0)[
                0, len(p):].tolist()
        runs = {"browser": [], "pytorch": [], "pytorch_1_thread": []}
        threads = torch.get_num_threads()
        for _ in range(args.repeats):
            runs["browser"].append(page.evaluate(JS_GENERATE, [ids, args.tokens]))
            runs["pytorch"].append(torch_generation(model, ids, args.tokens))
            torch.set_num_threads(1)
            runs["pytorch_1_thread"].append(torch_generation(model, ids, args.tokens))
            torch.set_num_threads(threads)
        version = browser.version
        browser.close()
    same = all(r[0] == runs["browser"][0][0] for rs in runs.values() for r in rs)
    best = {name: min(rs, key=lambda r: r[1]) for name, rs in runs.items()}
    speed = {name: args.tokens / r[1] for name, r in best.items()}
    result = {
        "machine": f"{cpu_name()}, {torch.get_num_threads()} PyTorch threads",
        "chromium": version, "torch": torch.__version__,
        "python": platform.python_version(),
        "prompt": PROMPTS[0], "prompt_tokens": len(ids), "new_tokens": args.tokens,
        "repeats": args.repeats, "same_tokens": same,
        "tokens_per_s": {name: round(v, 1) for name, v in speed.items()},
        "first_token_s": {name: round(r[2], 4) for name, r in best.items()},
        "ratio_browser_to_pytorch": round(speed["browser"] / speed["pytorch"], 3),
        "ratio_browser_to_pytorch_1_thread": round(
            speed["browser"] / speed["pytorch_1_thread"], 3),
        "load_s": round(load, 2),
        "logit_max_abs_diff": max(diffs), "prompts": len(PROMPTS),
        "greedy_20_identical": agree,
    }
    write_json(OUT, result, indent=1)
    print(f"wrote {OUT}:")
    for key, value in result.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
