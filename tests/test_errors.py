"""Every bad input gets a clear error: the exception type, a message naming the problem.

Each case is (what is wrong, a function of a temporary folder that does it, the error
expected, a pattern the message must match). The areas: model and training configs,
generate, the loss, loading checkpoints and data files, batches, the metrics logger.
"""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from backpack.checkpoint import CheckpointError, load_pretrained
from backpack.data import DataError, get_batch, load_tokenizer, read_token_file
from backpack.model import BackpackConfig, BackpackLM
from backpack.runs import train_run
from backpack.train import TrainConfig, format_metrics, train
from backpack.weights import ConfigError, TransformerConfig

SMALL = dict(
    vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_senses=2
)


def small_model() -> BackpackLM:
    torch.manual_seed(0)
    return BackpackLM(BackpackConfig(**SMALL)).eval()


def saved(tmp_path, edit=None):
    """A saved small model folder; edit(folder) damages it."""
    small_model().save_pretrained(tmp_path / "m")
    if edit is not None:
        edit(tmp_path / "m")
    return tmp_path / "m"


def write_config(folder, text: str) -> None:
    (folder / "config.json").write_text(text)


def edit_config(**changes):
    def edit(folder):
        values = json.loads((folder / "config.json").read_text())
        values.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            values.pop(key)
        write_config(folder, json.dumps(values))

    return edit


def truncate(name: str, keep: int):
    def edit(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])

    return edit


def to_bin(folder):
    from safetensors.torch import load_file

    torch.save(
        load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin"
    )
    (folder / "model.safetensors").unlink()


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def malicious_bin(folder):
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": RunsCode()}, f)


def tokens_file(tmp_path, data: bytes):
    path = tmp_path / "tokens.bin"
    path.write_bytes(data)
    return path


def train_with(**overrides):
    stream = (np.arange(400) % SMALL["vocab_size"]).astype(np.uint16)
    base = dict(
        max_steps=1,
        batch_size=2,
        block_size=8,
        eval_batches=1,
        progress=False,
        device="cpu",
    )
    return lambda tmp: train(
        small_model(), TrainConfig(**{**base, **overrides}), stream, stream, log=None
    )


def run_with(**overrides):
    """train_with, as a run with an out_dir (chapter 7b's train_run)."""
    stream = (np.arange(400) % SMALL["vocab_size"]).astype(np.uint16)
    base = dict(max_steps=1, batch_size=2, block_size=8, eval_batches=1,
                progress=False, device="cpu")
    return lambda tmp: train_run(
        small_model(), TrainConfig(**{**base, **overrides}), stream, stream, log=None
    )


PROMPT = torch.tensor([[1, 2, 3]])
X = torch.tensor([[1, 2, 3, 4]])

