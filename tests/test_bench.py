"""Tests of chapter 10's measurements (backpack.bench): every variant it times is
BackpackLM configured, a broken variant is reported, a cut-short run keeps what it
measured, the FLOP floor, and the union-of-micro-batches step."""

from contextlib import nullcontext

import pytest
import torch

from backpack import bench
from backpack.bench import training_variants
from backpack.model import BackpackConfig, BackpackLM
from small_models import SMALL, make



def test_value_chunk_variant_is_benchmarked_on_a_gpu_only():
    """The GPU benchmark adds the value-chunk sum. Every Backpack variant is one model
    computed another way: the loss of chapter 5's per-sense sum, checked on the CPU
    (where the value-chunk sum runs too) for the variants of a GPU run."""
    from dataclasses import replace

    assert "backpack_value_chunks" not in training_variants("cpu")
    variants = training_variants("cuda")
    assert "backpack_value_chunks" in variants
    config = BackpackConfig(**SMALL)
    x = torch.randint(
        SMALL["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(10)
    )
    torch.manual_seed(0)
    chapter5 = BackpackLM(replace(config, sense_sum="per_sense")).double().eval()
    expected = chapter5(x, x).loss
    for name, (build, loss_fn) in variants.items():
        if name == "transformer":
            continue
        torch.manual_seed(0)  # the same weights as chapter5's
        model = build(config).double().eval()
        torch.testing.assert_close(
            loss_fn(model, x, x), expected, rtol=1e-10, atol=1e-10, msg=name
        )


@pytest.mark.slow
def test_saved_bytes_leaves_no_graph_alive():
    """Counting what autograd saves must not keep the graph: on a GPU the benchmark
    counts six Small models in a row, and leaked graphs filled 139 GB."""
    import gc
    from backpack.bench import saved_activation_bytes

    def graph_tensors() -> int:
        gc.collect()
        return sum(
            1 for o in gc.get_objects() if torch.is_tensor(o) and o.grad_fn is not None
        )

    x = torch.randint(
        SMALL["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(4)
    )
    before = graph_tensors()
    for cls, loss_fn in training_variants("cpu").values():
        assert saved_activation_bytes(loss_fn, cls(BackpackConfig(**SMALL)), x, x) > 0
    assert graph_tensors() == before


@pytest.mark.slow
def test_benchmark_quick_runs_and_reports_ratios():
    result = bench.bench_main(["--quick", "--device", "cpu"])
    assert {r["model"] for r in result["training"]} >= {"transformer", "backpack_fused"}
    assert all(r["time_vs_transformer"] > 0 for r in result["training"])
    assert "cache_speedup_backpack_b1" in result["ratios"]


@pytest.mark.slow
def test_benchmark_writes_what_it_measured_after_each_part(tmp_path, monkeypatch):
    """--out holds the whole result at the end; a run cut short (here, in generation)
    leaves what it measured before, marked partial, with the ratios of that part."""
    import json
    out = tmp_path / "speed.json"
    result = bench.bench_main(["--quick", "--device", "cpu", "--out", str(out)])
    final = json.loads(out.read_text())
    assert final == json.loads(json.dumps(result)) and "partial" not in final
    assert final["training"] and final["generation"]

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C once training is measured

    out.unlink()
    monkeypatch.setattr(bench, "generation_rates", cut_short)
    with pytest.raises(KeyboardInterrupt):
        bench.bench_main(["--quick", "--device", "cpu", "--out", str(out)])
    kept = json.loads(out.read_text())
    assert kept["partial"] is True and kept["generation"] == []
    assert {(r["model"], r["seq"]) for r in kept["training"]} == {
        (r["model"], r["seq"]) for r in final["training"]
    }
    assert set(kept["ratios"]) == {k for k in final["ratios"] if k.startswith("train_")}


@pytest.mark.slow
def test_a_failing_variant_is_reported_and_the_others_still_measured(monkeypatch):
    from backpack.model import BackpackConfig

    def broken(model, x, y):
        raise RuntimeError("this kernel does not compile here")

    variants = bench.training_variants("cpu")
    variants["backpack_broken"] = (BackpackLM, broken)
    monkeypatch.setattr(bench, "training_variants", lambda device_type: variants)
    config = BackpackConfig(**SMALL)
    batches = bench.sample_batches(config, 2, 16, 2, torch.device("cpu"))
    rows = bench.time_training_steps(
        config, batches, torch.device("cpu"), nullcontext, 1
    )
    by_name = {r["model"]: r for r in rows}
    assert by_name["backpack_broken"] == {
        "model": "backpack_broken",
        "error": "RuntimeError: this kernel does not compile here",
    }
    assert all(
        by_name[n]["step_s"] > 0
        for n in bench.training_variants("cpu")
        if n != "backpack_broken"
    )
    assert "train_backpack_broken_vs_transformer_T16" not in bench.ratios(
        {"training": [{**r, "seq": 16} for r in rows], "generation": []}
    )
    variants["transformer"] = (BackpackLM, broken)  # every ratio divides by it: no rows
    with pytest.raises(RuntimeError, match="does not compile"):
        bench.time_training_steps(config, batches, torch.device("cpu"), nullcontext, 1)


def test_arithmetic_floor_counts_the_sense_network_on_distinct_ids_only():
    from backpack.bench import arithmetic_floor, training_flops_per_token

    config = BackpackConfig(**SMALL)
    everywhere = training_flops_per_token(config, 48, True) / training_flops_per_token(
        config, 48, False
    )
    assert arithmetic_floor(config, 48, 1.0) == pytest.approx(everywhere, rel=1e-12)
    floors = [arithmetic_floor(config, 48, share) for share in (0.0, 0.3, 0.6, 1.0)]
    assert floors == sorted(floors) and floors[0] > 1.0
    d, k = (
        config.n_embd,
        config.num_senses,
    )  # the sense network's matrices, 6 FLOPs per weight
    sense_network = 6 * (8 * d * d + 4 * d * d + 4 * d * k * d)
    gap = (floors[-1] - floors[0]) * training_flops_per_token(config, 48, False)
    assert gap == pytest.approx(sense_network, rel=1e-12)


@pytest.mark.parametrize("sense_sum", ["fused", "per_sense"])
def test_union_senses_give_the_plain_accumulated_gradients(sense_sum):
    """Senses once for the union of the micro-batches: the same gradients, edits
    included."""
    from backpack.bench import accumulate_with_union_senses

    model = make(dtype=torch.float64, sense_sum=sense_sum).train()
    model.sense_edits.append(
        lambda ids, senses: senses * (1 + (ids % 2)[:, None, :, None])
    )
    seeded = [torch.Generator().manual_seed(s) for s in range(3)]
    batches = [
        tuple(torch.randint(SMALL["vocab_size"], (2, 20), generator=g) for _ in "xy")
        for g in seeded
    ]
    expected_loss = 0.0
    for x, y in batches:
        loss = model(x, y).loss / len(batches)
        loss.backward()
        expected_loss += loss.item()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    assert accumulate_with_union_senses(model, batches) == pytest.approx(expected_loss)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)


def test_union_senses_refuse_an_empty_step():
    from backpack.bench import accumulate_with_union_senses

    with pytest.raises(ValueError, match="at least one micro-batch"):
        accumulate_with_union_senses(make(), [])
