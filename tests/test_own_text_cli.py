"""Your own text, end to end, as a user types it: `backpack tokenizer train`, `backpack
train --train-text`, `backpack eval --text`, `backpack demo --model`, each run by the
console command in a temporary folder outside the repository; and the refusals of a
token file from another tokenizer and of a vocabulary that is not the tokenizer's."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backpack.data import read_text

BIN = Path(sys.executable).parent
SMALL = ["--preset", "tiny", "--n-embd", "32", "--n-layer", "1", "--n-head", "2",
         "--num-senses", "2", "--n-positions", "32", "--batch-size", "4",
         "--eval-interval", "3", "--eval-batches", "1", "--device", "cpu",
         "--no-progress"]


def backpack(*args: str, folder: Path) -> subprocess.CompletedProcess:
    """`backpack ARGS` in folder, as a user runs it (the cache in folder too)."""
    command = [str(BIN / "backpack")] if (BIN / "backpack").is_file() else [
        sys.executable, "-m", "backpack"]
    env = {**os.environ, "BACKPACK_CACHE": str(folder / "cache")}
    return subprocess.run([*command, *args], cwd=folder, env=env, text=True,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder of three small texts and a tokenizer of 512 tokens trained on two."""
    folder = tmp_path_factory.mktemp("own_text_cli")
    text = read_text("validation")[:36_000]
    (folder / "texts").mkdir()
    (folder / "texts" / "one.txt").write_text(text[:16_000], encoding="utf-8")
    (folder / "texts" / "two.txt").write_text(text[16_000:30_000], encoding="utf-8")
    (folder / "held_out.txt").write_text(text[30_000:], encoding="utf-8")
    done = backpack("tokenizer", "train", "texts/one.txt", "texts/two.txt",
                    "--vocab-size", "512", "--out", "tok.json", folder=folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tok.json"
    assert "next: backpack tokenizer encode" in done.stderr  # the console's name
    return folder


@pytest.mark.slow
def test_tokenizer_train_eval_demo(folder):
    assert not folder.is_relative_to(Path(__file__).parents[1])  # outside the clone
    done = backpack("train", "--train-text", "texts/one.txt", "--val-text",
                    "texts/two.txt", "--tokenizer", "tok.json", *SMALL,
                    "--max-steps", "3", "--out-dir", "run", folder=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    cached = re.findall(r"cached in (\S+)", done.stdout)  # where each text went
    assert len(cached) == 2 and all(Path(p).is_file() for p in cached)
    assert all(Path(p).is_relative_to(folder / "cache") for p in cached)
    model = folder / "run" / "model"
    assert (model / "tokenizer.json").read_bytes() == (folder / "tok.json").read_bytes()
    assert '"vocab_size": 512' in (model / "config.json").read_text()

    done = backpack("eval", "--model", "run/model", "--text", "held_out.txt",
                    folder=folder)
    assert done.returncode == 0, done.stderr
    value = float(re.match(r"perplexity (\S+) on held_out.txt: exp of the mean "
                           r"next-token cross-entropy", done.stdout)[1])
    assert math.isfinite(value) and 1 < value < 2 * 512  # near uniform after 3 steps

    done = backpack("demo", "--model", "run/model", "--prompt", "It was a",
                    "--max-new-tokens", "6", "--seed", "0", folder=folder)
    assert done.returncode == 0, done.stderr
    continued = done.stdout.split("[unmodified] It was a")[1].splitlines()[0]
    assert continued.strip()  # text, from the tokenizer found beside the model


@pytest.mark.slow
def test_token_file_of_another_tokenizer_is_refused(folder):
    done = backpack("tokenizer", "encode", "texts/one.txt", "--tokenizer", "tok.json",
                    folder=folder)
    assert done.returncode == 0, done.stderr
    tokens = done.stdout.strip()
    for args in (["--train-bin", tokens, "--val-text", "texts/two.txt"],  # book's
                 ["--train-bin", tokens, "--val-bin", tokens]):
        done = backpack("train", *args, "--max-steps", "1", "--out-dir", "no_run",
                        folder=folder)
        assert done.returncode == 2, done.stderr
        error = done.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("backpack train: error: "
                                                       "--train-bin: ")
        fingerprints = re.findall(r"tokenizer ([0-9a-f]{16}) \(", error[0])
        fingerprints += re.findall(r"this one, ([0-9a-f]{16}) \(", error[0])
        assert len(set(fingerprints)) == 2, error[0]  # both named
        assert "--tokenizer PATH" in error[0] and "encode the text again" in error[0]
        assert not (folder / "no_run").exists()  # refused before training


@pytest.mark.slow
def test_a_vocabulary_that_is_not_the_tokenizers_is_refused(folder):
    done = backpack("train", "--train-text", "texts/one.txt", "--val-text",
                    "texts/two.txt", "--tokenizer", "tok.json", "--vocab-size", "1024",
                    "--max-steps", "1", "--out-dir", "no_run", folder=folder)
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip().splitlines()
    assert error == [
        "backpack train: error: the tokenizer tok.json has 512 tokens but the model's "
        "vocabulary has 1,024: they must be equal; drop --vocab-size (it defaults to "
        "the tokenizer's) or pass --vocab-size 512"]
    assert not (folder / "no_run").exists()