CASES = [
    # --- model configs (chapters 4 and 5) ---
    (
        "n_embd not divisible by n_head",
        lambda t: TransformerConfig(n_embd=64, n_head=5),
        ConfigError,
        r"n_embd=64 is not divisible by n_head=5: choose n_head among",
    ),
    (
        "zero layers",
        lambda t: BackpackConfig(n_layer=0),
        ConfigError,
        r"BackpackConfig.n_layer=0 is out of range: set it to an integer >= 1",
    ),
    (
        "negative vocabulary",
        lambda t: BackpackConfig(vocab_size=-5),
        ConfigError,
        r"vocab_size=-5 is out of range",
    ),
    (
        "float size",
        lambda t: BackpackConfig(n_embd=256.0),
        ConfigError,
        r"n_embd must be an integer >= 1; got 256.0 of type float",
    ),
    (
        "string size",
        lambda t: BackpackConfig(n_positions="512"),
        ConfigError,
        r"n_positions must be an integer >= 1; got '512'",
    ),
    (
        "bool size",
        lambda t: BackpackConfig(n_head=True),
        ConfigError,
        r"n_head must be an integer",
    ),
    (
        "zero senses",
        lambda t: BackpackConfig(num_senses=0),
        ConfigError,
        r"num_senses=0 is out of range",
    ),
    (
        "senses do not divide n_embd",
        lambda t: BackpackConfig(n_embd=256, num_senses=3),
        ConfigError,
        r"n_embd=256 is not divisible by num_senses=3",
    ),
    (
        "dropout 1",
        lambda t: BackpackConfig(dropout=1.0),
        ConfigError,
        r"dropout=1.0 is out of range: set it to a number in \[0.0, 1.0\)",
    ),
    (
        "negative dropout",
        lambda t: BackpackConfig(dropout=-0.1),
        ConfigError,
        r"dropout=-0.1",
    ),
    (
        "NaN dropout",
        lambda t: BackpackConfig(dropout=float("nan")),
        ConfigError,
        r"dropout must be a finite number",
    ),
    (
        "zero epsilon",
        lambda t: BackpackConfig(layer_norm_epsilon=0.0),
        ConfigError,
        r"layer_norm_epsilon=0.0 is out of range: .*\(0.0, inf\]",
    ),
    (
        "unknown attention backend",
        lambda t: BackpackConfig(attention_backend="fast"),
        ConfigError,
        r"attention_backend='fast' is not allowed: choose one of 'auto', 'flash'",
    ),
    (
        "switch that is not a bool",
        lambda t: BackpackConfig(divide_by_senses=1),
        ConfigError,
        r"divide_by_senses=1 is not allowed: choose one of True, False",
    ),
    (
        "unknown preset",
        lambda t: BackpackConfig.preset("huge"),
        ValueError,
        r"unknown preset 'huge'; choose one of \['micro', 'mini', 'small', 'tiny'\]",
    ),
    (
        "unknown config key",
        lambda t: BackpackConfig.from_dict({"n_embed": 8}),
        ValueError,
        r"unknown config keys \['n_embed'\]",
    ),
    # --- training config (chapter 7) ---
    (
        "zero batch",
        lambda t: TrainConfig(batch_size=0),
        ConfigError,
        r"TrainConfig.batch_size=0 is out of range: set it to an integer >= 1",
    ),
    (
        "zero block",
        lambda t: TrainConfig(block_size=0),
        ConfigError,
        r"block_size=0 is out of range",
    ),
    (
        "zero eval interval",
        lambda t: TrainConfig(eval_interval=0),
        ConfigError,
        r"eval_interval=0 is out of range",
    ),
    (
        "zero log interval",
        lambda t: TrainConfig(log_interval=0),
        ConfigError,
        r"log_interval=0 is out of range",
    ),
    (
        "negative checkpoint interval",
        lambda t: TrainConfig(checkpoint_interval=-1),
        ConfigError,
        r"checkpoint_interval=-1 is out of range: set it to an integer >= 0",
    ),
    (
        "keep no checkpoints",
        lambda t: TrainConfig(keep_checkpoints=0),
        ConfigError,
        r"keep_checkpoints=0 is out of range",
    ),
    (
        "min_lr_ratio above 1",
        lambda t: TrainConfig(min_lr_ratio=1.5),
        ConfigError,
        r"min_lr_ratio=1.5 is out of range: set it to a number in \[0.0, 1.0\]",
    ),
    (
        "zero learning rate",
        lambda t: TrainConfig(learning_rate=0.0),
        ConfigError,
        r"learning_rate=0.0 is out of range",
    ),
    (
        "infinite learning rate",
        lambda t: TrainConfig(learning_rate=float("inf")),
        ConfigError,
        r"learning_rate must be a finite number",
    ),
    (
        "beta2 of 1",
        lambda t: TrainConfig(beta2=1.0),
        ConfigError,
        r"beta2=1.0 is out of range",
    ),
    (
        "unknown decay",
        lambda t: TrainConfig(decay="step"),
        ConfigError,
        r"decay='step' is not allowed: choose one of 'cosine', 'linear'",
    ),
    (
        "unknown dtype",
        lambda t: TrainConfig(dtype="fp8"),
        ConfigError,
        r"dtype='fp8' is not allowed",
    ),
    (
        "unknown device",
        lambda t: TrainConfig(device="gpu"),
        ConfigError,
        r"device='gpu' is not a device: use 'auto', 'cpu', 'cuda'",
    ),
    (
        "resume and overwrite",
        lambda t: TrainConfig(resume=True, overwrite=True),
        ConfigError,
        r"resume=True and overwrite=True exclude each other",
    ),
    (
        "tokens_per_step not a multiple",
        lambda t: TrainConfig(
            tokens_per_step=100, batch_size=4, block_size=16
        ).grad_accum_steps(1),
        ValueError,
        r"not a multiple of batch_size",
    ),
    (
        "block longer than the context",
        train_with(block_size=32),
        ValueError,
        r"block_size 32 exceeds the model's context 16: pass --block-size 16",
    ),
    (
        "resume without checkpoint",
        run_with(resume=True, out_dir="/nonexistent/x"),
        FileNotFoundError,
        r"resume=True but /nonexistent/x/checkpoints holds no complete checkpoint",
    ),
    # --- generate (chapter 5) ---
    (
        "1-D prompt",
        lambda t: small_model().generate(PROMPT[0], 2),
        ValueError,
        r"prompt must be a \(batch, seq\) tensor of token ids; got \(3,\): "
        r".*idx\[None\]",
    ),
    (
        "negative max_new_tokens",
        lambda t: small_model().generate(PROMPT, -1),
        ValueError,
        r"max_new_tokens must be an integer >= 0; got -1",
    ),
    (
        "NaN temperature",
        lambda t: small_model().generate(PROMPT, 2, temperature=float("nan")),
        ValueError,
        r"temperature must be a finite number >= 0 \(0 = greedy\); got nan",
    ),
    (
        "negative temperature",
        lambda t: small_model().generate(PROMPT, 2, temperature=-1.0),
        ValueError,
        r"temperature must be a finite number >= 0",
    ),
    (
        "top_k zero",
        lambda t: small_model().generate(PROMPT, 2, top_k=0),
        ValueError,
        r"top_k must be None \(no cut\) or an integer >= 1; got 0",
    ),
    (
        "generating past the context",
        lambda t: small_model().generate(PROMPT, 20),
        ValueError,
        r"prompt \(3\) \+ max_new_tokens \(20\) exceeds the context of 16: "
        r".*sliding_window=True",
    ),
    (
        "token id outside the vocabulary",
        lambda t: small_model()(torch.tensor([[1, 50]])),
        ValueError,
        r"token id 50 is outside the vocabulary \[0, 50\)",
    ),
    # --- the loss (chapter 5) ---
    (
        "target outside the vocabulary",
        lambda t: small_model()(X, torch.tensor([[1, 2, 3, 50]])),
        ValueError,
        r"target id 50 is outside the vocabulary \[0, 50\); use -100",
    ),
    (
        "negative target",
        lambda t: small_model()(X, torch.tensor([[1, -3, 3, 4]])),
        ValueError,
        r"target id -3 is outside the vocabulary",
    ),
    (
        "all targets ignored",
        lambda t: small_model()(X, torch.full_like(X, -100)),
        ValueError,
        r"every target is -100 \(ignored\), so the loss is undefined",
    ),
    (
        "float targets",
        lambda t: small_model()(X, X.float()),
        ValueError,
        r"targets must be integer token ids; got dtype torch.float32: "
        r".*targets.long\(\)",
    ),
    (
        "targets of another shape",
        lambda t: small_model()(X, X[:, :2]),
        ValueError,
        r"targets of shape \(1, 2\) do not match the logits' \(batch, seq\) = \(1, 4\)",
    ),
    # --- loading checkpoints (chapter 6) ---
    (
        "no config.json",
        lambda t: load_pretrained(t),
        FileNotFoundError,
        r"config.json not found",
    ),
    (
        "config.json not JSON",
        lambda t: load_pretrained(saved(t, lambda f: write_config(f, "{oops"))),
        CheckpointError,
        r"m/config.json is not valid JSON \(Expecting property name",
    ),
    (
        "config.json not an object",
        lambda t: load_pretrained(saved(t, lambda f: write_config(f, "[1]"))),
        CheckpointError,
        r"m/config.json holds a JSON list, not an object",
    ),
    (
        "config.json lacks a field",
        lambda t: load_pretrained(saved(t, edit_config(n_embd=None))),
        CheckpointError,
        r"m/config.json lacks the field\(s\) \['n_embd'\]",
    ),
    (
        "config.json with a bad value",
        lambda t: load_pretrained(saved(t, edit_config(n_head=3))),
        CheckpointError,
        r"m/config.json: BackpackConfig.n_embd=16 is not divisible by n_head=3",
    ),
    (
        "unsupported activation",
        lambda t: load_pretrained(saved(t, edit_config(activation_function="relu"))),
        CheckpointError,
        r"sets activation_function='relu'",
    ),
    (
        "three dropout rates",
        lambda t: load_pretrained(saved(t, edit_config(attn_pdrop=0.2))),
        CheckpointError,
        r"different dropout rates .*set all three to the same value",
    ),
    (
        "truncated safetensors",
        lambda t: load_pretrained(saved(t, truncate("model.safetensors", 300))),
        CheckpointError,
        r"cannot read .*m/model.safetensors: SafetensorError: .* truncated, corrupt",
    ),
    (
        "truncated pytorch_model.bin",
        lambda t: load_pretrained(
            saved(t, lambda f: (to_bin(f), truncate("pytorch_model.bin", 500)(f)))
        ),
        CheckpointError,
        r"cannot read .*m/pytorch_model.bin: .*truncated, corrupt",
    ),
    (
        "a pickle that runs code (PyTorch's own message, kept)",
        lambda t: load_pretrained(saved(t, malicious_bin)),
        CheckpointError,
        r"pytorch_model.bin: UnpicklingError: Weights only load failed",
    ),
    (
        "no weights file",
        lambda t: load_pretrained(
            saved(t, lambda f: (f / "model.safetensors").unlink())
        ),
        FileNotFoundError,
        r"no model.safetensors or pytorch_model.bin in",
    ),
    (
        "weights of another size",
        lambda t: load_pretrained(saved(t, edit_config(n_positions=32))),
        ValueError,
        r"wpe.weight has shape \(16, 16\) in the checkpoint but \(32, 16\)",
    ),
    # --- data files and batches (chapter 1) ---
    (
        "corrupt tokenizer",
        lambda t: load_tokenizer(tokens_file(t, b'{"version": "1.0", "trun')),
        DataError,
        r"tokenizer file .*tokens.bin cannot be read .*truncated or not a tokenizer",
    ),
    (
        "missing tokenizer",
        lambda t: load_tokenizer(t / "none.json"),
        DataError,
        r"tokenizer file .*none.json not found",
    ),
    (
        "empty token file",
        lambda t: read_token_file(tokens_file(t, b"")),
        DataError,
        r"token file .*tokens.bin is empty",
    ),
    (
        "odd-length token file",
        lambda t: read_token_file(tokens_file(t, b"\x01\x00\x02")),
        DataError,
        r"tokens.bin has 3 bytes, an odd number, .* truncated",
    ),
    (
        "missing token file",
        lambda t: read_token_file(t / "none.bin"),
        DataError,
        r"token file .*none.bin not found",
    ),
    (
        "zero batch_size",
        lambda t: get_batch("x", 0, 8, tokens=np.zeros(100, np.uint16)),
        ValueError,
        r"batch_size must be an integer >= 1; got 0",
    ),
    (
        "zero block_size",
        lambda t: get_batch("x", 2, 0, tokens=np.zeros(100, np.uint16)),
        ValueError,
        r"block_size must be an integer >= 1; got 0",
    ),
    (
        "too few tokens",
        lambda t: get_batch("x", 2, 8, tokens=np.zeros(9, np.uint16)),
        DataError,
        r"the token array has 9 tokens, too few for a block of 8",
    ),
]


@pytest.mark.parametrize(
    "make, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_clearly(make, error, message, tmp_path):
    with pytest.raises(error, match=message):
        make(tmp_path)


def test_a_huge_but_finite_validation_loss_is_logged():
    line = format_metrics(
        {"step": 3, "loss": 900.0, "val_loss": 1000.0, "lr": 1e-3, "tokens_per_s": 10.0}
    )
    assert "val 1000.0000 (ppl inf)" in line


def test_the_malicious_pickle_did_not_run(tmp_path, capfd):
    with pytest.raises(CheckpointError):
        load_pretrained(saved(tmp_path, malicious_bin))
    assert "pwned" not in capfd.readouterr().out


@pytest.mark.slow
def test_the_command_line_reports_a_bad_value_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "backpack.train", "--batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2  # a bad command line, as argparse's own errors
    assert done.stderr.strip().splitlines() == [
        "python -m backpack.train: error: TrainConfig.batch_size=0 is out of range: "
        "set it to an "
        "integer >= 1"
    ]
