"""Tests of the training loop (chapter 7) and its runs (chapter 7b): exact resume, DDP =
one process, divergence, schedule, the layering, the help from the fields."""

import json
import math
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backpack.model import BackpackConfig, BackpackLM
from backpack.runs import RunLocked, latest_checkpoint, list_checkpoints, train_run
from backpack.train import (
    TrainConfig,
    TrainingDiverged,
    evaluate_tokens,
    learning_rate_at,
    train,
)

VOCAB = 64
MODEL = dict(
    vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_senses=4
)


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
    base = dict(
        max_steps=12,
        batch_size=4,
        block_size=16,
        learning_rate=3e-3,
        warmup_steps=3,
        eval_interval=6,
        eval_batches=2,
        log_interval=3,
        progress=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **overrides})


@pytest.mark.slow
def test_loss_decreases_and_metrics_are_written(tmp_path):
    model = fresh()
    result = train_run(
        model, config(max_steps=60, out_dir=str(tmp_path)), TRAIN, VAL, log=None
    )
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"] - 0.5
    assert result.final_val_loss < math.log(VOCAB) - 0.5
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.metrics) and "val_loss" in json.loads(lines[-1])
    assert result.tokens_seen == 60 * 4 * 16


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    straight = fresh(dropout=0.1)
    train(straight, config(), TRAIN, VAL, log=None)
    interrupted = fresh(dropout=0.1)
    train_run(
        interrupted, config(out_dir=str(tmp_path), stop_after=6), TRAIN, VAL, log=None
    )
    assert latest_checkpoint(tmp_path).name == "step-000006"
    resumed = fresh(dropout=0.1)  # a new process starts from a fresh model
    result = train_run(
        resumed, config(out_dir=str(tmp_path), resume=True), TRAIN, VAL, log=None
    )
    assert result.final_step == 12
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values()
    , strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch():
    big, accumulated = (
        fresh().double(),
        fresh().double(),
    )  # float64: Adam amplifies rounding noise
    train(big, config(batch_size=8), TRAIN, VAL, log=None)
    train(
        accumulated, config(batch_size=4, tokens_per_step=8 * 16), TRAIN, VAL, log=None
    )
    pairs = zip(
        big.state_dict().values(), accumulated.state_dict().values(), strict=True
    )
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="not a multiple"):
        config(tokens_per_step=100).grad_accum_steps(1)


def poison_from(model, calls: int, where: str) -> None:
    """Make the forward output (where="loss") or the gradients (where="grad") NaN from
    call `calls`."""
    count = {"n": 0}

    def on_forward(module, inputs, output):
        count["n"] += 1
        return (
            output * float("nan") if where == "loss" and count["n"] > calls else output
        )

    def on_grad(grad):
        return grad * float("nan") if count["n"] > calls else grad

    model.transformer.ln_f.register_forward_hook(on_forward)
    if where == "grad":
        model.sense_weight_net.c_attn.weight.register_hook(on_grad)


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_divergence_stops_before_the_step_and_keeps_only_finite_checkpoints(
    where, tmp_path
):
    model = fresh()
    poison_from(model, calls=7, where=where)  # steps 0..6 are fine, step 7 is not
    with pytest.raises(
        TrainingDiverged,
        match=r"at step 7; the step was not taken.*"
        r"Last good checkpoint: .*step-000006.*--resume --allow-config-change "
        r"--learning-rate 0.0015",
    ) as info:
        train_run(
            model,
            config(out_dir=str(tmp_path), checkpoint_interval=2, eval_interval=100),
            TRAIN,
            VAL,
            log=None,
        )
    assert ("loss became nan" in str(info.value)) == (where == "loss")
    assert "gradient norm nan" in str(info.value)
    kept = list_checkpoints(tmp_path)
    assert [p.name for p in kept] == [
        "step-000004",
        "step-000006",
    ]  # keep_checkpoints=2
    for folder in kept:
        assert all(
            torch.isfinite(t).all()
            for t in load_file(str(folder / "model.safetensors")).values()
        )
    assert all(
        torch.isfinite(p).all() for p in model.parameters()
    )  # the bad step was not taken


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    from backpack.runs import check_finite
    from backpack.train import configure_optimizer

    model = fresh()
    with torch.no_grad():
        model.sense_network.ln.weight[0] = float("inf")
    with pytest.raises(
        TrainingDiverged, match=r"sense_network.ln.weight holds NaN or infinite"
    ):
        check_finite(model, configure_optimizer(model, config(), "cpu"), 3)


