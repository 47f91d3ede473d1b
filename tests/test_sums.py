"""Tests of chapter 10's sense sums (backpack.sums) and of BackpackLM configured to use
each: every way against the explicit-alpha reference, values and gradients."""

import math

import pytest
import torch

from backpack.model import BackpackConfig, sense_sum_way
from small_models import SMALL, make
from backpack.sums import (
    SENSE_SUMS,
    fused_sense_sum,
    sense_sum,
    sense_sum_per_sense,
    sense_sum_reference,
    sense_sum_value_chunks,
    triton_sense_sum,
)



def random_inputs(b=2, h=4, n=37, d=32, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(b, h, n, d // h), (b, h, n, d // h), (b, h, n, d)]
    return [
        (3 * torch.randn(s, generator=g, dtype=dtype)).requires_grad_() for s in shapes
    ]


@pytest.mark.parametrize("block", [1, 5, 16, 64])
@pytest.mark.parametrize("n", [1, 37])
def test_fused_sense_sum_matches_explicit_alpha(block, n):
    q, k, c = random_inputs(n=n)
    scale = 1 / math.sqrt(q.shape[-1])
    g = torch.randn(q.shape[0], n, c.shape[-1], dtype=torch.float64)
    ref = sense_sum_reference(q, k, c, scale)
    out = fused_sense_sum(q, k, c, scale, block=block, backend="torch")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out, (q, k, c), g)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, c), g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_per_sense_sum_matches_explicit_alpha():
    q, k, c = random_inputs()
    scale = 0.3
    torch.testing.assert_close(
        sense_sum_per_sense(q, k, c, scale),
        sense_sum_reference(q, k, c, scale),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("n, d, h", [(37, 32, 4), (1, 48, 4), (9, 12, 3)])
def test_value_chunk_sum_matches_explicit_alpha_values_and_gradients(n, d, h):
    q, k, c = random_inputs(h=h, n=n, d=d)
    g = torch.randn(q.shape[0], n, d, dtype=torch.float64)
    ref = sense_sum_reference(q, k, c, 0.3)
    out = sense_sum_value_chunks(q, k, c, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out, (q, k, c), g)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, c), g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_value_chunk_sum_refuses_a_width_that_is_not_a_multiple_of_the_head():
    q, k, _ = random_inputs(h=4, n=5, d=32)  # head size 8
    with pytest.raises(ValueError, match="width 30 is not a multiple of the head 8"):
        sense_sum_value_chunks(q, k, torch.zeros(2, 4, 5, 30, dtype=torch.float64), 0.3)


def test_fused_sense_sum_autograd_gradcheck():
    q, k, c = random_inputs(b=1, h=2, n=6, d=8)
    assert torch.autograd.gradcheck(
        lambda *t: fused_sense_sum(*t, 0.5, block=4, backend="torch"), (q, k, c)
    )


def test_fused_sense_sum_never_saves_alpha():
    q, k, c = random_inputs(b=2, h=4, n=64, d=32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        fused_sense_sum(q, k, c, 0.3, block=16, backend="torch").sum()
    b, h, n, _ = c.shape
    # only the inputs and one log-sum-exp per (row, sense): no alpha, no per-sense
    # outputs
    assert sum(saved) == q.numel() + k.numel() + c.numel() + b * h * n


def test_fused_sense_sum_bf16_close_to_float64():
    q, k, c = (t.detach().div(3).bfloat16() for t in random_inputs())
    ref = sense_sum_reference(
        q.double(), k.double(), c.double(), 0.3
    )  # same rounded inputs
    out = fused_sense_sum(q, k, c, 0.3, backend="torch")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=0.02, atol=0.05)


def test_fused_sense_sum_rejects_bad_arguments():
    q, k, c = random_inputs()
    with pytest.raises(ValueError, match="disagree"):
        fused_sense_sum(q, k[:, :, :5], c, 0.3)
    with pytest.raises(ValueError, match="backend"):
        fused_sense_sum(q, k, c, 0.3, backend="cuda")
    with pytest.raises(ValueError, match="block"):
        fused_sense_sum(q, k, c, 0.3, block=0, backend="torch")


