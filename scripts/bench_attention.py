"""Benchmark backpack.attention's backends (chapter 3): plain, sdpa, tiled, flash.

    PYTHONPATH=. python scripts/bench_attention.py --device cuda \
        --out data/bench/attention_gpu.json
    PYTHONPATH=. python scripts/bench_attention.py --device cpu \
        --out /tmp/attention_cpu.json

For each shape, dtype and pass (forward alone under no_grad, forward+backward) it times
every variant (warm-up, then the median of repeats; CUDA events on a GPU), records the
peak memory on CUDA, checks the output against the plain version, prints a side-by-side
table with speed-ups relative to plain, and writes JSON {device, torch, dtypes, rows:
[{shape, dtype, mode, variant, ms, peak_mb, speedup_vs_plain}]}.
Needs only torch and this repository. Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

# the repository, if not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backpack.attention import HAS_FLASH_ATTN, attention  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def shapes_for(
    device: str, quick: bool
) -> list[tuple[str, tuple[int, int, int, int, int]]]:
    """(label, (batch, heads, seq, qk_head_dim, v_head_dim)) for the device."""
    if device == "cuda":
        seqs, batch, sense_seqs = (256, 512, 1024, 2048), 8, (512, 1024)
    else:
        seqs, batch, sense_seqs = (128, 256, 512), 4, (128, 256)
    if quick:
        seqs, sense_seqs = seqs[:1], sense_seqs[:1]
    # Backpack-Micro: 6 heads of 64
    shapes = [("transformer", (batch, 6, n, 64, 64)) for n in seqs]
    # k=16 senses, d/k=24, d=384
    shapes += [("sense sum", (batch, 16, n, 24, 384)) for n in sense_seqs]
    return shapes


def variants_for(dtype: torch.dtype, dh: int, dv: int, device: str) -> list[str]:
    names = ["plain", "sdpa", "tiled"]
    if (
        HAS_FLASH_ATTN
        and device == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and dh == dv <= 256
    ):
        names.append("flash")
    return names


def time_ms(fn, device: str, warmup: int, repeats: int) -> float:
    """Median milliseconds of fn() after warm-up; CUDA events on a GPU, perf_counter
    on a CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mb(fn, device: str) -> tuple[float | None, float | None]:
    """(peak allocated MiB during one fn() call, the part of it above what was allocated
    before)."""
    if device != "cuda":
        return None, None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak / 2**20, (peak - base) / 2**20


def bench_case(label, shape, dtype_name, mode, device, args) -> list[dict]:
    b, h, n, dh, dv = shape
    dtype = DTYPES[dtype_name]
    gen = torch.Generator(device=device).manual_seed(0)
    needs_grad = mode == "fwd+bwd"
    q = torch.randn(
        b, h, n, dh, device=device, dtype=dtype, generator=gen
    ).requires_grad_(needs_grad)
    k = torch.randn(
        b, h, n, dh, device=device, dtype=dtype, generator=gen
    ).requires_grad_(needs_grad)
    v = torch.randn(
        b, h, n, dv, device=device, dtype=dtype, generator=gen
    ).requires_grad_(needs_grad)
    out_grad = torch.randn(b, h, n, dv, device=device, dtype=dtype, generator=gen)
    with torch.no_grad():
        reference = attention(q, k, v, backend="plain").float()
    shape_text = f"{b}x{h}x{n}x{dh}" if dh == dv else f"{b}x{h}x{n}x({dh},{dv})"
    rows = []
    for variant in variants_for(dtype, dh, dv, device):
        def run(variant=variant):  # called in this iteration only
            if needs_grad:
                out = attention(q, k, v, backend=variant)
                return torch.autograd.grad(out, (q, k, v), out_grad)
            with torch.no_grad():
                return attention(q, k, v, backend=variant)

        row = {
            "label": label,
            "shape": shape_text,
            "batch": b,
            "heads": h,
            "seq": n,
            "qk_dim": dh,
            "v_dim": dv,
            "dtype": dtype_name,
            "mode": mode,
            "variant": variant,
        }
        try:
            with torch.no_grad():
                row["max_abs_err_vs_plain"] = (
                    (attention(q, k, v, backend=variant).float() - reference)
                    .abs()
                    .max()
                    .item()
                )
            row["ms"] = time_ms(run, device, args.warmup, args.repeats)
            row["peak_mb"], row["extra_mb"] = peak_mb(run, device)
        except torch.OutOfMemoryError:
            row.update(ms=None, peak_mb=None, extra_mb=None, error="out of memory")
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    plain_ms = rows[0]["ms"]
    for row in rows:
        row["speedup_vs_plain"] = (
            plain_ms / row["ms"] if plain_ms and row["ms"] else None
        )
    return rows


