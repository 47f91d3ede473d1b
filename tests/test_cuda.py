"""GPU paths, compared with the plain computation (skipped without CUDA; run on a lent
GPU)."""

import math

import pytest
import torch

from backpack.model import BackpackConfig, BackpackLM, TransformerLM
from backpack.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CFG = dict(
    vocab_size=512, n_positions=128, n_embd=128, n_layer=2, n_head=4, num_senses=8
)


def model_pair(**overrides):
    torch.manual_seed(0)
    cpu = BackpackLM(BackpackConfig(**{**CFG, **overrides})).eval()
    gpu = BackpackLM(BackpackConfig(**{**CFG, **overrides})).eval()
    gpu.load_state_dict(cpu.state_dict())
    return cpu.double(), gpu.cuda()


@pytest.mark.parametrize("dedup", [True, False])
def test_cuda_fp32_matches_cpu_float64(dedup):
    cpu, gpu = model_pair(sense_dedup=dedup)
    x = torch.randint(CFG["vocab_size"], (3, 100))
    ref = cpu(x, x).loss
    out = gpu(x.cuda(), x.cuda()).loss
    assert abs(out.item() - ref.item()) / ref.item() < 1e-3  # tf32 matmuls allowed


def test_cuda_bf16_fused_sum_matches_explicit_alpha():
    _, gpu = model_pair()
    x = torch.randint(CFG["vocab_size"], (4, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fused = gpu(x).logits.float()
        explicit = gpu(x, return_senses=True).logits.float()
    rel = (fused - explicit).norm() / explicit.norm()
    assert rel < 2e-2, rel


def test_cuda_gradients_fused_vs_explicit():
    _, gpu = model_pair()
    gpu.train()
    x = torch.randint(CFG["vocab_size"], (2, 64), device="cuda")
    g_fused = torch.autograd.grad(gpu(x, x).loss, list(gpu.parameters()))
    g_explicit = torch.autograd.grad(
        gpu(x, x, return_senses=True).loss, list(gpu.parameters())
    )
    for a, b in zip(g_fused, g_explicit, strict=True):
        assert (a - b).norm() <= 1e-3 * b.norm() + 1e-6


def test_cuda_training_steps_bf16_fused_adamw(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    tokens = np.resize(rng.integers(0, CFG["vocab_size"], 61), 50000).astype(np.uint16)
    for model_class in (BackpackLM, TransformerLM):
        torch.manual_seed(0)
        model = model_class(BackpackConfig(**CFG))
        result = train(
            model,
            TrainConfig(
                max_steps=60,
                batch_size=16,
                block_size=64,
                learning_rate=3e-3,
                warmup_steps=5,
                eval_interval=30,
                eval_batches=2,
                log_interval=30,
                progress=False,
                out_dir=str(tmp_path / model_class.__name__),
            ),
            tokens,
            tokens[:5000],
            log=None,
        )
        assert next(model.parameters()).is_cuda
        # the pattern is learned
        assert result.final_val_loss < math.log(CFG["vocab_size"]) - 2.0


def test_device_sense_profile_reports_both_ways():
    from backpack.bench import device_sense_profile
    _, gpu = model_pair()
    x = torch.randint(CFG["vocab_size"], (4, 64), device="cuda")
    report = device_sense_profile(gpu, x, rows=5)
    assert report.count("host-device waits") == 2
    assert "dedup=True" in report and "dedup=False" in report
    # torch.unique's output size depends on the data: the host must wait for it
    dedup_waits = int(
        report.split("dedup=True")[1].split("host-device waits")[0].split(",")[-1]
    )
    assert dedup_waits >= 1