def test_a_used_out_dir_is_refused_without_resume_or_overwrite(tmp_path):
    train_run(fresh(), config(out_dir=str(tmp_path), max_steps=4), TRAIN, VAL, log=None)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.name != ".lock"}
    with pytest.raises(
        FileExistsError,
        match=r"already holds a run \(checkpoints, metrics.jsonl\)"
        r": pass --resume",
    ):
        train_run(
            fresh(), config(out_dir=str(tmp_path), max_steps=4), TRAIN, VAL, log=None
        )
    assert {
        p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.name != ".lock"
    } == before
    result = train_run(
        fresh(),
        config(out_dir=str(tmp_path), max_steps=2, overwrite=True),
        TRAIN,
        VAL,
        log=None,
    )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002"]
    assert [
        json.loads(x)["step"]
        for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ] == [m["step"] for m in result.metrics]


def test_a_second_run_in_the_same_out_dir_is_locked_out(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); "
                "fcntl.flock(f, fcntl.LOCK_EX); "
                "f.write(f'{os.getpid()}\\n'); f.flush(); "
                "print('locked', flush=True); time.sleep(60)"
            ),
            str(tmp_path / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            RunLocked, match=rf"in use by another training run \(pid {holder.pid}\)"
        ):
            train_run(fresh(), config(out_dir=str(tmp_path)), TRAIN, VAL, log=None)
    finally:
        holder.kill()
        holder.wait()
    train_run(
        fresh(), config(out_dir=str(tmp_path), max_steps=1), TRAIN, VAL, log=None
    )  # free again


@pytest.mark.slow
def test_resume_refuses_changes_that_break_exactness(tmp_path):
    train_run(
        fresh(), config(out_dir=str(tmp_path), stop_after=6), TRAIN, VAL, log=None
    )
    with pytest.raises(
        ValueError,
        match=r"changed settings \(batch_size: 4 -> 8\).*"
        r"--allow-config-change",
    ):
        train_run(
            fresh(),
            config(out_dir=str(tmp_path), resume=True, batch_size=8),
            TRAIN,
            VAL,
            log=None,
        )
    with pytest.raises(ValueError, match=r"train_tokens: '20000:.*' -> '19000:"):
        train_run(
            fresh(),
            config(out_dir=str(tmp_path), resume=True),
            TRAIN[:19000],
            VAL,
            log=None,
        )
    with pytest.raises(
        ValueError, match=r"at step 6, beyond max_steps=4: there is nothing to train"
    ):
        train_run(
            fresh(),
            config(
                out_dir=str(tmp_path),
                resume=True,
                max_steps=4,
                allow_config_change=True,
            ),
            TRAIN,
            VAL,
            log=None,
        )
    said = []
    result = train_run(
        fresh(),
        config(
            out_dir=str(tmp_path),
            resume=True,
            learning_rate=1e-3,
            allow_config_change=True,
        ),
        TRAIN,
        VAL,
        log=said.append,
    )
    assert result.final_step == 12 and "learning_rate: 0.003 -> 0.001" in said[0]