def print_table(rows: list[dict], device: str) -> None:
    variants = ["plain", "sdpa", "tiled"] + (
        ["flash"] if any(r["variant"] == "flash" for r in rows) else []
    )
    header = f"{'shape':<22} {'dtype':<5} {'pass':<8}" + "".join(
        f" {name + ' ms (x)':>18}" for name in variants
    )
    if device == "cuda":
        header += "".join(f" {name + ' MB':>11}" for name in variants)
    print(header)
    groups: dict[tuple, dict] = {}
    for row in rows:
        groups.setdefault((row["shape"], row["dtype"], row["mode"]), {})[
            row["variant"]
        ] = row
    for (shape, dtype, mode), by_variant in groups.items():
        line = f"{shape:<22} {dtype:<5} {mode:<8}"
        for name in variants:
            r = by_variant.get(name)
            cell = (
                "-"
                if r is None or r["ms"] is None
                else f"{r['ms']:.3f} ({r['speedup_vs_plain']:.2f}x)"
            )
            line += f" {cell:>18}"
        if device == "cuda":
            for name in variants:
                r = by_variant.get(name)
                peak = (
                    "-" if r is None or r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
                )
                line += f" {peak:>11}"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="where to write the JSON results"
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda" if torch.cuda.is_available() else "cpu",
    )
    parser.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated among fp32,bf16,fp16 "
        "(default: bf16,fp32 on cuda, fp32 on cpu)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up calls (default 3 cuda, 1 cpu)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls (default 10 cuda, 3 cpu)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one shape of each kind: a smoke test"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    dtype_names = (
        args.dtypes or ("bf16,fp32" if args.device == "cuda" else "fp32")
    ).split(",")
    for name in dtype_names:
        if name not in DTYPES:
            parser.error(f"unknown dtype {name!r}; choose among {', '.join(DTYPES)}")
    args.warmup = (
        args.warmup if args.warmup is not None else (3 if args.device == "cuda" else 1)
    )
    args.repeats = (
        args.repeats
        if args.repeats is not None
        else (10 if args.device == "cuda" else 3)
    )

    if args.device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        cpu = platform.processor() or platform.machine()
        device_name = f"CPU ({cpu}, {torch.get_num_threads()} threads)"
    flash_version = None
    if HAS_FLASH_ATTN:
        import flash_attn
        flash_version = getattr(flash_attn, "__version__", "installed")
    print(
        f"{device_name} | torch {torch.__version__} | "
        f"flash_attn {flash_version or 'not installed'}",
        flush=True,
    )

    started = time.perf_counter()
    rows = []
    for dtype_name in dtype_names:
        for label, shape in shapes_for(args.device, args.quick):
            for mode in ("fwd", "fwd+bwd"):
                rows += bench_case(label, shape, dtype_name, mode, args.device, args)
    print_table(rows, args.device)
    elapsed = time.perf_counter() - started
    print(
        f"({elapsed:.1f} s; causal attention; fwd under no_grad, fwd+bwd = forward and "
        f"autograd.grad for q, k, v; median of {args.repeats} after {args.warmup} "
        "warm-up; peak MB = max allocated, inputs included)"
    )

    result = {
        "device": device_name,
        "device_type": args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "flash_attn": flash_version,
        "dtypes": dtype_names,
        "dtype": dtype_names[0] if len(dtype_names) == 1 else ",".join(dtype_names),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32
        if args.device == "cuda"
        else None,
        "causal": True,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seconds": round(elapsed, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
