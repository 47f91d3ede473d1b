"""Tests of backpack.data (chapter 1): tokenizers, token cache, batches, data errors.

Fast: tiny corpora in tmp_path; nothing here encodes a full split."""
from __future__ import annotations

import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backpack import data
from backpack.data import (
    CACHE_DIR,
    CORPUS_FILES,
    DATA_DIR,
    EOT,
    TOKENIZER_PATH,
    DataError,
    batch_at,
    corpus_path,
    encode_corpus,
    get_batch,
    load_gpt2_tokenizer,
    load_text,
    load_tokenizer,
    load_tokens,
    read_text,
    text_chunks,
    tokenizer_fingerprint,
    train_tokenizer,
)

TRICKY = [
    "Hello world",
    " the",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\r\nwindows newlines\n\n\nthree newlines\n",
    "naïve café, Æsop, ὁ λόγος, Москва, 東京, 🙂👍🏽",
    "combining: e\u0301 zero\u200bwidth",
    "<|endoftext|>between<|endoftext|>",
    "",
    "\n",
    "   ",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def gpt2():
    return load_gpt2_tokenizer()


def test_paths_do_not_depend_on_cwd():
    repo = Path(data.__file__).resolve().parent.parent
    assert DATA_DIR == repo / "data" and DATA_DIR.is_dir()
    assert TOKENIZER_PATH == DATA_DIR / "tokenizer" / "gutenberg-16k.json"
    assert set(CORPUS_FILES) == {"train", "validation", "test"}
    assert all(
        path.is_file() and path.suffix == ".xz" for path in CORPUS_FILES.values()
    )
    assert CACHE_DIR.is_absolute()


@pytest.mark.slow
def test_module_imports_from_elsewhere_without_datasets(tmp_path):
    # The GPU machine has no `datasets`: the module must import without it, from any
    # directory.
    code = (
        "import sys; sys.modules['datasets'] = None\n"
        "from backpack.data import get_batch, load_tokenizer; "
        "print(load_tokenizer().get_vocab_size())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "16384"


@pytest.mark.slow
def test_cache_dir_from_environment(tmp_path):
    code = "from backpack.data import CACHE_DIR; print(CACHE_DIR)"
    env = {"BACKPACK_CACHE": str(tmp_path / "c"), "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert result.stdout.strip() == str(tmp_path / "c")


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip(tokenizer, gpt2, text):
    for tok in (tokenizer, gpt2):
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_gpt2_known_ids(gpt2):
    assert gpt2.get_vocab_size() == 50257
    assert gpt2.encode("Hello world").ids == [15496, 995]
    assert gpt2.encode(" the").ids == [262]
    assert gpt2.encode(EOT).ids == [50256]
    assert gpt2.encode("Hello<|endoftext|>").ids == [15496, 50256]


def test_our_tokenizer(tokenizer):
    assert tokenizer.get_vocab_size() == 16384
    assert tokenizer.token_to_id(EOT) == 0
    assert len(tokenizer.encode(" the").ids) == 1
    assert tokenizer.encode("a<|endoftext|>b").ids[1] == 0


def test_text_chunks_encode_like_whole_text(tokenizer, gpt2):
    text = read_text("validation")[:60_000]
    chunks = list(text_chunks(text, chunk_chars=500))
    assert len(chunks) > 50 and "".join(chunks) == text
    for tok in (tokenizer, gpt2):
        pieces = [i for enc in tok.encode_batch(chunks) for i in enc.ids]
        assert pieces == tok.encode(text).ids


def test_train_tokenizer_is_deterministic(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(read_text("validation")[:20_000], encoding="utf-8")
    a = train_tokenizer(corpus, vocab_size=300)
    b = train_tokenizer([str(corpus)], vocab_size=300)
    assert a.to_str() == b.to_str() and tokenizer_fingerprint(
        a
    ) == tokenizer_fingerprint(b)
    assert a.get_vocab_size() == 300 and a.token_to_id(EOT) == 0
    assert a.decode(a.encode("the cat sat\n").ids) == "the cat sat\n"


def test_encode_corpus_cache(tmp_path, tokenizer):
    text = "It was the best of times, it was the worst of times.\n\nÆsop 🙂\n" * 20
    corpus = tmp_path / "tiny.txt.xz"
    corpus.write_bytes(lzma.compress(text.encode("utf-8")))
    path = encode_corpus(corpus, tokenizer, cache_dir=tmp_path / "cache")
    assert path.parent == tmp_path / "cache" / tokenizer_fingerprint(tokenizer)
    assert not list(path.parent.glob("*.tmp"))
    tokens = load_tokens(corpus, tokenizer, cache_dir=tmp_path / "cache")
    assert tokens.dtype == np.uint16 and tokens.tolist() == tokenizer.encode(text).ids
    mtime = path.stat().st_mtime_ns
    # reused, not rewritten
    assert encode_corpus(corpus, tokenizer, cache_dir=tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime
    other = train_tokenizer(
        CORPUS_FILES["test"].with_name("gutenberg_manifest.tsv"), vocab_size=280
    )
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    assert (
        encode_corpus(corpus, other, cache_dir=tmp_path / "cache").parent != path.parent
    )  # keyed on tokenizer


def test_encode_corpus_rejects_big_vocab(tmp_path, tokenizer):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("hello\n", encoding="utf-8")

    class Huge:  # only the vocabulary size matters for this check
        def get_vocab_size(self):
            return 70_000

    with pytest.raises(DataError, match="uint16"):
        encode_corpus(corpus, Huge(), cache_dir=tmp_path)


def test_batch_at():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = batch_at(tokens, torch.tensor([0, 10, 89]), block_size=10)
    assert x.shape == y.shape == (3, 10) and x.dtype == y.dtype == torch.int64
    assert x[1].tolist() == list(range(10, 20)) and y[1].tolist() == list(range(11, 21))
    assert y[2, -1].item() == 99
    with pytest.raises(IndexError):
        batch_at(tokens, torch.tensor([90]), block_size=10)


def test_get_batch(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(
        "train", 8, 32, generator=torch.Generator().manual_seed(1), tokens=tokens
    )
    assert (
        x.shape == y.shape == (8, 32)
        and x.dtype == y.dtype == torch.int64
        and x.device.type == "cpu"
    )
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x2, y2 = get_batch(
        "train", 8, 32, generator=torch.Generator().manual_seed(1), tokens=tokens
    )
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = get_batch(
        "train", 8, 32, generator=torch.Generator().manual_seed(2), tokens=tokens
    )
    assert not torch.equal(x, x3)


def test_get_batch_from_cached_split():
    # Uses the validation tokens only if the chapter has cached them (no full-corpus
    # encoding in tests).
    tokenizer = load_tokenizer()
    cached = CACHE_DIR / tokenizer_fingerprint(tokenizer) / "validation.bin"
    if not cached.exists():
        pytest.skip("run book/01_data.ipynb first to cache the tokenized splits")
    x, y = get_batch("validation", 2, 64, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 64) and int(x.max()) < tokenizer.get_vocab_size()
    assert torch.equal(x[:, 1:], y[:, :-1])


# Errors: each names the file and says what to do.

def test_missing_corpus(tmp_path):
    missing = tmp_path / "nope.txt.xz"
    for load in (read_text, load_text, corpus_path):
        with pytest.raises(DataError, match="nope.txt.xz.*not found"):
            load(missing)
    with pytest.raises(DataError, match="unknown split 'training'"):
        read_text("training")


@pytest.mark.parametrize("content", [b"", lzma.compress(b"")], ids=["plain", "xz"])
def test_empty_corpus(tmp_path, content):
    path = tmp_path / ("empty.txt.xz" if content else "empty.txt")
    path.write_bytes(content)
    for load in (read_text, load_text):
        with pytest.raises(DataError, match=f"{path.name} is empty"):
            load(path)


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait\n".encode("latin-1"))
    for load in (read_text, load_text):
        with pytest.raises(DataError, match="latin1.txt is not valid UTF-8"):
            load(path)


def test_too_short_tokens(tmp_path):
    path = tmp_path / "short.bin"
    np.arange(10, dtype=np.uint16).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    with pytest.raises(DataError, match="short.bin has 10 tokens"):
        get_batch("train", 2, 16, tokens=tokens)
    with pytest.raises(DataError, match="short.bin has 10 tokens"):
        batch_at(tokens, torch.tensor([0]), 16)
    with pytest.raises(DataError, match="token array has 3 tokens"):
        get_batch("train", 2, 8, tokens=np.zeros(3, dtype=np.uint16))


def test_missing_tokenizer(tmp_path):
    with pytest.raises(DataError, match="missing.json not found"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(DataError, match="vocab.bpe not found"):
        load_gpt2_tokenizer(vocab_bpe=tmp_path / "vocab.bpe")


def test_gpt2_tokenizer_from_the_xz_files_is_openais(tmp_path, gpt2):
    """The book's xz files, decompressed, are OpenAI's originals (data/README.md's
    sha256), and the tokenizer built from them is the one `BPE.from_file` builds."""
    import hashlib

    from tokenizers import models

    expected = {  # OpenAI's files' sha256 (tiktoken pins the same)
        "encoder.json": "196139668be63f3b5d6574427317ae82"
                        "f612a97c5d1cdaf36ed2256dbf636783",
        "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc"
                     "4624525b728b188a9e0be33b7726adc5",
    }
    for name, sha in expected.items():
        raw = lzma.decompress((data.GPT2_DIR / f"{name}.xz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == sha
        (tmp_path / name).write_bytes(raw)
    files = [str(tmp_path / name) for name in expected]
    reference = data.byte_level_bpe(models.BPE.from_file(*files))
    reference.add_special_tokens([data.EOT])
    assert gpt2.to_str() == reference.to_str()
    assert load_gpt2_tokenizer(*files).to_str() == reference.to_str()  # plain files too
