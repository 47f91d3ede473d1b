"""Tests of the public checkpoint format (chapter 6)."""
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import backpack.checkpoint
from backpack.checkpoint import (
    CheckpointError,
    load_pretrained,
    load_state,
    from_public_state_dict,
    read_weights,
    recover_folders,
    replaced_folder,
    save_pretrained,
)
from backpack.model import BackpackConfig, BackpackLM, TransformerLM

CFG = dict(vocab_size=101, n_positions=24, n_embd=32, n_layer=2, n_head=2, num_senses=4)


def public_backpack_keys(n_layer: int) -> set[str]:
    """The key set of stanfordnlp/backpack-gpt2, written from its published list (not
    our code)."""
    keys = {
        "backpack.gpt2_model.wte.weight",
        "backpack.gpt2_model.wpe.weight",
        "backpack.gpt2_model.ln_f.weight",
        "backpack.gpt2_model.ln_f.bias",
        "backpack.sense_weight_net.c_attn.weight",
        "backpack.sense_weight_net.c_attn.bias",
    }
    for i in range(n_layer):
        for part in (
            "ln_1",
            "attn.c_attn",
            "attn.c_proj",
            "ln_2",
            "mlp.c_fc",
            "mlp.c_proj",
        ):
            keys |= {
                f"backpack.gpt2_model.h.{i}.{part}.weight",
                f"backpack.gpt2_model.h.{i}.{part}.bias",
            }
    for part in ("ln", "block.ln_1", "block.mlp.c_fc", "block.mlp.c_proj", "block.ln_2",
                 "final_mlp.c_fc", "final_mlp.c_proj"):
        keys |= {
            f"backpack.sense_network.{part}.weight",
            f"backpack.sense_network.{part}.bias",
        }
    return keys


@pytest.fixture
def model():
    torch.manual_seed(0)
    return BackpackLM(BackpackConfig(**CFG)).eval()


def test_saved_keys_and_conv1d_shapes_follow_the_public_layout(model, tmp_path):
    model.save_pretrained(tmp_path)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert set(stored) == public_backpack_keys(2)
    d = CFG["n_embd"]
    # Conv1D [in, out]
    assert stored["backpack.gpt2_model.h.0.attn.c_attn.weight"].shape == (d, 3 * d)
    assert stored["backpack.sense_network.final_mlp.c_proj.weight"].shape == (
        4 * d,
        4 * d,
    )
    assert stored["backpack.sense_network.block.mlp.c_fc.weight"].shape == (d, 4 * d)
    # nn.Linear
    assert stored["backpack.sense_weight_net.c_attn.weight"].shape == (2 * d, d)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (
        config["num_senses"] == 4
        and config["n_embd"] == d
        and config["vocab_size"] == 101
    )


