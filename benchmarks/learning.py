"""Does the tiny preset learn? Trains it on the synthetic corpus for a bounded number of optimizer
steps on the CPU, twice (full model and the "no vision" ablation, same seed, same batches), and
prints one JSON line per figure: HR@10 / NDCG@10 of recommendation on the test split of both models
and of popularity, measured in this run on the same examples.

The synthetic corpus plants a preference that only images show (each user favours one visual style),
so the full model should beat its no-vision ablation, and both should beat popularity.

    python benchmarks/learning.py [--steps 1500] [--out bench-out/learning]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from unimp_bench.baselines.popularity import training_counts
from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.data.contract import open_dataset
from unimp_bench.examples import build_examples, open_examples
from unimp_bench.metrics import ranking_metrics, target_rank_counts
from unimp_bench.models.export import load_exported
from unimp_bench.models.inputs import ImageFeatureStore, ItemImages, catalog_image_paths
from unimp_bench.models.item_content import encode_catalog
from unimp_bench.models.predict import PromptReader, next_token_scores
from unimp_bench.tasks import registry
from unimp_bench.training.launcher import run_training

REPO = Path(__file__).resolve().parents[1]
METRICS = ["HR@10", "NDCG@10"]


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def evaluate(export: Path, data: Path, examples) -> dict:
    loaded = load_exported(export)
    dataset = open_dataset(data)
    images = ItemImages(dataset.root, catalog_image_paths(dataset), loaded.model.vision.image_size[0])
    store = ImageFeatureStore(loaded.model, images, cache_gb=4.0)
    encode_catalog(loaded.model, dataset, loaded.tokenizer, store)  # content rows only
    reader = PromptReader(loaded.model, loaded.tokenizer, store, loaded.model.config.max_length)
    scores = next_token_scores(
        reader, examples["prompt"].to_list(), examples["image_items"].to_list(), "items"
    )
    greater, ties = target_rank_counts(scores, examples["target_item"].to_numpy())
    return ranking_metrics(greater, ties, METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "learning")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    os.environ.setdefault("UNIMP_BENCH_NO_PROGRESS", "1")
    data = args.out / "data"
    if not (data / "manifest.json").exists():
        prepare_synthetic_dataset(data, overwrite=True)
    examples_dir = args.out / "examples"
    if not (examples_dir / "manifest.json").exists():
        build_examples(data, examples_dir, ["recommendation"], ["test"], overwrite=True)
    test = open_examples(examples_dir).load(registry().get("recommendation"), "test")

    counts = training_counts(open_dataset(data)).astype(np.float64)
    greater, ties = target_rank_counts(np.tile(counts, (len(test), 1)), test["target_item"].to_numpy())
    pop = ranking_metrics(greater, ties, METRICS)
    for metric, value in pop.items():
        emit(figure=f"pop {metric}", value=round(value, 4), examples=len(test))

    common = [f"train.steps={args.steps}", *args.overrides]
    for name, extra in (("unimp-tiny", []), ("unimp-tiny no-vision", ["model.fusion=none"])):
        run = args.out / name.replace(" ", "-")
        started = time.perf_counter()
        summary = run_training(
            args.config, data, run, overrides=common + extra, overwrite=True,
            show_progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        scores = evaluate(run / "export", data, test)
        for metric, value in scores.items():
            emit(
                figure=f"{name} {metric}", value=round(value, 4), examples=len(test),
                ratio_vs_pop=round(value / pop[metric], 3) if pop[metric] else None,
                steps=summary["steps"], train_seconds=round(seconds, 1),
            )  # fmt: skip


if __name__ == "__main__":
    main()
