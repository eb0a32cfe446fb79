"""Runner overhead: `unimp-bench baselines run` versus RecBole's own pipeline on the same data and config.

Both train the same model for the same number of epochs (early stopping off) with a validation pass
after every epoch, then score the test users:

  ours    run_baseline(): export, RecBole dataset + train loader, our loop, our full-sort scoring with
          exact rank counts, Result JSON + predictions written
  direct  the same atomic files, then RecBole's Config, create_dataset, data_preparation,
          Trainer.fit(train, valid) and Trainer.evaluate(test) (RecBole's evaluator)

Prints one JSON line per model: wall times, the overhead (ours without length buckets / direct - 1;
target < 5%) and the speed-up with length buckets (the shipped SASRec/GRU4Rec setting).
Usage: python benchmarks/recbole_overhead.py [--users 3000] [--items 600] [--epochs 5] [--models SASRec,BPR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml


def direct(model: str, spec: dict, data: Path, scratch: Path) -> float:
    from unimp_bench.baselines.recbole.params import RecBoleParams, recbole_options, resolve_model_class
    from unimp_bench.baselines.recbole_compat import literal_config, prepare_recbole, quiet_recbole
    from unimp_bench.baselines.recbole_export import export_recbole
    from unimp_bench.config import from_mapping
    from unimp_bench.data.contract import open_dataset

    prepare_recbole()
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import ModelType, get_trainer, init_seed

    params = from_mapping(RecBoleParams, spec["params"], model)
    started = time.perf_counter()
    model_class = resolve_model_class(params)
    layout = "sequential" if model_class.type == ModelType.SEQUENTIAL else "general"
    exported = export_recbole(open_dataset(data), scratch / "atomic", layout, params.max_history)
    # the runner's own RecBole config; only what RecBole's trainer needs on top differs
    options = recbole_options(params, scratch / "atomic", layout, max(1, exported.longest_history)) | {
        "eval_batch_size": params.eval_batch_size * 64,
        "valid_metric": "NDCG@10",
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [3, 5, 10],
    }
    config = literal_config(params.model, "unimp", options)
    with quiet_recbole():
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        recommender = model_class(config, train.dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
        trainer.fit(train, valid, saved=False, show_progress=False)
        trainer.evaluate(test, load_best_model=False, show_progress=False)
    return time.perf_counter() - started


def ours(model: str, config: Path, data: Path, examples: Path, out: Path) -> float:
    from unimp_bench.baselines.runner import run_baseline

    started = time.perf_counter()
    run_baseline(model, "recommendation", data, out, ["test"], examples_dir=examples, config=config)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", default="SASRec,BPR")
    args = parser.parse_args()

    from unimp_bench.baselines.registry import available_baselines
    from unimp_bench.data.api import prepare_synthetic_dataset
    from unimp_bench.examples import build_examples

    with tempfile.TemporaryDirectory(prefix="recbole-overhead-") as folder:
        scratch = Path(folder)
        os.chdir(scratch)  # RecBole's trainer writes log_tensorboard/ into the working directory
        data = scratch / "data"
        prepare_synthetic_dataset(data, users=args.users, items=args.items)
        examples = scratch / "examples"
        build_examples(data, examples, ["recommendation"], ["test"])
        for model in args.models.split(","):
            spec = yaml.safe_load(available_baselines()[model.lower()].read_text(encoding="utf-8"))
            spec["params"] |= {"epochs": args.epochs, "stopping_step": args.epochs}
            config = scratch / f"{model}.yaml"
            config.write_text(yaml.safe_dump(spec), encoding="utf-8")
            direct_seconds = direct(model, spec, data, scratch / f"direct-{model}")
            our_seconds = ours(model, config, data, examples, scratch / f"results-{model}")
            # the same loop without length buckets: the runner's own overhead, like for like
            plain = spec | {"params": spec["params"] | {"length_buckets": False}}
            config.write_text(yaml.safe_dump(plain), encoding="utf-8")
            plain_seconds = ours(model, config, data, examples, scratch / f"results-plain-{model}")
            print(
                json.dumps(
                    {
                        "model": model,
                        "epochs": args.epochs,
                        "ours_seconds": round(our_seconds, 2),
                        "ours_without_length_buckets_seconds": round(plain_seconds, 2),
                        "direct_seconds": round(direct_seconds, 2),
                        "overhead": round(plain_seconds / direct_seconds - 1.0, 4),
                        "speedup_with_buckets": round(direct_seconds / our_seconds, 2),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
