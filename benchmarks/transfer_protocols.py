"""The held-out domain's two protocols on a prepared dataset (issue 16, part 2): pop and SASRec on
recommendation, BM25 on search, zero-shot (`new_domain`) and fine-tuned (`new_domain_finetune`)
trained on source+target and on the target part alone ("scratch"). Prints one JSON line per run and
then a summary: mean and standard error over seeds of HR@10 / NDCG@10 per (model, regime, share),
and the transfer gain (source+target minus scratch) with its standard error.

    .venv/bin/python benchmarks/transfer_protocols.py --data DATA [--seeds 0,1,2] [--shares 1.0,0.2]

DATA must hold a held-out domain with users (prepare with --new-domain DOMAIN). Examples: the
synthetic corpus (`unimp-bench prepare synthetic`, Office held out) or real files, e.g. Gift_Cards
held out next to All_Beauty and AMAZON_FASHION (`prepare amazon --k-core 2 --new-domain Gift_Cards`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from unimp_bench.baselines.registry import available_baselines
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.transfer import FinetuneSettings
from unimp_bench.examples import build_examples

RUNS = (("pop", "recommendation"), ("SASRec", "recommendation"), ("bm25", "search"))
SEEDED = {"SASRec"}


def config_for(model: str, folder: Path, seed: int) -> Path:
    spec = yaml.safe_load(available_baselines()[model.lower()].read_text())
    if model in SEEDED:
        spec["params"] = (spec.get("params") or {}) | {"seed": seed}
    path = folder / f"{model}-{seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def mean_se(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], float("nan")
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shares", default="1.0")
    parser.add_argument("--models", default=",".join(m for m, _ in RUNS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    shares = [float(s) for s in args.shares.split(",")]
    work = Path(tempfile.mkdtemp(prefix="transfer-"))
    build_examples(args.data, work / "examples", ["recommendation", "search"])
    wanted = args.models.split(",")
    runs: list[dict] = []
    for model, task in (r for r in RUNS if r[0] in wanted):
        for seed in seeds if model in SEEDED else [0]:
            config = config_for(model, work, seed)
            for regime in ("source+target", "target"):
                for share in shares:
                    # the share's users change with the seed too, so its spread counts in the error
                    settings = FinetuneSettings(regime=regime, target_share=share, seed=seed)
                    splits = (
                        ["new_domain", "new_domain_finetune"]
                        if regime == "source+target" and share == 1.0
                        else ["new_domain_finetune"]
                    )
                    start = time.perf_counter()
                    results = run_baseline(
                        model,
                        task,
                        args.data,
                        work / "results",
                        splits,
                        examples_dir=work / "examples",
                        config=config,
                        finetune=settings,
                    )
                    for result, _ in results:
                        row = {
                            "model": model,
                            "task": task,
                            "split": result.split,
                            "method": result.method,
                            "regime": regime if result.split == "new_domain_finetune" else "zero-shot",
                            "share": share,
                            "seed": seed,
                            "n": result.n_examples,
                            "candidates": result.provenance["config"].get("n_candidates"),
                            "HR@10": round(result.scores["HR@10"], 4),
                            "NDCG@10": round(result.scores["NDCG@10"], 4),
                            "not_applicable": result.provenance.get("not_applicable"),
                            "seconds": round(time.perf_counter() - start, 1),
                        }
                        print(json.dumps(row), flush=True)
                        runs.append(row)
    summary = {}
    for row in runs:
        if row["not_applicable"]:
            continue
        key = (row["model"], row["regime"], row["share"])
        summary.setdefault(key, {"HR@10": [], "NDCG@10": []})
        for metric in ("HR@10", "NDCG@10"):
            summary[key][metric].append(row[metric])
    for (model, regime, share), metrics in sorted(summary.items()):
        line = {"model": model, "regime": regime, "share": share, "seeds": len(metrics["HR@10"])}
        for metric, values in metrics.items():
            mean, se = mean_se(values)
            line[metric] = f"{mean:.4f} ± {se:.4f}"
        print(json.dumps(line))
    for model in {m for m, _, _ in summary}:
        for share in shares:
            both = [summary.get((model, r, share)) for r in ("source+target", "target")]
            if None in both:
                continue
            gains = [a - b for a, b in zip(both[0]["NDCG@10"], both[1]["NDCG@10"])]
            mean, se = mean_se(gains)
            print(
                json.dumps(
                    {"model": model, "share": share, "transfer_gain_NDCG@10": f"{mean:+.4f} ± {se:.4f}"}
                )
            )


if __name__ == "__main__":
    main()
