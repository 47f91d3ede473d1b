"""Write the results tables of data/models/*/results.json and data/bench/ into README.

    python scripts/update_readme_results.py          # rewrite the table between markers
    python scripts/update_readme_results.py --check  # exit 1 if README.md is stale

The table in the README is generated, never typed: tests/test_export.py runs --check.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from backpack.checkpoint import read_results

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"
MODELS = [("Backpack", "backpack"), ("Transformer", "transformer")]
HEADER = [
    "| model | parameters | steps | tokens | val perplexity (slice) | wall time "
    "| tokens/s | device |",
    "|---|---|---|---|---|---|---|---|",
]


def row(label: str, results_json: Path) -> str:
    """One markdown row from a results.json written by `python -m backpack.train`."""
    r = read_results(results_json)
    return (
        f"| {label} | {r['parameters'] / 1e6:.2f}M | {r['steps']:,} "
        f"| {r['tokens_seen'] / 1e6:.1f}M | {r['val_slice_ppl']:.2f} "
        f"| {r['wall_time_s']:.0f} s | {r['tokens_per_s']:,.0f} | {r['device']} |"
    )


def table() -> str:
    models = ROOT / "data" / "models"
    lines = HEADER + [
        row(label, models / f"{kind}-gutenberg" / "results.json")
        for label, kind in MODELS
    ]
    lines += [
        "",
        "At the paper's Micro width and depth (d=384, 6 layers, 6 heads, k=16; results "
        "and curves only, in `data/models/micro-comparison/`):",
        "",
    ]
    lines += HEADER + [
        row(f"{label} Micro", models / "micro-comparison" / f"{kind}-results.json")
        for label, kind in MODELS
    ]
    bench = json.loads(
        (ROOT / "data" / "bench" / "training_throughput_gpu.json").read_text()
    )
    lines += [
        "",
        "Training throughput side by side (`scripts/bench_training.py`, "
        f"{bench['device']}, "
        f"bf16, batch {bench['batch_size']} x {bench['block_size']}):",
        "",
        "| model | tokens/s | time vs Transformer |",
        "|---|---|---|",
    ]
    for measured in bench["rows"]:
        lines.append(f"| {measured['model']} | {measured['tokens_per_s']:,.0f} "
                     f"| {measured['time_ratio_vs_transformer']:.2f}x |")
    lines += [
        "",
        *speed_table(
            json.loads((ROOT / "data" / "bench" / "speed_cpu.json").read_text())
        ),
    ]
    lines += [
        "",
        *speed_table(
            json.loads((ROOT / "data" / "bench" / "speed_gpu.json").read_text()),
            seqs=(512, 1024),
        ),
    ]
    return "\n".join(lines)


def speed_table(bench: dict, seqs: tuple = (256,)) -> list[str]:
    """Chapter 10's ratios from one run of `backpack bench`; on a GPU also the peak
    memory at the longest context and the MFU."""
    ratios = bench["ratios"]
    names = {"backpack_reference": "reference-style", "backpack_chapter5": "per-sense",
             "backpack_fused": "fused"}
    rows = [(f"training step / Transformer's, {label} Backpack, T={seq}",
             f"{ratios[f'train_{name}_vs_transformer_T{seq}']:.2f}x")
            for seq in seqs for name, label in names.items()]
    measured = {
        (r["model"], r["seq"]): r for r in bench["training"] if "error" not in r
    }
    on_gpu = any("peak_mb" in r for r in measured.values())
    if on_gpu:
        longest = max(seq for _, seq in measured)
        rows += [(f"peak memory / Transformer's, {label} Backpack, T={longest}",
                  f"{measured[name, longest]['peak_vs_transformer']:.2f}x")
                 for name, label in names.items()]
        rows += [
            (f"MFU, Transformer / fused Backpack, T={seq}",
             f"{measured['transformer', seq]['mfu']:.0%} / "
             f"{measured['backpack_fused', seq]['mfu']:.0%}")
            for seq in seqs
        ]
    for batch in (1, 16):
        rows += [
            (f"cached / uncached generation tokens/s, Backpack, batch {batch}",
             f"{ratios[f'cache_speedup_backpack_b{batch}']:.2f}x"),
            (f"cached Backpack time / cached Transformer's, batch {batch}",
             f"{ratios[f'cached_backpack_vs_transformer_time_b{batch}']:.2f}x"),
            (f"the same with the vocabulary sense table, batch {batch}",
             f"{ratios[f'cached+table_backpack_vs_transformer_time_b{batch}']:.2f}x"),
        ]
    precision = "bf16" if bench["bf16"] else "fp32"
    threads = bench["threads"]
    machine = (
        f"{bench['device']}, the paper's Small size"
        if on_gpu
        else f"{bench.get('machine', bench['device'])}, "
        f"{threads} thread{'s' * (threads > 1)}"
    )
    return [
        f"Chapter 10's benchmark ({machine}, {precision}, "
        f"{bench['batch_tokens']:,} tokens per training step, 256 new tokens), ratios "
        "measured side by side in one run:",
        "",
        "| measure | ratio |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
    ]


def main(argv: list[str]) -> int:
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{START}\n{table()}\n{END}{tail}"
    if "--check" in argv:
        if updated != readme:
            print(
                "README.md's results table is out of date: run "
                "python scripts/update_readme_results.py"
            )
            return 1
        return 0
    (ROOT / "README.md").write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
