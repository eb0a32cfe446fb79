"""Training throughput of the tiny preset on this machine, through the real trainer (DeepSpeed engine,
CPU unless the launcher is used), and the cost of the cross-attention mask modes.

Each variant trains the same batches (same seed) for --steps optimizer steps; tokens/s is the median
of the logged windows after the first (which includes start-up). Prints one JSON line per figure;
ratios are against the `previous` mask (Flamingo's rule) measured in the same run.

    python benchmarks/train_throughput.py [--steps 60] [--out bench-out/throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.train import run_training

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "mask previous": ["model.mask=previous"],
    "mask exclusive": ["model.mask=exclusive"],
    "mask all": ["model.mask=all"],
    "no vision (text only)": ["model.fusion=none"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "throughput")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    args = parser.parse_args()
    os.environ.setdefault("UNIMP_BENCH_NO_PROGRESS", "1")
    data = args.out / "data"
    if not (data / "manifest.json").exists():
        prepare_synthetic_dataset(data, overwrite=True)
    figures = {}
    for name, overrides in VARIANTS.items():
        run = args.out / name.split(" (")[0].replace(" ", "-")
        run_training(
            args.config, data, run, max_steps=args.steps, overwrite=True, show_progress=False,
            overrides=overrides + ["train.log_every=10", f"train.save_every={10 * args.steps}"],
        )  # fmt: skip
        records = [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]
        figures[name] = statistics.median(r["tokens_per_s"] for r in records[1:] or records)
    reference = figures["mask previous"]
    for name, value in figures.items():
        print(json.dumps({
            "figure": f"tiny preset training tokens/s, {name}", "value": round(value, 1),
            "ratio_vs_mask_previous": round(value / reference, 3), "steps": args.steps,
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
