"""Tests of the sense network, the weight network and the Backpack LM (chapters 2, 4,
5)."""
import math

import pytest
import torch
import torch.nn.functional as F

from backpack.model import BackpackConfig, BackpackLM, TransformerLM
from backpack.senses import SenseNetwork
from backpack.weights import SenseWeightNetwork, TransformerConfig

SMALL = dict(
    vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=3, num_senses=4
)


def backpack(**overrides) -> BackpackLM:
    torch.manual_seed(0)
    return BackpackLM(BackpackConfig(**{**SMALL, **overrides})).double().eval()


def test_senses_do_not_depend_on_context():
    torch.manual_seed(1)
    net = SenseNetwork(n_embd=16, num_senses=3).eval()
    emb = torch.nn.Embedding(50, 16)
    a = torch.tensor([[5, 9, 17, 3]])
    b = torch.tensor([[17, 40, 41, 42, 43, 44]])
    assert torch.equal(net(emb(a))[0, :, 2], net(emb(b))[0, :, 0])


def senses_by_the_equations(model: BackpackLM, ids: torch.Tensor) -> torch.Tensor:
    """Chapter 2's C(x) = FF(LN_c(r2)), r2 = r1 + MLP(LN_b(r1)), r1 = LN_a(e) + e, with
    e = E[x], written out for each token on its own (eval mode: no dropout): (b, k, n,
    d)."""
    net, d = model.sense_network, model.config.n_embd

    def layer_norm(x, ln):
        return F.layer_norm(x, (d,), ln.weight, ln.bias, ln.eps)

    def mlp(x, m):
        hidden = F.gelu(x @ m.c_fc.weight.T + m.c_fc.bias, approximate="tanh")
        return hidden @ m.c_proj.weight.T + m.c_proj.bias

    columns = []
    for token in ids.flatten().tolist():
        e = model.word_embeddings[token]                                # (d,)
        r1 = layer_norm(e, net.ln) + e
        r2 = r1 + mlp(layer_norm(r1, net.block.ln_1), net.block.mlp)
        columns.append(mlp(layer_norm(r2, net.block.ln_2), net.final_mlp).view(-1, d))
    k = model.config.num_senses
    return torch.stack(columns, 1).view(k, *ids.shape, d).transpose(0, 1)  # (b,k,n,d)


