"""Checks of backpack.attention (chapter 3): every backend against the plain equations,
values and gradients, in float64 on CPU; shapes with odd lengths, wide values, fewer
queries than keys."""

import pytest
import torch

from backpack.attention import (
    BACKENDS,
    HAS_FLASH_ATTN,
    attention,
    attention_weights,
    causal_mask,
    plain_attention,
    select_backend,
    tiled_attention,
)

# (batch, heads, n_q, n_k, head_dim, v_dim, causal)
SHAPES = [
    (1, 1, 1, 1, 4, 4, True),
    (2, 3, 7, 7, 8, 8, True),
    (1, 2, 33, 33, 16, 40, True),
    (2, 2, 65, 65, 8, 8, False),
    (1, 2, 130, 130, 24, 96, True),
    (2, 1, 7, 33, 8, 12, True),      # fewer queries than keys: bottom-right causal
    (1, 3, 1, 65, 16, 16, True),     # one new token against a cache
    (1, 2, 33, 130, 8, 8, False),
    (2, 2, 65, 7, 8, 16, False),     # more queries than keys is fine without a mask
]
IDS = [
    f"b{b}h{h}q{nq}k{nk}d{dh}v{dv}{'c' if c else 'n'}"
    for b, h, nq, nk, dh, dv, c in SHAPES
]


def make_inputs(seed, b, h, n_q, n_k, dh, dv):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(
        b, h, n_q, dh, generator=gen, dtype=torch.float64, requires_grad=True
    )
    k = torch.randn(
        b, h, n_k, dh, generator=gen, dtype=torch.float64, requires_grad=True
    )
    v = torch.randn(
        b, h, n_k, dv, generator=gen, dtype=torch.float64, requires_grad=True
    )
    out_grad = torch.randn(b, h, n_q, dv, generator=gen, dtype=torch.float64)
    return q, k, v, out_grad


