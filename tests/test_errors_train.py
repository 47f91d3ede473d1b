"""`backpack train` (`python -m backpack.train`) refuses what a person can get wrong,
before any step, in one line (exit status 2 for a bad command line, 3 for a run that
failed to learn), and loses nothing."""

import errno
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import backpack.runs as train_module  # the run machinery: saving, results, the CLI
from backpack.runs import (
    cli,
    divergence_message,
    good_checkpoints,
    list_checkpoints,
    prune_checkpoints,
)
from backpack.train import TrainConfig

VOCAB = 64
STREAM = np.resize(np.arange(VOCAB, dtype=np.uint16), 3000)


def base_args(tmp_path: Path, **files) -> list[str]:
    """A 2-step run of a small Backpack on files written to tmp_path (no
    --block-size)."""
    STREAM.tofile(tmp_path / "train.bin")
    STREAM.tofile(tmp_path / "val.bin")
    paths = {"train": tmp_path / "train.bin", "val": tmp_path / "val.bin", **files}
    return [
        "--preset",
        "tiny",
        "--vocab-size",
        str(VOCAB),
        "--n-positions",
        "32",
        "--n-embd",
        "32",
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--num-senses",
        "4",
        "--train-bin",
        str(paths["train"]),
        "--val-bin",
        str(paths["val"]),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--warmup-steps",
        "1",
        "--eval-interval",
        "2",
        "--eval-batches",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--save-dtype",
        "float32",
    ]