@pytest.mark.parametrize("dedup", [True, False])
def test_model_senses_are_the_equations_of_each_token_alone(dedup):
    """Token 7 at position 3 of one row and position 0 of the other: both get the senses
    computed from E[7] alone, whether senses are computed per position or per id."""
    model = backpack(sense_dedup=dedup)
    x = torch.tensor([[1, 2, 3, 7, 5], [7, 9, 9, 9, 9]])
    senses = model(x, return_senses=True).senses                    # (b, k, n, d)
    torch.testing.assert_close(senses, senses_by_the_equations(model, x),
                               rtol=1e-12, atol=1e-12)
    alone = senses_by_the_equations(model, torch.tensor([[7]]))[0, :, 0]  # (k, d)
    torch.testing.assert_close(senses[0, :, 3], alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(senses[1, :, 0], alone, rtol=1e-12, atol=1e-12)


def test_sense_dedup_matches_direct_values_and_gradients():
    x = torch.randint(
        SMALL["vocab_size"], (3, 20), generator=torch.Generator().manual_seed(2)
    )
    grads = []
    for dedup in (True, False):
        model = backpack(sense_dedup=dedup)
        loss = model(x, x).loss
        grads.append(
            (loss.detach(), torch.autograd.grad(loss, list(model.parameters())))
        )
    (loss_a, grad_a), (loss_b, grad_b) = grads
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
    for ga, gb in zip(grad_a, grad_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_sense_dedup_auto_is_on_for_a_cpu_and_wide_models_on_a_gpu():
    from backpack.model import uses_sense_dedup
    auto = BackpackConfig(**SMALL)
    assert auto.sense_dedup == "auto"
    assert uses_sense_dedup(auto, torch.device("cpu"))
    assert not uses_sense_dedup(auto, torch.device("cuda")) and not uses_sense_dedup(
        auto, "meta"
    )
    # measured: the dedup pays at width 768 on an H200
    wide = BackpackConfig.preset("small")
    assert uses_sense_dedup(wide, "cuda") and not uses_sense_dedup(wide, "meta")
    assert not uses_sense_dedup(
        BackpackConfig(**{**SMALL, "n_embd": 256, "n_head": 4}), "cuda"
    )
    for forced in (True, False):
        config = BackpackConfig(**SMALL, sense_dedup=forced)
        assert (
            uses_sense_dedup(config, "cpu")
            is forced
            is uses_sense_dedup(config, "cuda")
        )
    # on this CPU, "auto" is the per-distinct-token path: the same numbers as True
    x = torch.randint(SMALL["vocab_size"], (2, 12),
                      generator=torch.Generator().manual_seed(4))
    losses = [backpack(sense_dedup=dedup)(x, x).loss for dedup in ("auto", True)]
    assert torch.equal(*losses)


def test_fused_sum_matches_explicit_alpha_values_and_gradients():
    model = backpack()
    x = torch.randint(
        SMALL["vocab_size"], (2, 31), generator=torch.Generator().manual_seed(3)
    )
    fused = model(x, x).loss
    explicit = model(x, x, return_senses=True).loss
    torch.testing.assert_close(fused, explicit, rtol=1e-12, atol=1e-12)
    g_fused = torch.autograd.grad(fused, list(model.parameters()))
    g_explicit = torch.autograd.grad(explicit, list(model.parameters()))
    for a, b in zip(g_fused, g_explicit, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_weighted_sum_matches_the_equation_written_as_loops():
    model = backpack()
    x = torch.randint(
        SMALL["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(4)
    )
    out = model(x, return_senses=True)
    # (k, n, d), (k, n, n)
    senses, alpha = out.senses[0], out.contextualization[0]
    k, n, d = senses.shape
    o = torch.zeros(n, d, dtype=senses.dtype)
    for i in range(n):
        for j in range(i + 1):
            for sense in range(k):
                o[i] += alpha[sense, i, j] * senses[sense, j]
    logits = o @ model.word_embeddings.T
    torch.testing.assert_close(out.logits[0], logits, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", [backpack, lambda: TransformerLM(TransformerConfig(
    **{k: v for k, v in SMALL.items() if k != "num_senses"})).double().eval()])
def test_causal_later_token_changes_no_earlier_logit(make):
    model = make()
    x = torch.randint(
        SMALL["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(5)
    )
    for position in (11, 6, 1):
        changed = x.clone()
        changed[:, position] = (changed[:, position] + 1) % SMALL["vocab_size"]
        a, b = model(x).logits, model(changed).logits
        assert torch.equal(a[:, :position], b[:, :position])
        assert not torch.equal(a[:, position:], b[:, position:])


def test_contextualization_is_a_causal_distribution():
    model = backpack()
    x = torch.randint(SMALL["vocab_size"], (2, 9))
    alpha = model.contextualization(x)
    assert alpha.shape == (2, 4, 9, 9)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 4, 9, dtype=alpha.dtype))
    assert (alpha.triu(1) == 0).all() and (alpha >= 0).all()


def test_custom_contextualization_is_used():
    model = backpack()
    x = torch.randint(SMALL["vocab_size"], (1, 5))
    alpha = model.contextualization(x)
    out = model(x, contextualization=alpha * 0)
    assert torch.equal(out.logits, torch.zeros_like(out.logits))
    with pytest.raises(ValueError, match="contextualization must have shape"):
        model(x, contextualization=alpha[:, :2])


def test_divide_by_senses_scales_the_output():
    x = torch.randint(SMALL["vocab_size"], (1, 7))
    plain, divided = backpack(), backpack(divide_by_senses=True)
    torch.testing.assert_close(plain(x).logits / 4, divided(x).logits)


def test_errors_name_the_problem():
    model = backpack()
    with pytest.raises(ValueError, match="longer than the model's context of 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 97 is outside the vocabulary"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown preset"):
        BackpackConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        SenseWeightNetwork(10, 3)


def test_paper_parameter_counts():
    for name, expected in {"micro": 41.7e6, "mini": 103.9e6, "small": 170.1e6}.items():
        with torch.device("meta"):
            count = BackpackLM(BackpackConfig.preset(name)).num_parameters()
        assert abs(count - expected) / expected < 0.005, (name, count)


def test_initial_loss_near_log_vocab_and_init_scales():
    torch.manual_seed(0)
    model = BackpackLM(BackpackConfig(**SMALL))
    x = torch.randint(SMALL["vocab_size"], (4, 32))
    loss = model(x, x).loss.item()
    assert abs(loss - math.log(SMALL["vocab_size"])) < 0.5
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(2 * SMALL["n_layer"])) < 0.003


