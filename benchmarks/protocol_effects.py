"""How the ranking protocol moves baseline numbers on a real dataset (issue 16): every ranking model run
with the user's earlier items left out (the default) and kept, on the same examples. Prints one JSON
line per (model, task, split, protocol, seed) with HR@10 and NDCG@10, then the mean and standard error
over seeds for the seeded models.

    .venv/bin/python benchmarks/protocol_effects.py [--raw ../shared/data/amazon-raw/ncloud50__giftcard]
        [--k-core 5] [--seeds 0,1,2] [--models pop,bm25,SASRec]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml

from unimp_bench.baselines.registry import available_baselines, load_baseline
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.examples import build_examples

REPO = Path(__file__).resolve().parents[1]
SEEDED = {"SASRec"}


def config_for(model: str, folder: Path, exclude: bool, seed: int) -> Path:
    spec = yaml.safe_load(available_baselines()[model.lower()].read_text())
    params = spec.get("params") or {}
    params["exclude_seen"] = exclude
    if model in SEEDED:
        params["seed"] = seed
    spec["params"] = params
    path = folder / f"{model}-{exclude}-{seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", type=Path, default=REPO.parent / "shared/data/amazon-raw/ncloud50__giftcard")
    parser.add_argument("--k-core", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="pop,bm25,SASRec")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="protocol-"))
    prepare_amazon_dataset(args.raw, work / "data", k_core=args.k_core)
    build_examples(work / "data", work / "examples")
    summary: dict[tuple, list[dict]] = {}
    for model in args.models.split(","):
        task = "search" if "search" in load_baseline(model).tasks else "recommendation"
        for exclude in (True, False):
            for seed in seeds if model in SEEDED else [None]:
                config = config_for(model, work, exclude, seed or 0)
                out = work / f"results-{model}-{exclude}-{seed}"
                for result, _ in run_baseline(
                    model,
                    task,
                    work / "data",
                    out,
                    ["test", "new_user"],
                    examples_dir=work / "examples",
                    config=config,
                ):
                    row = {
                        "model": model,
                        "task": task,
                        "split": result.split,
                        "protocol": "exclude" if exclude else "keep",
                        "seed": seed,
                        "n": result.n_examples,
                        "HR@10": result.scores.get("HR@10"),
                        "NDCG@10": result.scores.get("NDCG@10"),
                    }
                    print(json.dumps(row), flush=True)
                    summary.setdefault((model, result.split, row["protocol"]), []).append(row)
    for (model, split, protocol), rows in summary.items():
        figure = {"summary": model, "split": split, "protocol": protocol, "runs": len(rows)}
        for metric in ("HR@10", "NDCG@10"):
            values = [r[metric] for r in rows if r[metric] is not None]
            if values:
                mean = statistics.fmean(values)
                se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
                figure |= {f"{metric}_mean": round(mean, 4), f"{metric}_se": round(se, 4)}
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
