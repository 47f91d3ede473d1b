"""Tests of the training loop (chapter 7): exact resume, DDP = one process, divergence, schedule."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backpack.model import BackpackConfig, BackpackLM
from backpack.train import (TrainConfig, TrainingDiverged, latest_checkpoint, learning_rate_at, train,
                            evaluate_tokens)

VOCAB = 64
MODEL = dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_senses=4)


def tokens(n: int, seed: int) -> np.ndarray:
    """A token stream with structure to learn: a noisy repeating pattern."""
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, VOCAB, 37)
    stream = np.resize(pattern, n)
    noise = rng.random(n) < 0.1
    stream[noise] = rng.integers(0, VOCAB, noise.sum())
    return stream.astype(np.uint16)


STREAM = tokens(23000, 0)
TRAIN, VAL = STREAM[:20000], STREAM[20000:]


def fresh(**overrides) -> BackpackLM:
    torch.manual_seed(0)
    return BackpackLM(BackpackConfig(**{**MODEL, **overrides}))


def config(**overrides) -> TrainConfig:
    base = dict(max_steps=12, batch_size=4, block_size=16, learning_rate=3e-3, warmup_steps=3,
                eval_interval=6, eval_batches=2, log_interval=3, progress=False, device="cpu")
    return TrainConfig(**{**base, **overrides})


def test_loss_decreases_and_metrics_are_written(tmp_path):
    model = fresh()
    result = train(model, config(max_steps=60, out_dir=str(tmp_path)), TRAIN, VAL, log=None)
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"] - 0.5
    assert result.final_val_loss < math.log(VOCAB) - 0.5
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.metrics) and "val_loss" in json.loads(lines[-1])
    assert result.tokens_seen == 60 * 4 * 16


def test_resume_is_exact(tmp_path):
    straight = fresh(dropout=0.1)
    train(straight, config(), TRAIN, VAL, log=None)
    interrupted = fresh(dropout=0.1)
    train(interrupted, config(out_dir=str(tmp_path), stop_after=6), TRAIN, VAL, log=None)
    assert latest_checkpoint(tmp_path).name == "step-000006"
    resumed = fresh(dropout=0.1)  # a new process starts from a fresh model
    result = train(resumed, config(out_dir=str(tmp_path), resume=True), TRAIN, VAL, log=None)
    assert result.final_step == 12
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_gradient_accumulation_equals_one_big_batch():
    big, accumulated = fresh().double(), fresh().double()  # float64: Adam amplifies rounding noise
    train(big, config(batch_size=8), TRAIN, VAL, log=None)
    train(accumulated, config(batch_size=4, tokens_per_step=8 * 16), TRAIN, VAL, log=None)
    for a, b in zip(big.state_dict().values(), accumulated.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="not a multiple"):
        config(tokens_per_step=100).grad_accum_steps(1)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = fresh()
    train(model, config(out_dir=str(tmp_path), stop_after=4), TRAIN, VAL, log=None)
    good = latest_checkpoint(tmp_path)
    # break the model in the checkpoint's place: a NaN weight makes the next loss NaN
    state = load_file(str(good / "model.safetensors"))
    broken = fresh()
    with torch.no_grad():
        broken.transformer.wte.weight[0, 0] = float("nan")
        broken.transformer.wte.weight.fill_(float("nan"))
    from backpack.train import save_checkpoint
    with pytest.raises(TrainingDiverged, match="became nan at step 0.*Last good checkpoint"):
        train(broken, config(), TRAIN, VAL, log=None)
    assert latest_checkpoint(tmp_path) == good
    assert set(load_file(str(good / "model.safetensors"))) == set(state)


def test_schedule_warmup_peak_and_floor():
    c = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    assert learning_rate_at(0, c) == pytest.approx(0.1)
    assert learning_rate_at(9, c) == pytest.approx(1.0)
    assert learning_rate_at(100, c) == pytest.approx(0.1)
    c.decay = "linear"
    assert learning_rate_at(55, c) == pytest.approx(0.1 + 0.9 * 0.5)
    c.decay = "step"
    with pytest.raises(ValueError, match="decay"):
        learning_rate_at(50, c)


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match="fewer than one block"):
        train(fresh(), config(), TRAIN[:10], VAL, log=None)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        train(fresh(), config(block_size=64), TRAIN, VAL, log=None)
    with pytest.raises(FileNotFoundError, match="resume=True"):
        train(fresh(), config(resume=True, out_dir="/nonexistent/run"), TRAIN, VAL, log=None)


def test_evaluate_tokens_covers_windows():
    model = fresh().eval()
    loss = evaluate_tokens(model, VAL, block_size=16, max_tokens=160, batch_size=3)
    x = torch.from_numpy(VAL[:161].astype(np.int64))
    manual = model(x[:160].view(10, 16), x[1:161].view(10, 16)).loss.item()
    assert loss == pytest.approx(manual, rel=1e-5)


def run_cli(args: list[str], nproc: int, env: dict) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launcher + ["-m", "backpack.train"] if nproc > 1 else [sys.executable, "-m", "backpack.train"])
    done = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), batch 4 each == 1 process with batch 8."""
    TRAIN.tofile(tmp_path / "train.bin")
    VAL.tofile(tmp_path / "val.bin")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = ["--preset", "tiny", "--vocab-size", str(VOCAB), "--n-positions", "32", "--n-embd", "32",
              "--n-layer", "2", "--n-head", "2", "--num-senses", "4", "--train-bin", str(tmp_path / "train.bin"),
              "--val-bin", str(tmp_path / "val.bin"), "--max-steps", "8", "--block-size", "16",
              "--warmup-steps", "2", "--learning-rate", "3e-3", "--eval-interval", "4", "--eval-batches", "2",
              "--device", "cpu", "--no-progress", "--save-dtype", "float32"]
    run_cli(common + ["--batch-size", "8", "--out-dir", str(tmp_path / "one")], 1, env)
    run_cli(common + ["--batch-size", "4", "--out-dir", str(tmp_path / "two")], 2, env)
    one = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert set(one) == set(two)
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=2e-5, msg=key)
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["steps"] == 8 and results["tokens_seen"] == 8 * 8 * 16
    assert (tmp_path / "two" / "curves.png").stat().st_size > 1000


def test_finetune_starts_from_a_saved_model(tmp_path):
    """--init-from loads any saved model (public format) and trains it further."""
    from backpack.checkpoint import load_pretrained
    from backpack.train import main
    start = fresh()
    start.save_pretrained(tmp_path / "init")
    TRAIN.tofile(tmp_path / "train.bin")
    VAL.tofile(tmp_path / "val.bin")
    main(["--init-from", str(tmp_path / "init"), "--train-bin", str(tmp_path / "train.bin"),
          "--val-bin", str(tmp_path / "val.bin"), "--max-steps", "3", "--batch-size", "2", "--block-size", "16",
          "--warmup-steps", "1", "--eval-interval", "3", "--eval-batches", "1", "--device", "cpu",
          "--no-progress", "--save-dtype", "float32", "--out-dir", str(tmp_path / "tuned")])
    tuned = load_pretrained(tmp_path / "tuned" / "model")
    assert isinstance(tuned, BackpackLM) and tuned.config == start.config
    changed = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values())]
    assert any(changed)
    assert json.loads((tmp_path / "tuned" / "results.json").read_text())["steps"] == 3