def test_round_trip_gives_identical_logits(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = BackpackLM.from_pretrained(tmp_path)
    x = torch.randint(CFG["vocab_size"], (2, 10))
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_round_trip_keeps_the_sense_sum_switch(tmp_path):
    torch.manual_seed(0)
    model = BackpackLM(BackpackConfig(**CFG, sense_sum="fused"))
    model.save_pretrained(tmp_path)
    assert (
        json.loads((tmp_path / "config.json").read_text())["backpack_book"]["sense_sum"]
        == "fused"
    )
    loaded = BackpackLM.from_pretrained(tmp_path)
    assert loaded.config.sense_sum == "fused"
    x = torch.randint(CFG["vocab_size"], (2, 10))
    torch.testing.assert_close(model(x).logits, loaded(x).logits)


def test_transformer_round_trip_as_gpt2(tmp_path):
    torch.manual_seed(0)
    lm = TransformerLM(BackpackConfig(**CFG)).eval()
    lm.save_pretrained(tmp_path)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert (
        "transformer.h.1.mlp.c_fc.weight" in stored and "lm_head.weight" not in stored
    )
    loaded = load_pretrained(tmp_path)
    assert isinstance(loaded, TransformerLM)
    x = torch.randint(CFG["vocab_size"], (1, 7))
    assert torch.equal(lm(x).logits, loaded(x).logits)
    with pytest.raises(TypeError, match="not a BackpackLM"):
        BackpackLM.from_pretrained(tmp_path)


def test_loads_a_checkpoint_written_like_the_hub_one(model, tmp_path):
    """A .bin state dict with the aliases, lm_head and GPT-2's mask buffers, as Hugging
    Face writes it."""
    model.save_pretrained(tmp_path)
    public = load_file(str(tmp_path / "model.safetensors"))
    public["lm_head.weight"] = public["backpack.gpt2_model.wte.weight"]
    public["backpack.word_embeddings.weight"] = public["backpack.gpt2_model.wte.weight"]
    public["backpack.position_embeddings.weight"] = public[
        "backpack.gpt2_model.wpe.weight"
    ]
    public["backpack.gpt2_model.h.0.attn.bias"] = torch.ones(1, 1, 24, 24)
    (tmp_path / "model.safetensors").unlink()
    torch.save(public, tmp_path / "pytorch_model.bin")
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("backpack_book")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = BackpackLM.from_pretrained(tmp_path)
    x = torch.randint(CFG["vocab_size"], (2, 9))
    torch.testing.assert_close(model(x).logits, loaded(x).logits)


def test_half_precision_save(model, tmp_path):
    model.save_pretrained(tmp_path, dtype=torch.float16)
    assert all(
        t.dtype == torch.float16
        for t in load_file(str(tmp_path / "model.safetensors")).values()
    )
    loaded = BackpackLM.from_pretrained(tmp_path)
    assert loaded.word_embeddings.dtype == torch.float32


def test_mismatch_names_key_and_both_shapes(model, tmp_path):
    model.save_pretrained(tmp_path)
    other = BackpackLM(BackpackConfig(**{**CFG, "n_embd": 48}))
    state = from_public_state_dict(read_weights(tmp_path), "backpack")
    with pytest.raises(
        ValueError,
        match=r"ckpt: transformer\.h\.0\.attn\.c_attn\.bias has shape \(96,\) in the "
        r"checkpoint but \(144,\)",
    ):
        load_state(other, state, "ckpt")
    # a config.json that disagrees with the weights fails the same way
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_positions"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"wpe\.weight has shape \(24, 32\) in the checkpoint but \(48, 32\)",
    ):
        load_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    public = load_file(str(tmp_path / "model.safetensors"))
    public.pop("backpack.sense_network.ln.bias")
    save_file(public, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['sense_network.ln.bias'\]"):
        load_pretrained(tmp_path)
    public["backpack.sense_network.ln.bias"] = torch.zeros(32)
    public["backpack.something_else.weight"] = torch.zeros(3)
    save_file(public, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"two different models.*'backpack\.something_else"
    ):
        load_pretrained(tmp_path)


def test_unsupported_config_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "backpack-gpt2",
                "vocab_size": 10,
                "n_positions": 8,
                "n_embd": 8,
                "n_layer": 1,
                "n_head": 1,
                "activation_function": "relu",
            }
        )
    )
    with pytest.raises(ValueError, match="activation_function='relu'"):
        load_pretrained(tmp_path)


FIXTURE = Path(__file__).parent / "fixtures" / "backpack-gpt2-tiny" / "config.json"


def model_for_fixture() -> BackpackLM:
    """A seeded Backpack with the sizes of the hand-written public config."""
    torch.manual_seed(0)
    return BackpackLM(BackpackConfig(**CFG)).eval()


