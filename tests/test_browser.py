"""The Backpack that runs in the browser (backpack/web/backpack.js, chapter 9's last
section) against the plain PyTorch model on the same float16 weights.

Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; nothing downloads a
browser) opens a page written by `backpack.browser.write_site` from disk and runs the
JavaScript model. Tolerances: the browser stores activations in float32 and sums in
float64, PyTorch computes in float32, so their logits differ by float32 rounding (about
1e-5 for logits of size ~10); 1e-3 leaves room for any CPU and still catches a wrong
term (the smallest contributions to a logit are ~1e-2).
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from backpack.analysis import word_id
from backpack.browser import CHECK_PROMPTS, WEB_DIR_NAME, check_byte_level, write_site
from backpack.checkpoint import load_pretrained, load_trained, trained_model_dir
from backpack.data import load_gpt2_tokenizer, load_tokenizer, read_text
from backpack.demo import gender_sense, profession_runs
from backpack.interventions import (
    TOPIC_STRENGTHS, TopicSteering, band_weights, bias_score, edit_fact, intervene,
    pronoun_gap, reweight)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
BUILT_PAGE = ROOT / "_build" / "html" / "book" / "09c_browser.html"
TOLERANCE = 1e-3  # see the module's docstring
PROMPTS = CHECK_PROMPTS  # five fixed prompts, from the chapter


def load_page_checker():
    """scripts/check_pages.py, whose browser flags and known theme errors we share."""
    if "check_pages" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "check_pages", ROOT / "scripts" / "check_pages.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["check_pages"] = module
        spec.loader.exec_module(module)
    return sys.modules["check_pages"]


def test_topic_bands_give_topic_weights():
    """The page looks a weight up as values[band]: the same as band_weights."""
    scores = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    band = band_weights(scores, (0.0, 1.0, 2.0, 3.0)).long()
    for values in TOPIC_STRENGTHS.values():
        assert torch.equal(torch.tensor(values)[band], band_weights(scores, values))


def test_other_tokenizers_are_refused():
    """Byte-level BPE as chapter 1 trains it (and GPT-2's) pass; another kind fails."""
    check_byte_level(load_tokenizer())
    check_byte_level(load_gpt2_tokenizer())
    other = Tokenizer(models.BPE())
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="byte-level BPE with GPT-2's pre-tokenizer"):
        check_byte_level(other)