def test_generate_is_seeded_and_respects_the_context():
    model = backpack()
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 13) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    greedy = model.generate(prompt, 4, temperature=0)
    step = model(prompt).logits[:, -1].argmax(-1)
    assert greedy[0, 3] == step[0]
    with pytest.raises(ValueError, match="exceeds the context"):
        model.generate(prompt, 30)
    long = model.generate(
        prompt, 40, sliding_window=True, generator=torch.Generator().manual_seed(0)
    )
    assert long.shape == (1, 43)
    with pytest.raises(ValueError, match="longer than the context"):
        model.generate(torch.zeros(1, 33, dtype=torch.long), 1, sliding_window=True)


def test_config_is_checked_when_made():
    from backpack.weights import ConfigError
    for bad, message in [
        (dict(num_senses=0), "num_senses=0 is out of range"),
        (dict(num_senses=5), "not divisible by num_senses=5"),
        (dict(n_head=5), "not divisible by n_head=5"),
        (dict(dropout=1.0), r"dropout=1.0 is out of range: .*\[0.0, 1.0\)"),
        (dict(n_layer=2.0), "n_layer must be an integer"),
        (dict(sense_dedup="yes"), "sense_dedup='yes' is not allowed"),
        (dict(sense_sum="flash"), "sense_sum='flash' is not allowed"),
    ]:
        with pytest.raises(ConfigError, match=message):
            BackpackConfig(**{**SMALL, **bad})


def test_loss_refuses_targets_outside_the_vocabulary_and_all_ignored():
    model = backpack()
    x = torch.tensor([[1, 2, 3]])
    with pytest.raises(
        ValueError, match=r"target id 97 is outside the vocabulary \[0, 97\)"
    ):
        model(x, torch.tensor([[2, 97, -100]]))
    with pytest.raises(ValueError, match="every target is -100"):
        model(x, torch.full_like(x, -100))
    partly = model(x, torch.tensor([[2, -100, -100]])).loss
    full = torch.nn.functional.cross_entropy(
        model(x).logits[0, :1].float(), torch.tensor([2])
    )
    torch.testing.assert_close(partly, full)


def test_generate_checks_its_arguments():
    model = backpack()
    prompt = torch.tensor([[1, 2, 3]])
    for kwargs, message in [
        (dict(idx=prompt[0]), r"\(batch, seq\) tensor.*got \(3,\)"),
        (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
        (dict(temperature=float("nan")), "temperature must be a finite"),
        (dict(temperature=-0.5), "temperature must be a finite number >= 0"),
        (dict(top_k=0), "top_k must be None .* or an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.generate(**{"idx": prompt, "max_new_tokens": 2, **kwargs})
    assert model.generate(prompt, 0).shape == (1, 3)


def test_auto_sense_sum_is_fused_on_a_cpu_and_a_hopper_gpu_with_triton(monkeypatch):
    import importlib.util

    from backpack.model import sense_sum_way

    def uses_fused_sense_sum(config, device) -> bool:
        return sense_sum_way(config, device) == "fused"

    auto = BackpackConfig(**SMALL)
    assert uses_fused_sense_sum(auto, "cpu") and not uses_fused_sense_sum(auto, "meta")
    for way, expected in (("fused", True), ("per_sense", False)):
        forced = BackpackConfig(**SMALL, sense_sum=way)
        assert (
            uses_fused_sense_sum(forced, "cpu")
            is expected
            is uses_fused_sense_sum(forced, "cuda")
        )
    real_find_spec = importlib.util.find_spec
    for capability, has_triton, expected in (
        ((9, 0), True, True),
        ((8, 0), True, False),
        ((9, 0), False, False),
    ):
        monkeypatch.setattr(
            torch.cuda, "get_device_capability", lambda device=None, c=capability: c
        )
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, has_triton=has_triton: (
                (object() if has_triton else None)
                if name == "triton"
                else real_find_spec(name, *a)
            ),
        )
        assert uses_fused_sense_sum(auto, "cuda") is expected, (capability, has_triton)
