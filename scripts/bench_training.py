"""Training throughput of a Backpack vs the same-size Transformer, side by side.

    python scripts/bench_training.py --device cpu --steps 10
    python scripts/bench_training.py --device cuda --steps 50 --out throughput.json

Both models get the same config (width, depth, vocabulary, context), the same batches,
the same optimizer, and the same precision (bfloat16 autocast on CUDA; fp32 on CPU
unless --bf16). Prints tokens/s of each and their ratio; with --out, writes the table as
JSON. Not a test: timings are machine-dependent and are never asserted.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import numpy as np
import torch

from backpack.model import BackpackConfig, BackpackLM, TransformerLM
from backpack.train import TrainConfig, configure_optimizer, device_name


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokens_per_second(model, batches, device, autocast, warmup: int) -> float:
    """Median-free, simple: time the steps after warmup; full optimizer steps, as in
    training."""
    optimizer = configure_optimizer(model, TrainConfig(), device.type)
    model.train()
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast():
            loss = model(x, y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    elapsed = time.perf_counter() - start
    timed = len(batches) - warmup
    return timed * batches[0][0].numel() / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--num-senses", type=int, default=16)
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on CPU too"
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    batch_size = args.batch_size or (64 if device.type == "cuda" else 16)
    steps = args.steps or (40 if device.type == "cuda" else 8)
    use_bf16 = device.type == "cuda" or args.bf16
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if use_bf16
        else nullcontext
    )

    config = BackpackConfig.preset(
        args.preset,
        vocab_size=args.vocab_size,
        n_positions=args.block_size,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        num_senses=args.num_senses,
    )
    try:
        from backpack.data import load_tokens
        tokens = load_tokens("train")
    # no corpus here: Zipf-distributed ids keep the number of distinct tokens realistic
    except Exception:
        rng = np.random.default_rng(0)
        tokens = np.minimum(rng.zipf(1.2, 2_000_000), args.vocab_size) - 1
    generator = torch.Generator().manual_seed(0)
    from backpack.data import batch_at
    batches = []
    for _ in range(steps + args.warmup):
        offsets = torch.randint(
            len(tokens) - args.block_size - 1, (batch_size,), generator=generator
        )
        x, y = batch_at(tokens, offsets, args.block_size)
        batches.append((x.to(device), y.to(device)))

    rows = []
    variants = [("transformer", TransformerLM, {}),
                # not "auto": both ways, any device
                ("backpack", BackpackLM, {"sense_dedup": True}),
                ("backpack (no sense dedup)", BackpackLM, {"sense_dedup": False})]
    for name, model_class, overrides in variants:
        torch.manual_seed(0)
        model = model_class(BackpackConfig(**{**config.to_dict(), **overrides})).to(
            device
        )
        step_model = torch.compile(model) if args.compile else model
        rate = tokens_per_second(step_model, batches, device, autocast, args.warmup)
        rows.append(
            {"model": name, "parameters": model.num_parameters(), "tokens_per_s": rate}
        )
        del model, step_model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = rows[0]["tokens_per_s"]
    print(
        f"device: {device_name(device)}, torch {torch.__version__}, "
        f"{'bf16 autocast' if use_bf16 else 'fp32'}"
        f"{', compiled' if args.compile else ''}, "
        f"batch {batch_size} x {args.block_size}, d={config.n_embd} L={config.n_layer} "
        f"k={config.num_senses} V={config.vocab_size}"
    )
    print(
        f"{'model':28s} {'params':>9s} {'tokens/s':>12s} {'time vs Transformer':>20s}"
    )
    for row in rows:
        row["time_ratio_vs_transformer"] = base / row["tokens_per_s"]
        print(
            f"{row['model']:28s} {row['parameters'] / 1e6:8.2f}M "
            f"{row['tokens_per_s']:12,.0f} "
            f"{row['time_ratio_vs_transformer']:19.2f}x"
        )
    if args.out:
        summary = {
            "device": device_name(device),
            "torch": torch.__version__,
            "bf16": use_bf16,
            "compiled": args.compile,
            "batch_size": batch_size,
            "block_size": args.block_size,
            "config": config.to_dict(),
            "rows": rows,
        }
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