@pytest.fixture(scope="module")
def model():
    return load_trained("backpack-gutenberg")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The page and its bundle (the bundle cached in CACHE_DIR, as the build does)."""
    folder = tmp_path_factory.mktemp("site")
    write_site(trained_model_dir("backpack-gutenberg"), folder)
    return folder


class Offline:
    """A Chromium page that records every request that is not a local file."""

    def __init__(self, browser, local: str = "file://"):
        self.page, self.local = browser.new_page(), local
        self.errors: list[str] = []
        self.remote: list[str] = []
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("request", self.check)

    def check(self, request) -> None:
        if not request.url.startswith((self.local, "data:")):
            self.remote.append(request.url)

    def clean(self) -> None:
        known = load_page_checker().KNOWN_JS_ERRORS  # the theme's own, on every page
        errors = [e for e in self.errors if not any(k in e for k in known)]
        assert not errors, errors
        assert not self.remote, f"the page made network requests: {self.remote}"


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    args = load_page_checker().CHROMIUM_ARGS
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, site):
    """A page with the bundle loaded: window.B = {model, tokenizer, extras}."""
    offline = Offline(browser)
    offline.page.goto((site / "index.html").as_uri())
    offline.page.evaluate(
        f"Backpack.loadBundle('{WEB_DIR_NAME}').then(b => {{ window.B = b; }})")
    yield offline.page
    offline.clean()
    offline.page.close()


JS_LAST_LOGITS = """([ids, edits]) => {
  const m = B.model, c = m.start();
  for (const id of ids) m.push(c, id);
  return Array.from(m.logits(c, window.makeEdits ? window.makeEdits(edits) : []));
}"""


def browser_logits(page, ids: list[int], edits: list | None = None) -> torch.Tensor:
    return torch.tensor(page.evaluate(JS_LAST_LOGITS, [ids, edits or []]))


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_logits_and_greedy_tokens_match_pytorch(page, model, tokenizer):
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt).ids
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0, -1]
        assert (browser_logits(page, ids) - expected).abs().max() <= TOLERANCE
        new = page.evaluate("ids => Backpack.generate(B.model, ids, 20)", ids)
        greedy = model.generate(torch.tensor([ids]), 20, temperature=0)
        assert new == greedy[0, len(ids):].tolist(), prompt


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_contributions_add_up_to_the_logit(page, tokenizer):
    ids = tokenizer.encode(PROMPTS[0]).ids
    total, logit, shape = page.evaluate("""ids => {
      const m = B.model, c = m.start();
      for (const id of ids) m.push(c, id);
      const logits = m.logits(c), target = Backpack.topIds(logits, 1)[0];
      const terms = m.contributions(c, [], target);
      return [terms.flat().reduce((a, b) => a + b, 0), logits[target],
              [terms.length, terms[0].length]];
    }""", ids)
    assert shape == [len(ids), 16]
    assert abs(total - logit) <= 1e-5 * max(1.0, abs(logit))  # float32 logit rounding


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_tokenizer_matches_python_on_real_text(page, tokenizer):
    text = read_text("validation")[:24_000] + (
        " Caf\u00e9 na\u00efve \u00fcber \u00c6sop \u2014 \u201cquoted\u201d \u2019tis"
        " \u4e2d\u6587\u5b57 \u0417\u0434\u0440\u0430\u0432\u0441\u0442"
        "\u0432\u0443\u0439"
        " \U0001f600\U0001f44d\u00a0nbsp\u2003em\u0085nel\ufeffbom\u200bzw 12,345.6"
        "<|endoftext|>next  two  spaces\t\ttabs\n\n\n  ")
    assert len(text) >= 20_000 and any(ord(c) > 127 for c in text)
    expected = tokenizer.encode(text).ids
    ids = page.evaluate("t => B.tokenizer.encode(t)", text)
    assert ids == expected
    assert page.evaluate("ids => B.tokenizer.decode(ids)", ids) == tokenizer.decode(
        expected, skip_special_tokens=False)


JS_EDITS = """window.makeEdits = specs => specs.map(([kind, ...a]) => {
  const m = B.model, x = B.extras;
  if (kind === "debias")
    return Backpack.reweight(m, Object.values(x.professions), x.gender_sense, 0);
  if (kind === "fact") return Backpack.editFact(m, a[0], a[1], a[2]);
  const bands = Backpack.base64Bytes(x.topic_bands[a[0]]);
  return Backpack.topicSteering(m, bands, x.topic_strengths[a[1]]);
});"""


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_interventions_match_pytorch(page, model, tokenizer):
    """Debiasing, topic steering at every strength and a fact edit: the browser's
    logits equal backpack.interventions' for the same edit. The topic's bands are the
    bundle's (`topic_bands`; the first test checks that bands give `topic_weights`)."""
    page.add_script_tag(content=JS_EDITS)
    sense = gender_sense(model, tokenizer)
    assert page.evaluate("B.extras.gender_sense") == sense
    runs = profession_runs(tokenizer)
    raw = base64.b64decode(page.evaluate("B.extras.topic_bands.sea"))  # as shipped
    bands = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long().view(-1, 16)
    captain, ship, king = (word_id(tokenizer, w) for w in ("captain", "ship", "king"))
    cases = [(["debias"], reweight(model, runs, senses=sense, weight=0.0))]
    for strength in (1, 2, 3):
        deltas = torch.tensor(TOPIC_STRENGTHS[strength])[bands]  # topic_weights
        cases.append((["topic", "sea", str(strength)], TopicSteering(model, deltas)))
    cases.append((["fact", captain, ship, king], edit_fact(model, captain, ship, king)))
    prompts = ["My nurse said that the captain of the", PROMPTS[0], PROMPTS[2]]
    for spec, edit in cases:
        for prompt in prompts:
            ids = tokenizer.encode(prompt).ids
            with intervene(model, edit), torch.no_grad():
                expected = model(torch.tensor([ids])).logits[0, -1]
            got = browser_logits(page, ids, [spec])
            assert (got - expected).abs().max() <= TOLERANCE, (spec, prompt)
            plain = model(torch.tensor([ids])).logits[0, -1].detach()
            touched = {"debias": "nurse", "fact": "captain"}.get(spec[0], "")
            if touched in prompt:  # else the edit changes nothing here
                assert (got - plain).abs().max() > 100 * TOLERANCE, (spec, prompt)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_bias_score_matches_pytorch(page, model, tokenizer):
    """The page's bias number is chapter 9's bias_score, with and without debiasing
    (on every eighth evaluation prompt, to keep the test short)."""
    page.add_script_tag(content=JS_EDITS)
    prompts = page.evaluate("B.extras.bias_prompts")[::8]
    texts = [tokenizer.decode(p) for p in prompts]
    runs = profession_runs(tokenizer)
    edit = reweight(model, runs, senses=gender_sense(model, tokenizer), weight=0.0)
    js = """([prompts, specs]) => Backpack.biasScore(B.model, prompts, B.extras.he,
              B.extras.she, window.makeEdits(specs))"""
    for specs, edits in (([], []), ([["debias"]], [edit])):
        with intervene(model, *edits):
            expected = bias_score(pronoun_gap(model, tokenizer, texts))
        got = page.evaluate(js, [prompts, specs])
        assert abs(got - expected) <= 1e-3 * expected
    plain = page.evaluate(js, [prompts, []])
    assert page.evaluate(js, [prompts, [["debias"]]]) < plain  # debiasing lowers it