def run_cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """cli() in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["python -m backpack.train", *map(str, argv)])
    try:
        cli()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
        if not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return status, out, err


def refused(argv, monkeypatch, capsys, *needles: str) -> str:
    status, _, err = run_cli(argv, monkeypatch, capsys)
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m backpack.train: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", ["mytrain.txt", "mytrain.bin"])
def test_a_text_file_is_refused_as_text(name, tmp_path, monkeypatch, capsys):
    text = tmp_path / name
    text.write_text("It was the best of times, it was the worst of times.\n" * 50)
    out = tmp_path / "run"
    refused(
        base_args(tmp_path, train=text) + ["--out-dir", out],
        monkeypatch,
        capsys,
        f"--train-bin {text}: this looks like a text file",
        f"pass it as --train-text {text}",
    )
    assert not out.exists()  # refused before anything was written


def test_ids_outside_the_vocabulary_are_refused_before_training(
    tmp_path, monkeypatch, capsys
):
    bad = tmp_path / "bad_val.bin"
    np.concatenate([STREAM, [31092]]).astype(np.uint16).tofile(bad)
    out = tmp_path / "run"
    refused(
        base_args(tmp_path, val=bad) + ["--out-dir", out],
        monkeypatch,
        capsys,
        f"--val-bin {bad} holds token id 31092, outside the model's vocabulary "
        f"of 64 ids (0 to 63)",
    )
    assert not out.exists()


def test_a_file_of_an_odd_size_is_refused(tmp_path, monkeypatch, capsys):
    odd = tmp_path / "odd.bin"
    odd.write_bytes(STREAM.tobytes() + b"\x00")
    refused(
        base_args(tmp_path, train=odd), monkeypatch, capsys, "--train-bin", "odd number"
    )


def test_init_from_with_size_flags_is_refused(tmp_path, monkeypatch, capsys):
    refused(
        base_args(tmp_path) + ["--init-from", tmp_path / "m"],
        monkeypatch,
        capsys,
        "--init-from",
        "--vocab-size, --n-positions, --n-embd",
        "would be ignored",
    )


def test_an_out_dir_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").write_text("mine")
    refused(
        base_args(tmp_path) + ["--out-dir", tmp_path / "run"],
        monkeypatch,
        capsys,
        "is a file, not a folder",
    )
    assert (tmp_path / "run").read_text() == "mine"


def test_cuda_without_a_gpu_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [a if a != "cpu" else "cuda" for a in base_args(tmp_path)]
    refused(args, monkeypatch, capsys, "no CUDA GPU is visible: use --device cpu")


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_folder_and_keeps_the_checkpoints(
    tmp_path, monkeypatch, capsys
):
    real, calls = train_module.write_pretrained, []

    def write_until_full(model, folder):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, folder)

    monkeypatch.setattr(train_module, "write_pretrained", write_until_full)
    out = tmp_path / "run"
    argv = base_args(tmp_path) + ["--checkpoint-interval", "1", "--out-dir", out]
    status, _, err = run_cli(argv, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1, err
    assert "no space left to write" in lines[0] and "step-000002" in lines[0]
    assert "MiB free on its disk" in lines[0]
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]  # kept, whole


def test_a_run_worse_than_uniform_guessing_warns_and_exits_3_after_saving(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(train_module, "evaluate_tokens", lambda *a, **k: 88.0)
    out = tmp_path / "run"
    status, _, err = run_cli(
        base_args(tmp_path) + ["--out-dir", out], monkeypatch, capsys
    )
    assert status == 3
    assert (
        f"the final validation loss 88 is worse than guessing uniformly (ln V = ln 64 "
        f"= {math.log(64):.3f}): the run failed to learn; try a smaller "
        f"--learning-rate"
    ) in err
    assert (out / "model" / "config.json").is_file()  # nothing lost
    assert json.loads((out / "results.json").read_text())["val_slice_loss"] == 88.0


def test_warnings_when_nothing_is_saved_and_when_finetuning_is_all_warmup(
    tmp_path, monkeypatch, capsys
):
    status, out, _ = run_cli(base_args(tmp_path), monkeypatch, capsys)
    assert status == 0
    assert "warning: no --out-dir: the model will be trained and then discarded" in out
    torch.manual_seed(0)
    from backpack.model import BackpackConfig, BackpackLM

    BackpackLM(
        BackpackConfig(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=2,
            num_senses=4,
        )
    ).save_pretrained(tmp_path / "m")
    args = base_args(tmp_path)[14:] + [
        "--init-from",
        tmp_path / "m",
        "--warmup-steps",
        "5",
    ]
    status, out, _ = run_cli(args, monkeypatch, capsys)
    assert status == 0
    assert (
        "warning: fine-tuning: all 2 steps fall inside the warmup (--warmup-steps 5)"
        in out
    )


def fake_checkpoints(root: Path, losses: dict[int, float]) -> None:
    for step, loss in losses.items():
        folder = root / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.pt").write_bytes(b"")
        (folder / "loss.json").write_text(json.dumps({"step": step, "loss": loss}))


def test_divergence_names_the_newest_checkpoint_whose_loss_is_good(tmp_path):
    fake_checkpoints(tmp_path, {2: 3.1, 4: 2.9, 6: 7e17, 8: 9e17})
    assert [p.name for p in good_checkpoints(list_checkpoints(tmp_path))] == [
        "step-000002",
        "step-000004",
    ]
    config = TrainConfig(out_dir=str(tmp_path), learning_rate=0.3)
    message = divergence_message(math.nan, math.nan, 9, config)
    assert (
        "Last good checkpoint: " + str(tmp_path / "checkpoints" / "step-000004")
        in message
    )
    assert "The newer step-000006, step-000008 already blew up" in message
    assert "--resume --allow-config-change --learning-rate 0.15" in message
    prune_checkpoints(tmp_path, keep=2)  # the good one survives pruning
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-000004",
        "step-000006",
        "step-000008",
    ]


# One command line: `backpack COMMAND` (backpack.__main__), its help, `backpack eval`


def test_backpack_help_lists_every_command_and_each_documents_its_options(capsys):
    from backpack.__main__ import COMMANDS, main

    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for name in ("train", "eval", "demo", "data", "bench"):
        assert name in COMMANDS and f"\n  {name} " in shown
    for argv in (["train"], ["eval"], ["data", "install"]):
        try:
            status = main([*argv, "--help"])
        except SystemExit as stop:  # argparse's --help exits
            status = stop.code
        assert status == 0
        text = " ".join(capsys.readouterr().out.split())
        assert text.startswith(f"usage: python -m backpack {' '.join(argv)}")
        assert "default" in text
    assert main(["nope"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'nope': choose one of train, eval" in error


def test_every_train_option_has_help_with_its_default():
    from backpack.runs import eval_parser, train_parser

    for parser in (train_parser(), eval_parser()):
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, action.option_strings
            assert "default" in action.help or "required" in action.help, action.help


def saved_tiny(tmp_path: Path) -> Path:
    from backpack.model import BackpackConfig, BackpackLM

    torch.manual_seed(0)
    config = BackpackConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2,
                            n_head=2, num_senses=4)
    BackpackLM(config).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_eval_prints_one_perplexity_with_its_definition(tmp_path, capsys):
    from backpack.__main__ import main
    from backpack.checkpoint import load_pretrained
    from backpack.train import evaluate_tokens

    folder = saved_tiny(tmp_path)
    STREAM.tofile(tmp_path / "val.bin")
    tokens = str(tmp_path / "val.bin")
    assert main(["eval", "--model", str(folder), "--tokens", tokens]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    loss = evaluate_tokens(load_pretrained(folder), STREAM, 32)
    assert len(out) == 1
    assert out[0].startswith(f"perplexity {math.exp(loss):.2f} on val.bin")
    assert ("exp of the mean next-token cross-entropy" in out[0]
            and "over 2,976 tokens, in 93 windows of 32 tokens" in out[0])


def test_eval_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    from backpack.__main__ import main

    folder = saved_tiny(tmp_path)
    bad = tmp_path / "bad.bin"
    np.concatenate([STREAM, [31092]]).astype(np.uint16).tofile(bad)
    cases = [
        (["--model", str(folder), "--tokens", str(bad)], "holds token id 31092"),
        (["--model", str(tmp_path / "none"), "--tokens", str(bad)], "none"),
        (["--model", str(folder), "--tokens", str(bad), "--block-size", "64"],
         "exceeds the model's context 32"),
    ]
    for argv, needle in cases:
        assert main(["eval", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("python -m backpack eval: error:")
        assert needle in lines[0], lines[0]
