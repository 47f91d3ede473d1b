"""Tests of chapter 1's path from your own text files to token files (backpack.data):
train_tokenizer with out=, encode_text_file and its cache, the sidecar check, the errors
and the `python -m backpack tokenizer` command (tokenizer_main).

Fast: a few kilobytes of the validation split in tmp_path; tokenizers of 300 to 512."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backpack import data
from backpack.data import (
    EOT,
    DataError,
    check_token_file_tokenizer,
    encode_text_file,
    load_tokenizer,
    read_text,
    read_token_file,
    save_tokenizer,
    token_sidecar,
    tokenizer_fingerprint,
    tokenizer_json,
    tokenizer_main,
    tokenizer_sha256,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> list[Path]:
    """Two small UTF-8 files of the validation books (one with non-ASCII text)."""
    folder = tmp_path_factory.mktemp("own")
    text = read_text("validation")[:24_000]
    files = [folder / "one.txt", folder / "two.txt"]
    files[0].write_text(text[:12_000], encoding="utf-8")
    files[1].write_text(
        text[12_000:] + "\nnaïve café, Æsop, 東京 🙂\n", encoding="utf-8"
    )
    return files


@pytest.fixture(scope="module")
def own_tokenizer(texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "own.json"
    return train_tokenizer(texts, vocab_size=512, out=out)


def test_train_saves_and_round_trips(texts, own_tokenizer, tmp_path):
    assert own_tokenizer.get_vocab_size() == 512
    assert own_tokenizer.token_to_id(EOT) == 0  # end-of-text is id 0, as in the book's
    assert own_tokenizer.encode("a<|endoftext|>b").ids[1] == 0
    for text in [
        "the cat sat\n",
        "  two  spaces\tand a tab\n",
        "naïve café 🙂",
        "",
        EOT,
    ]:
        ids = own_tokenizer.encode(text).ids
        assert own_tokenizer.decode(ids, skip_special_tokens=False) == text
    out = tmp_path / "sub" / "tok.json"  # the parent folder is made
    again = train_tokenizer([str(f) for f in texts], 512, out=out)
    assert tokenizer_json(load_tokenizer(out)) == tokenizer_json(own_tokenizer)
    assert tokenizer_json(again) == tokenizer_json(own_tokenizer)  # deterministic
    assert [p.name for p in out.parent.iterdir()] == ["tok.json"]  # no temporary left


def test_never_overwrites_unless_asked(texts, own_tokenizer, tmp_path):
    out = tmp_path / "tok.json"
    out.write_text("the user's file")
    with pytest.raises(FileExistsError, match="tok.json already exists.*overwrite"):
        train_tokenizer(texts, 300, out=out)
    with pytest.raises(FileExistsError, match="already exists"):
        save_tokenizer(own_tokenizer, out)
    assert out.read_text() == "the user's file"
    save_tokenizer(own_tokenizer, out, overwrite=True)
    assert load_tokenizer(out).get_vocab_size() == 512
    with pytest.raises(DataError, match="is a folder"):
        save_tokenizer(own_tokenizer, tmp_path)


def test_encode_text_file_and_cache(
    texts, own_tokenizer, tmp_path, capsys, monkeypatch
):
    cache = tmp_path / "cache"
    path = encode_text_file(texts[0], own_tokenizer, cache_dir=cache)
    err = capsys.readouterr().err
    assert (
        f"encoding {texts[0]}" in err and f"into {path}" in err
    )  # said before it starts
    assert f"to {path}" in err.splitlines()[-1]  # and the path it wrote
    assert path.parent == cache / tokenizer_fingerprint(own_tokenizer)
    text_bytes = texts[0].read_bytes()
    assert path.name == f"one-{hashlib.sha256(text_bytes).hexdigest()[:12]}.bin"
    tokens = read_token_file(path)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == own_tokenizer.encode(texts[0].read_text("utf-8")).ids
    sidecar = json.loads(token_sidecar(path).read_text(encoding="utf-8"))
    assert sidecar == {
        "tokenizer_sha256": tokenizer_sha256(own_tokenizer),
        "vocab_size": 512,
        "tokens": len(tokens),
        "dtype": "uint16",
    }
    assert not list(path.parent.glob("*.tmp"))

    mtime = path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(data, "write_token_file", lambda *a, **k: calls.append(a))
    assert encode_text_file(texts[0], own_tokenizer, cache_dir=cache) == path
    assert calls == [] and path.stat().st_mtime_ns == mtime  # cached: not encoded again
    assert "already encoded" in capsys.readouterr().err


def test_encode_keyed_on_text_and_tokenizer(texts, own_tokenizer, tmp_path):
    cache = tmp_path / "cache"
    first = encode_text_file(texts[0], own_tokenizer, cache, progress=False)
    other = encode_text_file(texts[1], own_tokenizer, cache, progress=False)
    book = encode_text_file(texts[0], load_tokenizer(), cache, progress=False)
    assert (
        len({first, other, book}) == 3 and first.parent == other.parent != book.parent
    )
    edited = tmp_path / "one.txt"
    edited.write_text(texts[0].read_text("utf-8") + "more\n", encoding="utf-8")
    assert encode_text_file(edited, own_tokenizer, cache, progress=False) != first


def test_sidecar_refuses_another_tokenizer(texts, own_tokenizer, tmp_path):
    path = encode_text_file(texts[0], own_tokenizer, tmp_path, progress=False)
    check_token_file_tokenizer(path, own_tokenizer)  # its own tokenizer: accepted
    book = load_tokenizer()
    mine, theirs = tokenizer_fingerprint(own_tokenizer), tokenizer_fingerprint(book)
    with pytest.raises(DataError) as refused:
        check_token_file_tokenizer(path, book)
    message = str(refused.value)
    assert str(path) in message and mine in message and theirs in message
    assert "encode the text again" in message and "16384 tokens" in message
    # a bare token file (no sidecar) is accepted, as before sidecars existed
    bare = tmp_path / "bare.bin"
    np.arange(10, dtype=np.uint16).tofile(bare)
    check_token_file_tokenizer(bare, book)
    # a cached file whose sidecar names another tokenizer is refused, not reused
    token_sidecar(path).write_text(
        json.dumps({"tokenizer_sha256": "0" * 64, "vocab_size": 9})
    )
    with pytest.raises(DataError, match="made with tokenizer 0000000000000000"):
        encode_text_file(texts[0], own_tokenizer, tmp_path, progress=False)
    token_sidecar(path).write_text("{not json")
    with pytest.raises(DataError, match="cannot be read.*encode the text again"):
        check_token_file_tokenizer(path, own_tokenizer)


def test_non_utf8_names_file_and_offset(own_tokenizer, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Dorothy's café au lait\n".encode("latin-1"))
    offset = len("Dorothy's caf")
    for call in (
        lambda: encode_text_file(path, own_tokenizer, tmp_path),
        lambda: train_tokenizer([path], 300),
    ):
        with pytest.raises(
            DataError, match=f"latin1.txt is not valid UTF-8 \\(byte {offset}"
        ):
            call()
    assert not list(tmp_path.rglob("*.bin"))


@pytest.mark.parametrize("content", [b"", b" \n\n"], ids=["empty", "blank"])
def test_empty_file(own_tokenizer, tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty.txt is empty"):
        encode_text_file(path, own_tokenizer, tmp_path)
    with pytest.raises(DataError, match="empty.txt is empty"):
        train_tokenizer([path], 300)


def test_missing_files_and_folders(own_tokenizer, tmp_path):
    with pytest.raises(DataError, match="nope.txt not found"):
        train_tokenizer([tmp_path / "nope.txt"], 300)
    with pytest.raises(DataError, match="is a folder, not a text file"):
        encode_text_file(tmp_path, own_tokenizer, tmp_path)
    with pytest.raises(DataError, match="no text files"):
        train_tokenizer([], 300)


@pytest.mark.parametrize(
    "size, match",
    [
        (70_000, "too large.*uint16"),
        (65_537, "too large"),
        (100, "too small"),
        (512.0, "must be an integer"),
        (True, "must be an integer"),
    ],
)
def test_vocab_size_checked(texts, tmp_path, size, match):
    with pytest.raises(DataError, match=match):
        train_tokenizer(texts, size, out=tmp_path / "tok.json")
    assert not (tmp_path / "tok.json").exists()


def test_too_large_tokenizer_refused_by_encoding(texts, tmp_path):
    class Huge:  # only the vocabulary size matters for this check
        def get_vocab_size(self):
            return 70_000

    with pytest.raises(DataError, match="uint16"):
        encode_text_file(texts[0], Huge(), tmp_path)


# The command: python -m backpack tokenizer ... (tokenizer_main)


def test_cli_train_and_encode(texts, own_tokenizer, tmp_path, capsys):
    out = tmp_path / "tok.json"
    argv = ["train", *map(str, texts), "--vocab-size", "512", "--out", str(out)]
    assert tokenizer_main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out}\n"  # stdout: the path only
    assert "training a byte-level BPE tokenizer of 512" in captured.err
    assert tokenizer_json(load_tokenizer(out)) == tokenizer_json(own_tokenizer)

    assert tokenizer_main(argv) == 1  # refused: it exists
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "already exists" in err and "--overwrite" in err
    )
    assert tokenizer_main([*argv, "--overwrite"]) == 0
    capsys.readouterr()

    cache = tmp_path / "cache"
    encode = [
        "encode",
        str(texts[0]),
        "--tokenizer",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    assert tokenizer_main(encode) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(encode_text_file(texts[0], own_tokenizer, cache, False))
    assert tokenizer_main(encode) == 0 and capsys.readouterr().out.strip() == printed


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["train", "{text}", "--out", "{tmp}/t.json", "--vocab-size", "70000"],
            "uint16",
        ),
        (
            ["train", "{text}", "--out", "{tmp}/t.json", "--vocab-size", "abc"],
            "not an integer",
        ),
        (["train", "{text}", "--out", "{tmp}/t.json", "--min-frequency", "0"], ">= 1"),
        (["train", "{text}"], "--out"),
        (["train", "{tmp}/nope.txt", "--out", "{tmp}/t.json"], "not found"),
        (["train", "{latin1}", "--out", "{tmp}/t.json"], "not valid UTF-8 \\(byte 3"),
        (["encode", "{empty}", "--cache-dir", "{tmp}"], "is empty"),
        (["encode", "{latin1}", "--cache-dir", "{tmp}"], "not valid UTF-8 \\(byte 3"),
        (["encode", "{tmp}", "--cache-dir", "{tmp}"], "is a folder"),
        (
            ["encode", "{text}", "--tokenizer", "{tmp}/missing.json"],
            "missing.json not found",
        ),
        (["encode", "{text}", "--tokenizer", "{latin1}"], "cannot be read"),
        (["encode"], "FILE"),
        (["retrain"], "invalid choice"),
        ([], "COMMAND"),
    ],
)
def test_cli_bad_input_exits_2(texts, tmp_path, capsys, argv, match):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    names = {
        "text": texts[0],
        "tmp": tmp_path,
        "latin1": tmp_path / "latin1.txt",
        "empty": tmp_path / "empty.txt",
    }
    assert tokenizer_main([a.format(**names) for a in argv]) == 2
    captured = capsys.readouterr()
    error = [line for line in captured.err.splitlines() if "error:" in line]
    assert (
        len(error) == 1 and captured.out == ""
    )  # one line of error, nothing on stdout
    assert error[0].startswith("python -m backpack tokenizer")
    assert re.search(match, error[0]), error[0]
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["encode", "-h"]])
def test_cli_help(argv, capsys):
    assert tokenizer_main(argv) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: python -m backpack tokenizer")
    if argv[0] == "train":
        for option in ("--vocab-size", "--min-frequency", "--out", "--overwrite"):
            assert option in help_text
        assert "default: 16384" in help_text and "default: 2" in help_text
        assert "default: refuse" in help_text and "no default" in help_text
    if argv[0] == "encode":
        assert "--tokenizer" in help_text and "--cache-dir" in help_text
        assert help_text.count("default:") == 2


@pytest.mark.slow
def test_cli_in_a_fresh_process(texts, tmp_path):
    # what `python -m backpack tokenizer` will run, once registered in __main__.py
    code = (
        "import sys; from backpack.data import tokenizer_main; "
        "sys.exit(tokenizer_main(sys.argv[1:]))"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "encode",
            str(texts[0]),
            "--tokenizer",
            str(tmp_path / "no.json"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and run.stdout == ""
    error = run.stderr.strip()
    assert len(error.splitlines()) == 1 and "no.json not found" in error
    assert "python -m backpack tokenizer train" in error  # the fix: train one
