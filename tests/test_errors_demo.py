"""`python -m backpack demo` with bad flags: one line of error on stderr, exit status 2,
nothing loaded or generated (chapter 9b). Also the session's own edge cases that need no
subprocess: --model with any saved Backpack, end of input at a terminal."""

import io
import json
import shutil
from pathlib import Path

import pytest

import backpack.demo as demo_module
from backpack.demo import HELP, main

ROOT = Path(__file__).resolve().parent.parent

CONTEXT = (
    "between 1 and 255 (the context holds 256 positions, and the prompt needs one)"
)
CASES = [  # (flags, the error line after "python -m backpack demo: error: ")
    (
        ["--topic", "sea", "9"],
        "topic strength must be one of [0, 1, 2, 3] (0 = off); got 9",
    ),
    (["--topic", "sea", "x"], "--topic strength must be a whole number; got 'x'"),
    (["--topic", "moon", "1"], "unknown topic 'moon'; choose one of"),
    (
        ["--edit", "Sherlock", "Holmes", "Xqzwy"],
        "' Xqzwy' is not in the vocabulary as one token",
    ),
    (["--max-new-tokens", "-5"], f"--max-new-tokens must be {CONTEXT}; got -5"),
    (["--max-new-tokens", "0"], f"--max-new-tokens must be {CONTEXT}; got 0"),
    (["--max-new-tokens", "256"], f"--max-new-tokens must be {CONTEXT}; got 256"),
    (["--max-new-tokens", "300"], f"--max-new-tokens must be {CONTEXT}; got 300"),
    (
        ["--seed", "99999999999999999999999"],
        "--seed must be between 0 and 2**63 - 1 (9223372036854775807); got 9999",
    ),
    (["--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
    (["--model", "/no/such/folder"], "--model /no/such/folder: no config.json there"),
    (
        ["--model", "data/models/transformer-gutenberg"],
        "holds a Transformer: the demo reads senses, so it needs a Backpack",
    ),
    (
        ["--model", "data/models/backpack-gutenberg"],
        "no tokenizer.json in data/models/backpack-gutenberg: give the model's "
        "tokenizer with --tokenizer PATH",
    ),
    (["--tokenizer", "/no/such/tokenizer.json"], "/no/such/tokenizer.json"),
]


@pytest.mark.parametrize("flags, message", CASES, ids=lambda x: " ".join(x)[:40])
def test_a_bad_flag_is_one_line_of_error_and_exit_2(
    flags, message, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)  # the flags name folders of the repository
    loaded = []
    monkeypatch.setattr(demo_module, "load_pretrained", lambda *a: loaded.append(a))
    out = io.StringIO()
    assert main(["--prompt", "hello", *flags], out=out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m backpack demo: error: ")
    assert message in err
    assert out.getvalue() == "" and loaded == []  # nothing loaded, nothing generated


def tiny_backpack_folder(tmp_path, tokenizer_beside: bool = True):
    """A small random Backpack saved with save_pretrained, the book's tokenizer beside
    it as tokenizer.json (or not)."""
    import torch

    from backpack.data import TOKENIZER_PATH
    from backpack.model import BackpackConfig, BackpackLM

    torch.manual_seed(0)
    config = BackpackConfig(
        vocab_size=16384, n_positions=32, n_embd=16, n_layer=1, n_head=2, num_senses=4
    )
    folder = tmp_path / "tiny"
    BackpackLM(config).save_pretrained(folder)
    if tokenizer_beside:
        shutil.copy(TOKENIZER_PATH, folder / "tokenizer.json")
    return folder


@pytest.mark.slow
def test_model_flag_loads_any_saved_backpack(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_module, "CACHE_DIR", tmp_path / "cache")
    folder = tiny_backpack_folder(tmp_path)
    flags = [
        "--model",
        str(folder),
        "--prompt",
        "The nurse said",
        "--seed",
        "3",
        "--max-new-tokens",
        "4",
        "--debias",
        "--edit",
        "Sherlock",
        "Holmes",
        "Smith",
    ]
    out = io.StringIO()
    assert main(flags, out=out) == 0, capsys.readouterr().err
    text = out.getvalue()
    assert text.startswith(f"loading the Backpack in {folder}...")
    assert "gender sense:" in text  # the book's profession words, in this tokenizer
    assert (
        "[unmodified] The nurse said" in text and "[intervened] The nurse said" in text
    )
    # its context is 32 positions: the range follows the model
    assert main([*flags, "--max-new-tokens", "32"], out=io.StringIO()) == 2
    assert "--max-new-tokens must be between 1 and 31" in capsys.readouterr().err
    # a tokenizer given with --tokenizer, and one larger than the model's vocabulary
    (folder / "tokenizer.json").rename(tmp_path / "tok.json")
    out = io.StringIO()
    assert main([*flags, "--tokenizer", str(tmp_path / "tok.json")], out=out) == 0
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 100
    (folder / "config.json").write_text(json.dumps(config))
    assert main([*flags, "--tokenizer", str(tmp_path / "tok.json")], out=out) == 2
    assert "more than the model's vocabulary of 100" in capsys.readouterr().err


def test_end_of_input_at_a_terminal_ends_the_line(tmp_path, monkeypatch):
    """Ctrl-D at the prompt: the demo ends with a newline, so the shell's prompt starts
    on a line of its own."""
    monkeypatch.setattr(demo_module, "CACHE_DIR", tmp_path)  # the history file

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def ctrl_d(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", ctrl_d)
    out = io.StringIO()
    assert main(["--max-new-tokens", "3"], stdin=Terminal(), out=out) == 0
    assert out.getvalue().endswith(HELP + "\n\n")
