"""Every bad input to saving and loading checkpoints gets a clear error (chapter 6).

As in tests/test_errors.py, each case is (what is wrong, a function of a temporary
folder that does it, the error expected, a pattern the message must match).
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from backpack.checkpoint import CheckpointError, load_pretrained, save_pretrained
from backpack.model import BackpackConfig, BackpackLM, TransformerLM

SMALL = dict(
    vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_senses=2
)


def small_model(kind=BackpackLM, seed: int = 0):
    torch.manual_seed(seed)
    return kind(BackpackConfig(**SMALL)).eval()


def saved(tmp_path, edit=None, kind=BackpackLM):
    """A saved small model folder; edit(folder) damages it."""
    small_model(kind).save_pretrained(tmp_path / "m")
    if edit is not None:
        edit(tmp_path / "m")
    return tmp_path / "m"


def edit_book(**changes):
    def edit(folder):
        values = json.loads((folder / "config.json").read_text())
        values["backpack_book"].update(changes)
        (folder / "config.json").write_text(json.dumps(values))

    return edit


def set_book(value):
    def edit(folder):
        values = json.loads((folder / "config.json").read_text())
        values["backpack_book"] = value
        (folder / "config.json").write_text(json.dumps(values))

    return edit


def bin_holding(content):
    def edit(folder):
        (folder / "model.safetensors").unlink()
        torch.save(content, folder / "pytorch_model.bin")

    return edit


def weights_of(kind):
    """Replace the folder's weights by those of another model of the same sizes."""

    def edit(folder):
        other = folder.parent / "other"
        small_model(kind).save_pretrained(other)
        (other / "model.safetensors").replace(folder / "model.safetensors")

    return edit


def weights_of_another_save(folder):
    """Same model, other weights: a save interrupted between its two renames."""
    other = folder.parent / "other"
    small_model(seed=1).save_pretrained(other)
    (other / "model.safetensors").replace(folder / "model.safetensors")


def save_onto_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    save_pretrained(small_model(), tmp_path / "notes.txt")


def save_beside_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    save_pretrained(small_model(), tmp_path / "notes.txt" / "model")


STATE = {"w": torch.zeros(2)}