def reference(q, k, v, causal, scale=None):
    """Attention with an explicit loop over query positions (independent of the
    package's masking)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    n_q, n_k = q.shape[2], k.shape[2]
    rows = []
    for i in range(n_q):
        visible = i + (n_k - n_q) + 1 if causal else n_k
        s = (q[:, :, i : i + 1] @ k[:, :, :visible].transpose(-2, -1)) * scale
        rows.append(s.softmax(-1) @ v[:, :, :visible])
    return torch.cat(rows, dim=2)


def values_and_grads(fn, q, k, v, out_grad):
    out = fn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), out_grad)
    return out, grads


def assert_close(a, b):
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_plain_matches_loop_reference(shape):
    b, h, nq, nk, dh, dv, causal = shape
    q, k, v, g = make_inputs(10, b, h, nq, nk, dh, dv)
    out, grads = values_and_grads(
        lambda q, k, v: plain_attention(q, k, v, causal=causal), q, k, v, g
    )
    ref, ref_grads = values_and_grads(
        lambda q, k, v: reference(q, k, v, causal), q, k, v, g
    )
    assert out.shape == (b, h, nq, dv)
    assert_close(out, ref)
    for a, r in zip(grads, ref_grads, strict=True):
        assert_close(a, r)


VARIANTS = ["tiled", "tiled_small_blocks", "sdpa", "auto", "plain_via_attention"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_backends_match_plain_values_and_grads(shape, variant):
    b, h, nq, nk, dh, dv, causal = shape
    q, k, v, g = make_inputs(
        100 + 10 * SHAPES.index(shape) + VARIANTS.index(variant), b, h, nq, nk, dh, dv
    )
    fns = {
        "tiled": lambda q, k, v: tiled_attention(q, k, v, causal=causal),
        "tiled_small_blocks": lambda q, k, v: tiled_attention(
            q, k, v, causal=causal, block_q=5, block_k=3
        ),
        "sdpa": lambda q, k, v: attention(q, k, v, causal=causal, backend="sdpa"),
        "auto": lambda q, k, v: attention(q, k, v, causal=causal),
        "plain_via_attention": lambda q, k, v: attention(
            q, k, v, causal=causal, backend="plain"
        ),
    }
    out, grads = values_and_grads(fns[variant], q, k, v, g)
    ref, ref_grads = values_and_grads(
        lambda q, k, v: plain_attention(q, k, v, causal=causal), q, k, v, g
    )
    assert out.shape == ref.shape and out.dtype == torch.float64
    assert_close(out, ref)
    for a, r in zip(grads, ref_grads, strict=True):
        assert_close(a, r)


@pytest.mark.parametrize("backend", ["plain", "sdpa", "tiled"])
def test_custom_scale(backend):
    q, k, v, _ = make_inputs(3, 2, 2, 9, 9, 8, 5)
    out = attention(q, k, v, scale=0.37, backend=backend)
    assert_close(out, reference(q, k, v, True, scale=0.37))


def test_attention_weights_are_causal_distributions():
    q, k, _, _ = make_inputs(4, 2, 3, 5, 9, 8, 8)
    w = attention_weights(q, k)
    assert w.shape == (2, 3, 5, 9)
    assert_close(w.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
    assert (w.masked_select(~causal_mask(5, 9)) == 0).all()
    assert (w.masked_select(causal_mask(5, 9)) > 0).all()


def test_causal_mask_bottom_right():
    assert causal_mask(3, 3).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert causal_mask(2, 4).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert causal_mask(1, 4).all()


def test_half_precision_softmax_in_float32():
    gen = torch.Generator().manual_seed(5)
    # large scores
    q, k = (torch.randn(1, 2, 16, 8, generator=gen) * 30 for _ in range(2))
    w = attention_weights(q.bfloat16(), k.bfloat16())
    assert w.dtype == torch.bfloat16 and torch.isfinite(w).all()
    torch.testing.assert_close(
        w.float(),
        attention_weights(q.bfloat16().float(), k.bfloat16().float()),
        atol=1e-2,
        rtol=0,
    )


def test_tiled_float32_close_to_plain():
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 4, 150, 32, generator=gen) for _ in range(3))
    torch.testing.assert_close(
        tiled_attention(q, k, v), plain_attention(q, k, v), atol=1e-5, rtol=1e-5
    )


def test_select_backend_on_cpu_is_sdpa():
    x = torch.randn(1, 2, 4, 8)
    assert select_backend(x, x, x) == "sdpa"
    assert select_backend(x.bfloat16(), x.bfloat16(), x.bfloat16()) == "sdpa"
    assert select_backend(x, x, torch.randn(1, 2, 4, 32)) == "sdpa"


def test_auto_runs_the_backend_select_backend_names():
    """"auto" gives what the backend select_backend names gives, bit for bit."""
    x = torch.randn(1, 2, 4, 8)
    chosen = select_backend(x, x, x)
    assert torch.equal(attention(x, x, x), attention(x, x, x, backend=chosen))
    assert set(BACKENDS) == {"auto", "flash", "sdpa", "plain", "tiled"}


def test_dropout_only_when_asked():
    torch.manual_seed(7)
    x = torch.randn(1, 2, 16, 8)
    assert torch.equal(
        attention(x, x, x, backend="plain"),
        attention(x, x, x, backend="plain", dropout_p=0.0),
    )
    dropped = attention(x, x, x, backend="plain", dropout_p=0.5)
    assert not torch.allclose(dropped, attention(x, x, x, backend="plain"))
    with pytest.raises(ValueError, match="no dropout"):
        attention(x, x, x, backend="tiled", dropout_p=0.1)
    with pytest.raises(ValueError, match="dropout_p"):
        attention(x, x, x, dropout_p=1.5)


def test_error_messages():
    q = torch.randn(2, 3, 5, 8)
    k = torch.randn(2, 3, 6, 8)
    v = torch.randn(2, 3, 6, 16)
    with pytest.raises(
        ValueError,
        match="unknown attention backend 'fast'.*auto, flash, sdpa, plain, tiled",
    ):
        attention(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="4-D"):
        attention(q[0], k, v)
    with pytest.raises(ValueError, match="4-D"):
        attention(q, k, v[0])
    with pytest.raises(ValueError, match=r"\(batch, heads\)"):
        attention(q, k[:, :2], v)
    with pytest.raises(ValueError, match=r"\(batch, heads\)"):
        attention(q, k, v[:1])
    with pytest.raises(ValueError, match="same length"):
        attention(q, k, v[:, :, :-1])
    with pytest.raises(ValueError, match="head_dim"):
        attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="dtype"):
        attention(q, k.double(), v)
    with pytest.raises(ValueError, match="n_q <= n_k"):
        attention(k, q, q)   # 6 causal queries against 5 keys
    attention(k, q, q, causal=False)   # fine without a mask
    with pytest.raises(ValueError, match="block sizes"):
        tiled_attention(q, k, v, block_q=0)


@pytest.mark.skipif(HAS_FLASH_ATTN, reason="flash_attn is installed here")
def test_flash_requested_but_missing():
    x = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="pip install flash-attn"):
        attention(x, x, x, backend="flash")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "shape",
    [(2, 3, 65, 65, 64, 64), (2, 3, 33, 130, 64, 64), (2, 16, 130, 130, 24, 384)],
)
def test_cuda_auto_matches_plain(shape, dtype):
    b, h, nq, nk, dh, dv = shape
    gen = torch.Generator(device="cuda").manual_seed(8)
    q = torch.randn(b, h, nq, dh, device="cuda", generator=gen, dtype=dtype)
    k = torch.randn(b, h, nk, dh, device="cuda", generator=gen, dtype=dtype)
    v = torch.randn(b, h, nk, dv, device="cuda", generator=gen, dtype=dtype)
    ref = plain_attention(q.double(), k.double(), v.double())
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for backend in ("auto", "sdpa", "tiled"):
        out = attention(q, k, v, backend=backend)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    if dh == dv and dtype != torch.float32:
        assert select_backend(q, k, v) == ("flash" if HAS_FLASH_ATTN else "sdpa")
    if dh != dv:
        assert select_backend(q, k, v) == "sdpa"