@pytest.mark.slow
def test_resume_cuts_metrics_back_and_cleans_stale_temporaries(tmp_path):
    train_run(
        fresh(), config(out_dir=str(tmp_path), stop_after=6), TRAIN, VAL, log=None
    )
    metrics = tmp_path / "metrics.jsonl"
    with metrics.open(
        "a"
    ) as f:  # a crash after logging step 9, in the middle of a line
        f.write(json.dumps({"step": 9, "loss": 1.0}) + "\n" + '{"step": 12, "lo')
    (tmp_path / "checkpoints" / ".step-000009.tmp-abc").mkdir()
    (tmp_path / ".results.json.x.tmp").write_text("{")
    train_run(fresh(), config(out_dir=str(tmp_path), resume=True), TRAIN, VAL, log=None)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [3, 6, 9, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock",
        "checkpoints",
        "metrics.jsonl",
    ]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [
        "step-000006",
        "step-000012",
    ]


def test_config_is_checked_before_any_step():
    from backpack.weights import ConfigError

    with pytest.raises(
        ConfigError, match=r"TrainConfig.min_lr_ratio=1.5 is out of range"
    ):
        config(min_lr_ratio=1.5)
    with pytest.raises(ConfigError, match=r"TrainConfig.decay='step' is not allowed"):
        config(decay="step")
    with pytest.raises(
        ValueError,
        match=r"block_size 64 exceeds the model's context 32: pass "
        r"--block-size 32",
    ):
        train(fresh(), config(block_size=64), TRAIN, VAL, log=None)


def test_schedule_warmup_peak_and_floor():
    c = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    assert learning_rate_at(0, c) == pytest.approx(0.1)
    assert learning_rate_at(9, c) == pytest.approx(1.0)
    assert learning_rate_at(100, c) == pytest.approx(0.1)
    c.decay = "linear"
    assert learning_rate_at(55, c) == pytest.approx(0.1 + 0.9 * 0.5)


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match="fewer than one block"):
        train(fresh(), config(), TRAIN[:10], VAL, log=None)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        train(fresh(), config(block_size=64), TRAIN, VAL, log=None)
    with pytest.raises(
        FileNotFoundError, match="resume=True but /nonexistent/run/checkpoints"
    ):
        train_run(
            fresh(),
            config(resume=True, out_dir="/nonexistent/run"),
            TRAIN,
            VAL,
            log=None,
        )


def test_evaluate_tokens_covers_windows():
    model = fresh().eval()
    loss = evaluate_tokens(model, VAL, block_size=16, max_tokens=160, batch_size=3)
    x = torch.from_numpy(VAL[:161].astype(np.int64))
    manual = model(x[:160].view(10, 16), x[1:161].view(10, 16)).loss.item()
    assert loss == pytest.approx(manual, rel=1e-5)


