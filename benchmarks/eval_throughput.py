"""Evaluation throughput: exact full ranking (one forward pass, softmax over the item tokens) versus
transformers' generate() with beam search constrained to item tokens, on the same tiny checkpoint and
the same recommendation test examples, measured in one run. Prints one JSON line per figure:
examples/s of each, their ratio, and the share of examples whose top-10 lists are identical.

Without --run it trains the tiny preset on the synthetic corpus for --steps optimizer steps first.

    python benchmarks/eval_throughput.py [--steps 100] [--limit 200] [--beams 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.data.contract import open_dataset
from unimp_bench.examples import build_examples, open_examples
from unimp_bench.models.export import load_exported, resolve_export
from unimp_bench.models.predictor import ModelEvalSettings, UniMPPredictor
from unimp_bench.tasks import registry
from unimp_bench.training.launcher import run_training

REPO = Path(__file__).resolve().parents[1]


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="An existing run (trained on --out's dataset).")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds per mode, interleaved.")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "eval")
    args = parser.parse_args()
    os.environ.setdefault("UNIMP_BENCH_NO_PROGRESS", "1")
    data = args.out / "data"
    if not (data / "manifest.json").exists():
        prepare_synthetic_dataset(data, overwrite=True)
    examples_dir = args.out / "examples"
    if not (examples_dir / "manifest.json").exists():
        build_examples(data, examples_dir, ["recommendation"], ["test"], overwrite=True)
    run = args.run
    if run is None:
        run = args.out / "run"
        if not (run / "export").is_dir():
            overrides = [f"train.steps={args.steps}", "train.save_every=100000"]
            config = REPO / "configs" / "tiny.yaml"
            run_training(config, data, run, overrides=overrides, overwrite=True, show_progress=False)
    task = registry().get("recommendation")
    examples = open_examples(examples_dir).load(task, "test").head(args.limit)
    loaded = load_exported(resolve_export(run))
    dataset = open_dataset(data)
    predictors = {
        mode: UniMPPredictor(
            loaded,
            dataset,
            ModelEvalSettings(ranking=mode, beams=args.beams, batch_size=args.batch_size),
            mode,
        )
        for mode in ("exact", "beam")
    }
    for predictor in predictors.values():  # warm-up: allocator, first-call overheads
        predictor.predict(task, examples.head(4))
    seconds = {mode: [] for mode in predictors}
    outputs = {}
    for _ in range(args.rounds):
        for mode, predictor in predictors.items():
            started = time.perf_counter()
            outputs[mode] = predictor.predict(task, examples)
            seconds[mode].append(time.perf_counter() - started)
    rates = {mode: len(examples) / min(times) for mode, times in seconds.items()}
    common = {"examples": len(examples), "beams": args.beams, "model": loaded.meta["model"]["lm"]["family"]}
    for mode, rate in rates.items():
        emit(figure=f"{mode} examples_per_s", value=round(rate, 2), best_of=args.rounds, **common)
    emit(figure="exact/beam speed ratio", value=round(rates["exact"] / rates["beam"], 2), **common)
    exact = outputs["exact"]["ranked"].to_list()
    beam = outputs["beam"]["ranked"].to_list()
    identical = sum(a == b for a, b in zip(exact, beam)) / len(exact)
    emit(figure="identical top-10 share", value=identical, **common)


if __name__ == "__main__":
    main()
