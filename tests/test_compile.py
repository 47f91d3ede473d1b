"""torch.compile: a Backpack's and a Transformer's training step compile to one graph
(no graph breaks), and the compiled step computes what eager computes."""

import pytest
import torch
import torch._dynamo

from backpack.model import BackpackConfig, BackpackLM, TransformerLM

CONFIG = dict(
    vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_senses=4
)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(97, (2, 32), generator=g), torch.randint(
        97, (2, 32), generator=g
    )


def loss_and_grads(model, step, x, y):
    model.zero_grad(set_to_none=True)
    loss = step(x, y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "cls, sense_sum",
    [
        (BackpackLM, "auto"),
        (BackpackLM, "per_sense"),
        (BackpackLM, "fused"),
        (TransformerLM, "auto"),
    ],
)
@pytest.mark.slow
def test_training_step_has_no_graph_break(cls, sense_sum):
    torch.manual_seed(0)
    model = cls(BackpackConfig(**CONFIG, sense_sum=sense_sum)).train()
    x, y = batch()
    explained = torch._dynamo.explain(lambda x, y: model(x, y).loss)(x, y)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("cls", [BackpackLM, TransformerLM])
@pytest.mark.slow
def test_compiled_step_equals_eager(cls):
    """fullgraph=True fails on any break, forward or backward; aot_eager runs the traced
    forward and backward graphs with eager kernels: the numbers agree to float32
    rounding."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(BackpackConfig(**CONFIG, dropout=0.0)).train()
    compiled = torch.compile(
        lambda x, y: model(x, y).loss, fullgraph=True, backend="aot_eager"
    )
    for seed in range(2):
        x, y = batch(seed)
        eager_loss, eager_grads = loss_and_grads(
            model, lambda x, y: model(x, y).loss, x, y
        )
        loss, grads = loss_and_grads(model, compiled, x, y)
        assert torch.allclose(loss, eager_loss, rtol=1e-6, atol=1e-6)
        for a, b in zip(grads, eager_grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inductor_compiled_backpack_step_equals_eager():
    """The real compiler (inductor, C++ kernels on a CPU): the loss of a compiled
    training step equals eager's to float32 rounding (fused kernels sum in another
    order: 1e-5 relative)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = BackpackLM(BackpackConfig(**CONFIG, dropout=0.0)).train()
    compiled = torch.compile(lambda x, y: model(x, y).loss, fullgraph=True)
    x, y = batch()
    eager_loss, eager_grads = loss_and_grads(model, lambda x, y: model(x, y).loss, x, y)
    loss, grads = loss_and_grads(model, compiled, x, y)
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, eager_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_bad_ids_are_still_refused_in_eager_mode():
    """The value checks skipped under compile still run in eager mode, with their
    message."""
    model = BackpackLM(BackpackConfig(**CONFIG))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 2]]), torch.tensor([[1, 97]]))