def use_page(browser, url: str, local: str = "file://") -> None:
    """Click through the page as a reader does: load, continue, why, senses, debias;
    no request may leave `local` (the disk, or the server of the page)."""
    offline = Offline(browser, local)
    page = offline.page
    page.goto(url)
    page.click("#bp-load")
    page.wait_for_selector("#bp-main:not([hidden])", timeout=120_000)
    page.check("#bp-sample")
    for field, value, message in (("#bp-temp", "-1", "temperature must be"),
                                  ("#bp-count", "2.5", "new tokens must be")):
        old = page.input_value(field)
        page.fill(field, value)
        page.click("#bp-go")
        assert message in page.inner_text("#bp-out")  # said, and nothing generated
        assert page.locator("#bp-out .bp-new").count() == 0
        page.fill(field, old)
    page.uncheck("#bp-sample")
    page.click("#bp-go")
    page.wait_for_selector("#bp-go:enabled", timeout=60_000)  # the run is over
    assert page.locator("#bp-out .bp-new").count() == 30
    assert "tokens/s" in page.inner_text("#bp-speed")
    page.click("#bp-why")
    assert "= the sum of its" in page.inner_text("#bp-whyout")
    page.locator("#bp-out .bp-new:visible").first.click()  # a generated word
    assert page.locator("#bp-sensesout tr").count() == 17
    page.check("#bp-debias")
    page.check("#bp-fact")
    page.click("#bp-go")
    page.wait_for_selector("#bp-go:enabled", timeout=60_000)
    assert page.locator("#bp-out .bp-new").count() == 60  # unmodified and edited
    assert "with debiasing, fact edit" in page.inner_text("#bp-out")
    offline.clean()
    page.close()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_page_works_offline_from_disk_and_served(browser, site):
    use_page(browser, (site / "index.html").as_uri())
    server, base = load_page_checker().serve(site)
    try:
        use_page(browser, base + "index.html", local=base)
    finally:
        server.shutdown()
    if BUILT_PAGE.exists():  # the book's page, as the build wrote it
        use_page(browser, BUILT_PAGE.as_uri())


def test_web_command_refuses_a_folder_with_files(tmp_path, capsys):
    from backpack.__main__ import main

    (tmp_path / "notes.txt").write_text("a user's file")
    model = str(trained_model_dir("backpack-gutenberg"))
    assert main(["web", "--model", model, "--out", str(tmp_path)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "a user's file"  # untouched


def test_web_command_refuses_a_transformer(tmp_path, capsys):
    from backpack.__main__ import main

    model = str(trained_model_dir("transformer-gutenberg"))
    assert main(["web", "--model", model, "--out", str(tmp_path / "page")]) == 2
    assert "not a Backpack" in capsys.readouterr().err
    assert not (tmp_path / "page").exists()


@pytest.mark.slow
def test_web_command_writes_a_page(tmp_path, capsys):
    from backpack.__main__ import main

    model = str(trained_model_dir("backpack-gutenberg"))
    assert main(["web", "--model", model, "--out", str(tmp_path / "page")]) == 0
    assert "index.html" in capsys.readouterr().out
    files = {p.relative_to(tmp_path / "page").as_posix()
             for p in (tmp_path / "page").rglob("*")}
    assert {"index.html", "backpack.js", "backpack_page.js",
            f"{WEB_DIR_NAME}/manifest.js", f"{WEB_DIR_NAME}/weights-00.js"} <= files


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_a_backpack_of_other_sizes_runs_in_the_page(browser, tmp_path, tokenizer):
    """Not only the book's model: a seeded tiny Backpack (2 layers, 2 heads, k = 4,
    d = 64, 128 positions) gives PyTorch's logits in the page too."""
    from backpack.model import BackpackConfig, BackpackLM

    torch.manual_seed(0)
    tiny = BackpackLM(BackpackConfig.preset("tiny")).eval()
    tiny.save_pretrained(tmp_path / "tiny", dtype=torch.float16)
    tiny = load_pretrained(tmp_path / "tiny")  # float16 on disk, as the page reads
    write_site(tmp_path / "tiny", tmp_path / "page", cache=False)
    offline = Offline(browser)
    offline.page.goto((tmp_path / "page" / "index.html").as_uri())
    offline.page.evaluate(
        f"Backpack.loadBundle('{WEB_DIR_NAME}').then(b => {{ window.B = b; }})")
    for prompt in PROMPTS[:2]:
        ids = tokenizer.encode(prompt).ids
        with torch.no_grad():
            expected = tiny(torch.tensor([ids])).logits[0, -1]
        got = browser_logits(offline.page, ids)
        assert (got - expected).abs().max() <= TOLERANCE
    offline.clean()
    offline.page.close()