TRITON_CHECK = """
import os, torch
from backpack.sums import sense_sum_reference, triton_sense_sum
g = torch.Generator().manual_seed(0)
shapes = [(2, 4, 37, 10), (2, 4, 37, 10), (2, 4, 37, 40)]  # head 10: padded to 16
q, k, c = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_()
           for s in shapes]
ref = sense_sum_reference(q, k, c, 0.4)
grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
ref_grads = torch.autograd.grad(ref, (q, k, c), grad)
device = "cuda" if torch.cuda.is_available() else "cpu"
inputs = [t.detach().float().to(device).requires_grad_() for t in (q, k, c)]
out = triton_sense_sum(*inputs, 0.4)
grads = torch.autograd.grad(out, inputs, grad.float().to(device))
for a, b in zip([out, *grads], [ref, *ref_grads]):
    torch.testing.assert_close(a.double().cpu(), b.detach(), rtol=1e-4, atol=1e-4)
print("ok")
"""


@pytest.mark.slow
def test_triton_kernel_matches_explicit_alpha_values_and_gradients():
    """The Triton kernels, forward and backward: on a GPU if there is one, else on the
    CPU
    through Triton's interpreter (TRITON_INTERPRET=1 must be set before the kernels are
    decorated, hence a fresh process)."""
    pytest.importorskip("triton", reason="triton is not installed (Linux only)")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "0" if torch.cuda.is_available() else "1"}
    done = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[
        -3000:
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernel_bf16_on_gpu():
    q, k, c = (
        t.detach().cuda().bfloat16() for t in random_inputs(b=2, h=16, n=300, d=256)
    )
    # the same bf16 inputs in float64: rounding the inputs alone moves the sum by up to
    # 0.47 here (outputs up to 43), which is not the kernel's error
    ref = sense_sum_reference(q.double(), k.double(), c.double(), 0.25)
    out = triton_sense_sum(q, k, c, 0.25)  # bf16 probabilities and output, fp32 sums
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=5e-2)


def test_model_with_fused_sense_sum_under_bf16_autocast():
    x = torch.randint(
        SMALL["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(8)
    )
    model = make(dtype=torch.float32, sense_sum="fused")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, x).loss
    loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()
    )
    reference = make(dtype=torch.float32)(x, x).loss
    assert abs(loss.item() - reference.item()) < 0.05


def test_sense_sum_calls_the_way_it_names():
    q, k, c = random_inputs()
    ref = sense_sum_reference(q, k, c, 0.3)
    for way in SENSE_SUMS:
        torch.testing.assert_close(
            sense_sum(q, k, c, 0.3, way), ref, rtol=1e-12, atol=1e-12
        )
    with pytest.raises(ValueError, match="way must be one of"):
        sense_sum(q, k, c, 0.3, "fast")


@pytest.mark.parametrize("dedup", [True, False])
def test_every_configured_backpack_gives_the_reference_loss_and_gradients(dedup):
    """BackpackLM configured with each sense sum, senses per distinct id or at every
    position: the reference's loss and gradients (float64, a sense edit on)."""
    x = torch.randint(
        SMALL["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(5)
    )

    def loss_and_grads(way: str):
        model = make(dtype=torch.float64, sense_sum=way, sense_dedup=dedup).train()
        model.sense_edits.append(
            lambda ids, senses: senses * (1 + (ids % 3)[:, None, :, None])
        )
        loss = model(x, x).loss
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    loss, expected = loss_and_grads("reference")
    for way in SENSE_SUMS:
        out, grads = loss_and_grads(way)
        torch.testing.assert_close(out, loss, rtol=1e-12, atol=1e-12, msg=way)
        for a, b in zip(grads, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=way)


def test_auto_sums_with_the_fused_sum_on_a_cpu_and_per_sense_elsewhere():
    """What "auto" means on each device; on a CPU its logits are the fused sum's."""
    config = BackpackConfig(**SMALL)
    assert config.sense_sum == "auto"
    assert sense_sum_way(config, torch.device("cpu")) == "fused"
    assert (
        sense_sum_way(BackpackConfig(**SMALL, sense_sum="per_sense"), "cpu")
        == "per_sense"
    )
    assert sense_sum_way(config, torch.device("mps")) == "per_sense"
    x = torch.randint(
        SMALL["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(9)
    )
    auto = make(dtype=torch.float32)(x).logits
    assert torch.equal(auto, make(dtype=torch.float32, sense_sum="fused")(x).logits)