def run_cli(args: list[str], nproc: int, env: dict) -> None:
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
    ]
    cmd = (
        launcher + ["-m", "backpack.train"]
        if nproc > 1
        else [sys.executable, "-m", "backpack.train"]
    )
    done = subprocess.run(
        cmd + args, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), batch 4 each == 1 process with batch 8."""
    TRAIN.tofile(tmp_path / "train.bin")
    VAL.tofile(tmp_path / "val.bin")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = [
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
        str(tmp_path / "train.bin"),
        "--val-bin",
        str(tmp_path / "val.bin"),
        "--max-steps",
        "8",
        "--block-size",
        "16",
        "--warmup-steps",
        "2",
        "--learning-rate",
        "3e-3",
        "--eval-interval",
        "4",
        "--eval-batches",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--save-dtype",
        "float32",
    ]
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


@pytest.mark.slow
def test_finetune_starts_from_a_saved_model(tmp_path):
    """--init-from loads any saved model (public format) and trains it further."""
    from backpack.checkpoint import load_pretrained
    from backpack.runs import main

    start = fresh()
    start.save_pretrained(tmp_path / "init")
    TRAIN.tofile(tmp_path / "train.bin")
    VAL.tofile(tmp_path / "val.bin")
    main(
        [
            "--init-from",
            str(tmp_path / "init"),
            "--train-bin",
            str(tmp_path / "train.bin"),
            "--val-bin",
            str(tmp_path / "val.bin"),
            "--max-steps",
            "3",
            "--batch-size",
            "2",
            "--block-size",
            "16",
            "--warmup-steps",
            "1",
            "--eval-interval",
            "3",
            "--eval-batches",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--save-dtype",
            "float32",
            "--out-dir",
            str(tmp_path / "tuned"),
        ]
    )
    tuned = load_pretrained(tmp_path / "tuned" / "model")
    assert isinstance(tuned, BackpackLM) and tuned.config == start.config
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            start.state_dict().values(), tuned.state_dict().values(), strict=True
        )
    ]
    assert any(changed)
    results = json.loads((tmp_path / "tuned" / "results.json").read_text())
    assert results["steps"] == 3 and results["init_from"] == str(tmp_path / "init")


def tiny_cli_args(tmp_path: Path, max_steps: int) -> list[str]:
    """A tiny Backpack run that checkpoints after every step (the data written next
    to it)."""
    TRAIN.tofile(tmp_path / "train.bin")
    VAL.tofile(tmp_path / "val.bin")
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
        str(tmp_path / "train.bin"),
        "--val-bin",
        str(tmp_path / "val.bin"),
        "--max-steps",
        str(max_steps),
        "--batch-size",
        "4",
        "--block-size",
        "16",
        "--warmup-steps",
        "2",
        "--learning-rate",
        "3e-3",
        "--eval-interval",
        "10",
        "--eval-batches",
        "1",
        "--log-interval",
        "1",
        "--checkpoint-interval",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--save-dtype",
        "float32",
    ]


def newest_step(out: Path) -> int:
    folder = latest_checkpoint(out) if out.exists() else None
    return int(folder.name.split("-")[1]) if folder else 0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Kill a run with SIGKILL while it writes checkpoints, resume, repeat; the end is
    exact."""
    import random
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "backpack.train",
        *tiny_cli_args(tmp_path, max_steps=40),
    ]
    run_cli(
        tiny_cli_args(tmp_path, 40) + ["--out-dir", str(tmp_path / "straight")], 1, env
    )
    out, rng, kills = tmp_path / "killed", random.Random(8), 0
    for _ in range(4):
        start = newest_step(out)
        again = ["--resume"] if start else (["--overwrite"] if out.exists() else [])
        proc = subprocess.Popen(
            cmd + ["--out-dir", str(out), *again],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while (
            proc.poll() is None
            and newest_step(out) <= start
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)  # wait until this run is writing checkpoints
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3
    final = subprocess.run(
        cmd + ["--out-dir", str(out), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(out / "model" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    kept = list_checkpoints(out)
    assert 1 <= len(kept) <= 2 and kept[-1].name == "step-000040"
    for folder in kept:
        from backpack.checkpoint import load_pretrained

        model = load_pretrained(folder)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    steps = [
        json.loads(line)["step"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 41))
    assert not [
        p.name for p in out.rglob(".*") if p.name != ".lock"
    ]  # no temporaries left


@pytest.mark.slow
def test_cli_sense_sum_fused_trains_like_per_sense(tmp_path):
    """--sense-sum fused: chapter 10's kernel in training gives the same run, and is
    saved."""
    from backpack.checkpoint import load_pretrained
    from backpack.runs import main

    for way in ("per_sense", "fused"):
        main(
            tiny_cli_args(tmp_path, 3)
            + ["--sense-sum", way, "--out-dir", str(tmp_path / way)]
        )
    one, two = (
        load_pretrained(tmp_path / way / "model") for way in ("per_sense", "fused")
    )
    assert (one.config.sense_sum, two.config.sense_sum) == ("per_sense", "fused")
    pairs = zip(one.state_dict().items(), two.state_dict().values(), strict=True)
    for (key, a), b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=key)
    losses = [
        json.loads((tmp_path / way / "results.json").read_text())["final_val_loss"]
        for way in ("per_sense", "fused")
    ]
    assert abs(losses[0] - losses[1]) < 1e-4


def test_chapter_results_round_trip_atomically_and_refuse_nan(tmp_path, monkeypatch):
    import math

    import backpack.checkpoint as train_module  # chapter 6 keeps the results

    monkeypatch.setattr(train_module, "RESULTS_DIR", tmp_path / "results")
    with pytest.raises(
        FileNotFoundError, match=r"run book/08_analysis.ipynb, which writes it"
    ):
        train_module.chapter_results("08_analysis")
    values = {"bias": {"Backpack": {"ours": 10.4, "paper": 4.34}}, "rate": {"0": 0.029}}
    path = train_module.save_chapter_results("09_interventions", values)
    assert path == tmp_path / "results" / "09_interventions.json"
    assert train_module.chapter_results("09_interventions") == values
    with pytest.raises(ValueError):  # NaN is not JSON: refused, file kept
        train_module.save_chapter_results("09_interventions", {"bias": math.nan})
    assert train_module.chapter_results("09_interventions") == values
    assert [p.name for p in path.parent.iterdir()] == [
        "09_interventions.json"
    ]  # no temp file


def test_bf16_counts_as_native_only_with_the_instructions(monkeypatch):
    """auto never takes bf16 on a CPU, and asking for it where it is emulated warns."""
    import warnings

    from backpack.train import TrainConfig, autocast_for, cpu_has_native_bf16

    cpu = torch.device("cpu")
    monkeypatch.delenv(
        "ONEDNN_MAX_CPU_ISA", raising=False
    )  # set when CI emulates a CPU
    assert autocast_for(TrainConfig(dtype="auto"), cpu) is nullcontext
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not cpu_has_native_bf16()
    with pytest.warns(UserWarning, match="no bfloat16 instructions"):
        autocast_for(TrainConfig(dtype="bfloat16"), cpu)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # oneDNN capped below BF16
    assert not cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cpu_has_native_bf16()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        autocast_for(TrainConfig(dtype="bfloat16"), cpu)


def test_the_cli_defaults_the_block_to_the_context_and_summarises_in_words(
    tmp_path, capsys
):
    """No --block-size: the model's n_positions; the summary names the folder and the
    perplexity with its definition; results.json records init_from."""
    from backpack.runs import main, parse_args

    args = [a for a in tiny_cli_args(tmp_path, 2)]
    del args[args.index("--block-size") : args.index("--block-size") + 2]
    main(args + ["--out-dir", str(tmp_path / "run")])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["train"]["block_size"] == 32 and results["init_from"] is None
    out = capsys.readouterr().out
    assert f"saved the model to {tmp_path / 'run' / 'model'}" in out
    assert "evaluating on the validation slice (2,976 tokens)..." in out
    assert (
        "validation perplexity {:.2f} (exp of the mean loss on the fixed validation "
        "slice of 2,976 tokens".format(results["val_slice_ppl"])
    ) in out
    assert "tokens/s on CPU" in out
    with pytest.raises(SystemExit):  # and --help says so
        parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: the model's context, n_positions)" in shown


def test_log_lines_step_around_the_progress_bar(monkeypatch):
    """While the bar is drawn, each log line is printed in the bar's
    external_write_mode."""
    import backpack.train as train_module
    from contextlib import contextmanager

    class Bar:
        writing = False

        def update(self, n):
            pass

        def set_postfix(self, **k):
            pass

        def close(self):
            pass

        @contextmanager
        def external_write_mode(self):
            Bar.writing = True
            yield
            Bar.writing = False

    lines = []
    monkeypatch.setattr(train_module, "progress_bar", lambda *a: Bar())
    train(
        fresh(),
        config(max_steps=6, progress=True),
        TRAIN,
        VAL,
        log=lambda line: lines.append((Bar.writing, line)),
    )
    assert lines and all(writing for writing, _ in lines)


@pytest.mark.slow
def test_the_loop_does_not_import_the_run_machinery():
    """backpack.runs imports backpack.train, never the reverse; the demo's model loading
    (backpack.checkpoint) needs neither."""
    code = (
        "import sys, backpack.train, backpack.checkpoint; "
        "print(sorted(m for m in sys.modules "
        "if m in ('backpack.runs', 'backpack.demo')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow
def test_train_alone_writes_nothing_and_says_where_out_dir_belongs(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"train\(\) writes nothing by itself.*"
        r"backpack.runs.train_run",
    ):
        train(fresh(), config(out_dir=str(tmp_path)), TRAIN, VAL, log=None)
    assert not any(tmp_path.iterdir())
    result = train_run(fresh(), config(max_steps=2), TRAIN, VAL, log=None)  # no out_dir
    assert result.final_step == 2 and result.checkpoint is None


def test_help_comes_from_the_config_fields_own_comments():
    from dataclasses import fields

    from backpack.runs import field_docs, train_parser

    docs = field_docs(TrainConfig)
    assert set(docs) == {f.name for f in fields(TrainConfig)} and all(docs.values())
    assert docs["grad_clip"] == "clip the global gradient norm to this (0: no clipping)"
    assert docs["tokens_per_step"].startswith(
        "the target batch in tokens"
    )  # lines above
    model_docs = field_docs(BackpackConfig)  # and those of the class it extends
    assert "n_positions" in model_docs and "num_senses" in model_docs
    helps = {a.dest: a.help for a in train_parser()._actions}
    assert all(helps.values()), [d for d, h in helps.items() if not h]
    assert helps["grad_clip"] == (
        "clip the global gradient norm to this (0: no clipping) (default: 1.0)"
    )
    assert (
        helps["resume"].endswith("(default: False)")
        and "default" not in helps["resume"][: -len("(default: False)")]
    )


def test_sense_init_authors_redraws_only_the_sense_networks_mlp_outputs():
    """--sense-init authors (the authors' training code): the sense network's two MLP
    output layers start at N(0, 0.02/sqrt(2 n_layer)), biases zero; every other weight
    is the default model's, drawn from the same seed."""
    from backpack.runs import model_from_args, parse_args

    sizes = ["--n-embd", "64", "--n-layer", "4", "--n-head", "2", "--vocab-size", "512"]
    default = model_from_args(parse_args(sizes), seed=0)
    authors = model_from_args(parse_args([*sizes, "--sense-init", "authors"]), seed=0)
    redrawn = {"sense_network.block.mlp.c_proj.weight",
               "sense_network.final_mlp.c_proj.weight"}
    theirs = authors.state_dict()
    for name, value in default.state_dict().items():
        assert torch.equal(value, theirs[name]) != (name in redrawn), name
    for name in redrawn:  # 16k and 262k draws: the std within a few percent
        weight = theirs[name]
        assert weight.mean().abs() < 1e-3
        assert weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
        assert not theirs[name.replace("weight", "bias")].any()
    assert default.state_dict()["sense_network.final_mlp.c_proj.weight"].std().item(
    ) == pytest.approx(0.02, rel=0.03)  # chapter 5's, unchanged by default


def test_sense_init_is_refused_where_it_means_nothing(tmp_path):
    from backpack.runs import check_args, parse_args
    from backpack.train import UsageError

    with pytest.raises(UsageError, match="Transformer has no sense network"):
        check_args(parse_args(["--model", "transformer", "--sense-init", "authors"]))
    with pytest.raises(UsageError, match="loads trained weights"):
        check_args(parse_args(["--init-from", str(tmp_path), "--sense-init", "gpt2"]))
    check_args(parse_args(["--sense-init", "authors"]))  # a fresh Backpack: fine
    check_args(parse_args(["--model", "transformer"]))
