"""Throughput of `unimp-bench build` (examples/s per task) and of the pop / BM25 baseline runs.

Prepares (once, cached under bench-out/) a synthetic corpus larger than the demo's, then measures in
the same run:

  read        reading the interactions and items the builder needs (polars): the floor of any builder
  build:T     building every split of task T
  pop         popularity on recommendation, every evaluation split (examples already built)
  bm25        BM25 search, every evaluation split

Prints one JSON line per figure, each with its ratio to `read`.
Usage: python benchmarks/build.py [--users 20000] [--items 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import polars as pl

from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.examples import build_examples
from unimp_bench.tasks import EVALUATION_SPLITS, registry

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    root = REPO / "bench-out" / f"build-{args.users}-{args.items}"
    data = root / "data"
    if not (data / "manifest.json").exists():
        prepare_synthetic_dataset(data, users=args.users, items=args.items, overwrite=True)
    interactions = pl.read_parquet(data / "interactions.parquet").height

    start = time.perf_counter()
    pl.scan_parquet(data / "interactions.parquet").select(
        "user_idx", "item_idx", "rating", "split", "pos", "review_text"
    ).sort("user_idx", "pos").collect()
    pl.read_parquet(data / "items.parquet")
    read_seconds = time.perf_counter() - start
    print(json.dumps({"figure": "read", "seconds": round(read_seconds, 3), "interactions": interactions}))

    examples = root / "examples"
    shutil.rmtree(examples, ignore_errors=True)
    for task in registry().names():
        out = root / "examples-one"
        start = time.perf_counter()
        manifest = build_examples(data, out, [task], overwrite=True)
        seconds = time.perf_counter() - start
        count = sum(s["examples"] for s in manifest["tasks"][task]["splits"].values())
        print(
            json.dumps(
                {
                    "figure": f"build:{task}",
                    "seconds": round(seconds, 2),
                    "examples": count,
                    "examples_per_s": round(count / seconds),
                    "ratio_to_read": round(seconds / read_seconds, 1),
                }
            )
        )
    build_examples(data, examples, ["recommendation", "search"], list(EVALUATION_SPLITS), overwrite=True)
    for model, task in (("pop", "recommendation"), ("bm25", "search")):
        start = time.perf_counter()
        runs = run_baseline(
            model, task, data, root / "results", list(EVALUATION_SPLITS), examples_dir=examples
        )
        seconds = time.perf_counter() - start
        count = sum(result.n_examples for result, _ in runs)
        print(
            json.dumps(
                {
                    "figure": model,
                    "task": task,
                    "seconds": round(seconds, 2),
                    "examples": count,
                    "examples_per_s": round(count / seconds),
                    "ratio_to_read": round(seconds / read_seconds, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
