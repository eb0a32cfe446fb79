"""Training throughput of the tiny preset on this machine, through the real trainer (DeepSpeed engine,
CPU unless the launcher is used), and the cost of the cross-attention mask modes.

Each variant trains the same batches (same seed) for --steps optimizer steps; tokens/s is the median
of the logged windows after the first (which includes start-up). A second measurement isolates the
mask: forward + backward of one model on the same 8 batches, switching the mask mode in interleaved
rounds (so machine drift hits every mode alike). Prints one JSON line per figure; ratios are against
the `previous` mask (Flamingo's rule) measured in the same run.

    python benchmarks/train_throughput.py [--steps 60] [--out bench-out/throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.training.launcher import run_training

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
    isolated = mask_cost(args.out / "mask-exclusive")
    for mode, seconds in isolated.items():
        print(json.dumps({
            "figure": f"forward+backward seconds per batch, mask {mode}", "value": round(seconds, 4),
            "ratio_vs_mask_previous": round(seconds / isolated["previous"], 3),
        }), flush=True)  # fmt: skip


def mask_cost(run: Path, batches: int = 8, rounds: int = 5) -> dict[str, float]:
    """Median seconds per forward+backward batch for each mask mode on identical inputs."""
    import dataclasses

    from unimp_bench.data.contract import open_dataset
    from unimp_bench.models.export import load_exported
    from unimp_bench.models.inputs import (
        ImageFeatureStore,
        ItemImages,
        catalog_image_paths,
        collate,
        encode_examples,
    )
    from unimp_bench.training.config import load_run_config
    from unimp_bench.training.plan import load_train_examples

    loaded = load_exported(run / "export")
    model = loaded.model.train()
    examples = load_train_examples(run, load_run_config(run / "config.yaml").train)
    dataset = open_dataset(Path(loaded.meta["provenance"]["dataset"]["path"]))
    images = ItemImages(dataset.root, catalog_image_paths(dataset), model.vision.image_size[0])
    store = ImageFeatureStore(model, images, 1.0)
    prepared = []
    for task in examples.values():
        for start in range(0, 16 * (batches // len(examples) + 1), 16):
            chunk = slice(start, start + 16)
            encoded = encode_examples(
                loaded.tokenizer, task.prompts[chunk], task.image_items[chunk], task.history_spans[chunk],
                task.targets[chunk], model.config.max_length,
            )  # fmt: skip
            batch = collate(encoded, loaded.tokenizer.pad_id)
            prepared.append((batch, *store.lookup(batch.image_items)))
    prepared = prepared[:batches]
    timings: dict[str, list[float]] = {"previous": [], "exclusive": [], "all": []}
    for _ in range(rounds):
        for mode in timings:
            model.config = dataclasses.replace(model.config, mask=mode)
            started = time.perf_counter()
            for batch, features, present in prepared:
                select = batch.task_mask | batch.context_mask
                logits = model(batch.input_ids, batch.attention_mask, features, present, select=select)
                logits.float().logsumexp(-1).mean().backward()
            timings[mode].append((time.perf_counter() - started) / len(prepared))
            model.zero_grad(set_to_none=True)
    return {mode: statistics.median(values) for mode, values in timings.items()}


if __name__ == "__main__":
    main()