CASES = [
    # --- saving ---
    (
        "save onto a file",
        save_onto_a_file,
        NotADirectoryError,
        r"notes.txt is a file, not a folder: save_pretrained writes the folder "
        r".*notes.txt \(config.json, model.safetensors\); choose another path or move",
    ),
    (
        "save under a file",
        save_beside_a_file,
        NotADirectoryError,
        r"notes.txt is a file, not a folder: save_pretrained writes the folder "
        r".*notes.txt/model ",
    ),
    (
        "end-of-text id outside the vocabulary",
        lambda t: save_pretrained(small_model(), t / "m", eot_token_id=50256),
        ValueError,
        r"eot_token_id=50256 is outside the vocabulary \[0, 50\): pass the id of "
        r"<\|endoftext\|>",
    ),
    (
        "negative end-of-text id",
        lambda t: save_pretrained(small_model(), t / "m", eot_token_id=-1),
        ValueError,
        r"eot_token_id=-1 is outside the vocabulary",
    ),
    (
        "save dtype by an unknown name",
        lambda t: save_pretrained(small_model(), t / "m", dtype="fp16"),
        ValueError,
        r"dtype='fp16' is not allowed: choose one of \['float32', 'float16', "
        r"'bfloat16'\]",
    ),
    # --- the backpack_book entry of config.json ---
    (
        "misspelt backpack_book field",
        lambda t: load_pretrained(saved(t, edit_book(sense_dedupe=True))),
        CheckpointError,
        r"m/config.json: backpack_book has an unknown field 'sense_dedupe' \(did you "
        r"mean 'sense_dedup'\?\); the known fields are \['sense_dedup', "
        r"'divide_by_senses', 'attention_backend', 'sense_sum', 'weights_digest'\]",
    ),
    (
        "unknown backpack_book field, nothing close",
        lambda t: load_pretrained(saved(t, edit_book(colour="red"))),
        CheckpointError,
        r"unknown field 'colour'; the known fields are",
    ),
    (
        "backpack_book not an object",
        lambda t: load_pretrained(saved(t, set_book(["fused"]))),
        CheckpointError,
        r"m/config.json: backpack_book holds a JSON list; it must be an object",
    ),
    # --- pytorch_model.bin that is not a state dict ---
    (
        "pytorch_model.bin holding a list",
        lambda t: load_pretrained(saved(t, bin_holding([torch.zeros(2)]))),
        CheckpointError,
        r"m/pytorch_model.bin holds a list, not a state dict \(a dict of parameter "
        r"name -> tensor\)",
    ),
    (
        "pytorch_model.bin holding a tensor",
        lambda t: load_pretrained(saved(t, bin_holding(torch.zeros(2)))),
        CheckpointError,
        r"m/pytorch_model.bin holds a Tensor, not a state dict",
    ),
    (
        "pytorch_model.bin holding a training checkpoint",
        lambda t: load_pretrained(saved(t, bin_holding({"model": STATE, "step": 3}))),
        CheckpointError,
        r"m/pytorch_model.bin is not a state dict: its entry 'model' holds a dict, "
        r"not a tensor; .*torch.save\(checkpoint\['model'\]",
    ),
    # --- config.json and weights of two different models ---
    (
        "Backpack config beside a Transformer's weights",
        lambda t: load_pretrained(saved(t, weights_of(TransformerLM))),
        CheckpointError,
        r"m/config.json and .*m/model.safetensors: these files come from two "
        r"different models. The config describes a Backpack but the weights are "
        r"those of a Transformer \(GPT-2 layout\); unexpected keys: \d+ such as "
        r"\['transformer\..*missing keys: \d+ such as \['backpack\.",
    ),
    (
        "Transformer config beside a Backpack's weights",
        lambda t: load_pretrained(saved(t, weights_of(BackpackLM), kind=TransformerLM)),
        CheckpointError,
        r"these files come from two different models. The config describes a "
        r"Transformer \(GPT-2 layout\) but the weights are those of a Backpack; "
        r"unexpected keys: \d+ such as \['backpack\.",
    ),
    (
        "config.json of another save of the same model",
        lambda t: load_pretrained(saved(t, weights_of_another_save)),
        CheckpointError,
        r"m/config.json was saved with other weights than .*m/model.safetensors "
        r"\(weights_digest [0-9a-f]{16} vs [0-9a-f]{16}\): these files come from two "
        r"different saves",
    ),
    # --- the dtype to load in ---
    (
        "load dtype by an unknown name",
        lambda t: load_pretrained(saved(t), dtype="half"),
        ValueError,
        r"dtype='half' is not allowed: choose one of \['float32', 'float16', "
        r"'bfloat16'\] \(or a floating-point torch.dtype",
    ),
    (
        "load dtype that is not floating point",
        lambda t: BackpackLM.from_pretrained(saved(t), dtype=torch.int8),
        ValueError,
        r"dtype=torch.int8 is not allowed",
    ),
    (
        "load dtype of another type",
        lambda t: load_pretrained(saved(t), dtype=16),
        ValueError,
        r"dtype=16 is not allowed",
    ),
]


@pytest.mark.parametrize(
    "make, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_clearly(make, error, message, tmp_path):
    with pytest.raises(error, match=message):
        make(tmp_path)


def test_a_refused_save_writes_nothing(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        save_pretrained(small_model(), tmp_path / "m", eot_token_id=50)
    assert list((tmp_path / "m").iterdir()) == []


def test_a_digest_mismatch_is_not_raised_for_a_bin_or_an_old_file(tmp_path):
    """Files without a digest (a .bin, an older save, another tool's) load as before."""
    folder = saved(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")
    assert isinstance(load_pretrained(folder), BackpackLM)