def write_public_layout(model: BackpackLM, folder, layout: str) -> None:
    """The fixture config.json plus weights as Hugging Face writes them."""
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "config.json")
    model.save_pretrained(folder / "ours")
    public = load_file(str(folder / "ours" / "model.safetensors"))
    shutil.rmtree(folder / "ours")
    # tied tensors stored once, the embedding under lm_head's name
    if layout == "safetensors":
        public["lm_head.weight"] = public.pop("backpack.gpt2_model.wte.weight")
        save_file(public, str(folder / "model.safetensors"))
    else:  # every key, aliases and mask buffers included
        wte, wpe = (
            public["backpack.gpt2_model.wte.weight"],
            public["backpack.gpt2_model.wpe.weight"],
        )
        public.update({"lm_head.weight": wte, "backpack.word_embeddings.weight": wte,
                       "backpack.position_embeddings.weight": wpe,
                       "backpack.gpt2_model.h.1.attn.masked_bias": torch.tensor(-1e4)})
        torch.save(public, folder / "pytorch_model.bin")


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_the_public_config_loads_as_a_backpack_with_identical_logits(layout, tmp_path):
    values = json.loads(FIXTURE.read_text())
    assert values["model_type"] == "gpt2" and values["resid_pdrop"] == 0.1
    model = model_for_fixture()
    write_public_layout(model, tmp_path / "public", layout)
    loaded = load_pretrained(tmp_path / "public")
    assert isinstance(loaded, BackpackLM) and not loaded.training
    assert loaded.config.dropout == 0.1 and loaded.config.num_senses == 4
    x = torch.randint(
        CFG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
        # eval mode: dropout is off
        assert torch.equal(loaded(x).logits, loaded(x).logits)
        loaded.train()
        # fine-tuning: dropout acts
        assert not torch.equal(loaded(x).logits, model(x).logits)
    tuned = load_pretrained(tmp_path / "public", dropout=0.0).train()
    with torch.no_grad():
        assert torch.equal(tuned(x).logits, model(x).logits)


def test_our_saved_config_has_the_public_shape(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    ours = json.loads((tmp_path / "m" / "config.json").read_text())
    public = json.loads(FIXTURE.read_text())
    assert ours["model_type"] == "gpt2"
    assert ours["architectures"] == ["BackpackGPT2LMHeadModel"]
    assert ours["auto_map"] == public["auto_map"]
    hf_bookkeeping = {"torch_dtype", "transformers_version"}
    assert set(public) - hf_bookkeeping <= set(ours)
    assert set(ours) - set(public) == {"backpack_book", "tie_word_embeddings"}
    TransformerLM(BackpackConfig(**CFG)).save_pretrained(tmp_path / "t")
    gpt2 = json.loads((tmp_path / "t" / "config.json").read_text())
    assert gpt2["model_type"] == "gpt2" and gpt2["architectures"] == ["GPT2LMHeadModel"]
    assert "num_senses" not in gpt2 and "auto_map" not in gpt2


def test_old_format_configs_are_still_read(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="backpack-gpt2")
    for key in ("auto_map", "num_senses", "sense_intermediate_scale"):
        config.pop(key)
    config["num_senses"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert isinstance(load_pretrained(tmp_path), BackpackLM)


def test_save_keeps_the_folders_other_files_with_umask_permissions(model, tmp_path):
    target = tmp_path / "m"
    save_pretrained(model, target)
    (target / "tokenizer.json").write_text('{"mine": 1}')
    (target / "notes").mkdir()
    (target / "notes" / "run.txt").write_text("lr 1e-3")
    old_mask = os.umask(0o022)
    try:
        save_pretrained(model, target)
        save_pretrained(model, tmp_path / "new")
    finally:
        os.umask(old_mask)
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "model.safetensors",
        "notes",
        "tokenizer.json",
    ]
    assert (target / "tokenizer.json").read_text() == '{"mine": 1}'
    assert (target / "notes" / "run.txt").read_text() == "lr 1e-3"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644
    # no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "new"]
    assert not [p for p in target.iterdir() if p.name.startswith(".")]


def test_save_replaces_a_stale_pytorch_model_bin(model, tmp_path):
    """Hugging Face's layout: the new model.safetensors is the weights; an old .bin
    would be a second, older copy that other tools could read instead."""
    model.save_pretrained(tmp_path)
    torch.save({"old": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_save_onto_a_file_is_refused_and_the_file_untouched(model, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    with pytest.raises(NotADirectoryError, match="notes.txt is a file, not a folder"):
        save_pretrained(model, target)
    assert target.read_text() == "my notes"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_failure_while_writing_the_weights_leaves_the_old_files(
    model, tmp_path, monkeypatch
):
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(backpack.checkpoint, "save_file", half_then_fail)
    torch.manual_seed(1)
    other = BackpackLM(BackpackConfig(**CFG)).eval()
    with pytest.raises(OSError, match="No space left"):
        other.save_pretrained(tmp_path)
    # no temporary either
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    x = torch.randint(CFG["vocab_size"], (2, 9))
    assert torch.equal(load_pretrained(tmp_path)(x).logits, model(x).logits)


def test_new_weights_beside_an_old_config_are_refused(model, tmp_path, monkeypatch):
    """A crash between the two renames: the weights digest in config.json tells them
    apart."""
    model.save_pretrained(tmp_path)

    def crash(path, value, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(backpack.checkpoint, "write_json", crash)
    torch.manual_seed(1)
    retrained = BackpackLM(BackpackConfig(**CFG)).eval()
    with pytest.raises(KeyboardInterrupt):
        retrained.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="two different saves"):
        load_pretrained(tmp_path)
    monkeypatch.undo()
    retrained.save_pretrained(tmp_path)   # saving again repairs it
    x = torch.randint(CFG["vocab_size"], (2, 9))
    assert torch.equal(load_pretrained(tmp_path)(x).logits, retrained(x).logits)


def test_the_same_model_saves_the_same_config(model, tmp_path):
    """The weights digest depends on the weights only: saving again changes no byte of
    config.json."""
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "config.json").read_bytes() == (
        tmp_path / "b" / "config.json"
    ).read_bytes()


def test_replaced_folder_still_swaps_a_folder_whole(tmp_path):
    """Chapter 7's training checkpoints use it: a folder that the code owns entirely."""
    (tmp_path / "step").mkdir()
    (tmp_path / "step" / "old.txt").write_text("old")
    with replaced_folder(tmp_path / "step") as folder:
        (folder / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "step").iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["step"]


@pytest.mark.parametrize(
    "dtype, expected",
    [
        ("float16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("float32", torch.float32),
        (torch.float16, torch.float16),
    ],
)
def test_dtype_by_name_or_torch_dtype(model, tmp_path, dtype, expected):
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path, dtype=dtype)
    assert loaded.word_embeddings.dtype == expected
    assert isinstance(BackpackLM.from_pretrained(tmp_path, dtype=dtype), BackpackLM)
    save_pretrained(model, tmp_path / "s", dtype=dtype)
    assert {
        t.dtype for t in load_file(str(tmp_path / "s" / "model.safetensors")).values()
    } == {expected}


@pytest.mark.parametrize(
    "vocab_size, end_of_text", [(101, 0), (16384, 0), (50257, 50256), (50264, 50256)]
)
def test_saved_token_ids_are_the_tokenizers_end_of_text(
    vocab_size, end_of_text, tmp_path
):
    from backpack.checkpoint import config_to_json, end_of_text_id
    config = BackpackConfig(**{**CFG, "vocab_size": vocab_size})
    assert end_of_text_id(vocab_size) == end_of_text
    values = config_to_json(config, "backpack")
    assert values["bos_token_id"] == values["eos_token_id"] == end_of_text
    assert config_to_json(config, "gpt2", eot_token_id=7)["eos_token_id"] == 7


def test_saved_token_ids_come_from_the_model(model, tmp_path):
    model.save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["bos_token_id"] == saved["eos_token_id"] == 0 < CFG["vocab_size"]
    save_pretrained(model, tmp_path / "b", eot_token_id=100)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["bos_token_id"] == saved["eos_token_id"] == 100


def test_loading_keeps_what_an_old_config_says(model, tmp_path):
    """An old config with out-of-range ids still loads; the file is not rewritten."""
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(bos_token_id=50256, eos_token_id=50256)
    text = json.dumps(config)
    (tmp_path / "config.json").write_text(text)
    assert isinstance(load_pretrained(tmp_path), BackpackLM)
    assert (tmp_path / "config.json").read_text() == text


MODELS = Path(__file__).parent.parent / "data" / "models"


@pytest.mark.parametrize(
    "config_file", sorted(MODELS.rglob("config.json")), ids=lambda p: p.parent.name
)
def test_committed_configs_name_their_tokenizers_end_of_text(config_file):
    from backpack.data import EOT, load_tokenizer
    values = json.loads(config_file.read_text())
    tokenizer = load_tokenizer()  # the book's tokenizer trained every committed model
    assert values["vocab_size"] == tokenizer.get_vocab_size()
    for key in ("bos_token_id", "eos_token_id"):
        assert 0 <= values[key] < values["vocab_size"]
        assert values[key] == tokenizer.token_to_id(EOT) == 0


def test_committed_configs_exist():
    assert len(list(MODELS.rglob("config.json"))) >= 2


def test_recover_folders_restores_an_interrupted_swap_and_removes_temporaries(
    model, tmp_path
):
    save_pretrained(model, tmp_path / "m")
    # killed between the two renames
    os.rename(tmp_path / "m", tmp_path / ".m.old-1234abcd")
    (tmp_path / ".n.tmp-xyz").mkdir()
    (tmp_path / ".results.json.abc.tmp").write_text("{")
    done = recover_folders(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert any("restored m" in line for line in done)
    assert isinstance(load_pretrained(tmp_path / "m"), BackpackLM)


def test_write_json_is_whole_or_nothing(tmp_path):
    from backpack.checkpoint import write_json
    path = tmp_path / "out" / "values.json"
    write_json(path, {"b": 1, "a": [1.5, "x"]}, indent=1, sort_keys=True)
    assert path.read_text().endswith('"b": 1\n}\n') and json.loads(
        path.read_text()
    ) == {"a": [1.5, "x"], "b": 1}
    # NaN refused: the old file stays, no temporary file is left
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text()) == {"a": [1.5, "x"], "b": 1}
    assert [p.name for p in path.parent.iterdir()] == ["values.json"]
