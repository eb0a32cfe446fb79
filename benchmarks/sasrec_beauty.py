"""Validation of the RecBole path: SASRec (and Pop) through `unimp-bench baselines run` on the S3-Rec
processed Amazon sequences, against the published full-ranking numbers.

Protocol of the published numbers (shared/reference/s3rec_full_ranking.csv): every user kept, last item
test, second last valid, full ranking over the catalog with the user's earlier items left out. So the
runs here set `exclude_seen: true`; everything else comes from the committed baselines/<model>.yaml,
or from a grid of candidate settings (--grid), the best chosen on VALID NDCG@10 only.

Prints one JSON line per run (valid and test scores, epochs, wall and CPU seconds) and, at the end, the
chosen run's test HR@10 / NDCG@10 next to the published ones with the relative difference.

Usage:
  python benchmarks/sasrec_beauty.py                          # the committed SASRec.yaml on Beauty
  python benchmarks/sasrec_beauty.py --grid                   # the hyper-parameter search on valid
  python benchmarks/sasrec_beauty.py --candidate 0 --candidate 3 --seeds 2020,2021,2022
                                   # candidates judged by their mean valid NDCG@10 over three seeds
  python benchmarks/sasrec_beauty.py --summarize run1.log run2.log   # the same choice from earlier
                                   # runs' printed lines (candidates run in parallel processes)
  python benchmarks/sasrec_beauty.py --sequences OTHER.txt --no-reference   # another domain
  python benchmarks/sasrec_beauty.py --reviews Gift_Cards_5.json.gz --grid  # a raw 5-core review file,
                                                      # turned into the same format first (S3-Rec's way)
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_SEQUENCES = SHARED / "data/amazon-raw/aHuiWang__CIKM2020-S3Rec/data/Beauty.txt"
REFERENCE = SHARED / "reference/s3rec_full_ranking.csv"
# candidates around the committed SASRec.yaml (the published training: one row per user, every
# position supervised, binary cross-entropy on one sampled negative, latest item last), chosen on valid
# NDCG@10 only (averaged over seeds with --seeds). Each entry overrides the YAML.
RECBOLE_ROWS = {"train_rows": "prefixes", "position_origin": "first", "length_buckets": True}
GRID = [
    {},
    RECBOLE_ROWS | {"loss_type": "BPR"},  # RecBole's training: one pre-augmented row per position
    RECBOLE_ROWS,  # the same with the published binary cross-entropy
    {"loss_type": "BPR"},  # the published training with RecBole's pairwise loss
    {"position_origin": "first"},  # the published training with RecBole's position numbering
    {"hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2},
    {"learning_rate": 0.0005},
    RECBOLE_ROWS | {"loss_type": "CE", "train_neg_sample_args": None},  # SASRec-CE.yaml: a softmax
]
# the other sequential baselines (issue 16 part 5): the committed YAML (a softmax over the catalog,
# RecBole's default for them) and the pairwise objective on one sampled negative that their published
# implementations train with (GRU4Rec's BPR/TOP1, Caser's and HGN's negative sampling)
PAIRWISE = {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
SEQUENCE_ROWS = {"train_rows": "sequences"}
# Caser's and HGN's published rows: windows of the last 5 items predicting the next 3, 3 negatives each
WINDOWS = {"train_rows": "windows", "max_history": 5, "train_neg_sample_args": None}
GRIDS = {
    "SASRec": GRID,
    "GRU4Rec": [{}, PAIRWISE],
    # 2: the published rows and binary cross-entropy; 3: that without RecBole's L2 term (the sum of
    # the embedding and layer weight norms; the published code has a weight decay of 1e-6 instead)
    "Caser": [
        {},
        PAIRWISE,
        WINDOWS | {"loss_type": "BCE"},
        WINDOWS | {"loss_type": "BCE", "reg_weight": 0.0},
        # the published rows, loss and output (a separate output table and item bias over [z, user])
        WINDOWS | {"loss_type": "BCE", "caser_output": "published"},
        WINDOWS | {"loss_type": "BCE", "caser_output": "published", "reg_weight": 0.0},  # all of it
    ],
    # 2 and 3: the HGN paper's window of the last 5 items, with each objective; 4: the published rows
    # and pairwise loss
    "HGN": [
        {},
        PAIRWISE,
        {"max_history": 5},
        PAIRWISE | {"max_history": 5},
        WINDOWS | {"loss_type": "BPR"},
    ],
    # 0: the committed YAML (the published rows, mask ratio 0.6: the same as 2 since it was chosen);
    # 1-3: the published training rows (one cloze-masked row per user), with RecBole's mask ratio, the
    # published Beauty one (0.6), and that with the published Beauty dropout (hidden 0.5, attention
    # 0.2); 4: RecBole's own training (one masked row per position; about 10 minutes an epoch here)
    "BERT4Rec": [
        {},
        SEQUENCE_ROWS | {"mask_ratio": 0.2},
        SEQUENCE_ROWS | {"mask_ratio": 0.6},
        SEQUENCE_ROWS | {"mask_ratio": 0.6, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.2},
        {"train_rows": "prefixes", "mask_ratio": 0.2},
    ],
}
# grid keys that are the baseline's own fields rather than RecBole options
OWN_FIELDS = {
    "stopping_step",
    "epochs",
    "max_history",
    "train_rows",
    "position_origin",
    "length_buckets",
    "window_targets",
    "window_negatives",
    "caser_output",
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepared(sequences: Path, work: Path) -> tuple[Path, Path]:
    from unimp_bench.data.sequences import prepare_sequences_dataset
    from unimp_bench.examples import build_examples

    data = work / f"data-{sequences.stem}"
    examples = work / f"examples-{sequences.stem}"
    if not (data / "manifest.json").exists():
        prepare_sequences_dataset(sequences, data, overwrite=True)
    if not _current(examples):  # none yet, or built by an older task version
        build_examples(data, examples, ["recommendation"], ["valid", "test"], overwrite=True)
    return data, examples


def _current(examples: Path) -> bool:
    """Whether `examples` holds this version's recommendation examples of valid and test."""
    from unimp_bench.errors import UnimpError
    from unimp_bench.examples import open_examples
    from unimp_bench.tasks import registry

    if not (examples / "manifest.json").exists():
        return False
    try:
        example_set = open_examples(examples)
        for split in ("valid", "test"):
            example_set.entry(registry().get("recommendation"), split)
    except UnimpError:
        return False
    return True


def run(model: str, overrides: dict, params: dict, data: Path, examples: Path, work: Path, tag: str) -> dict:
    from unimp_bench.baselines.registry import available_baselines
    from unimp_bench.baselines.runner import run_baseline

    spec = yaml.safe_load(available_baselines()[model.lower()].read_text(encoding="utf-8"))
    own = {k: v for k, v in overrides.items() if k in OWN_FIELDS}
    options = {k: v for k, v in overrides.items() if k not in OWN_FIELDS}
    spec["params"] = spec.get("params", {}) | own | params | {"exclude_seen": True}
    if "recbole" in spec["params"] or options:
        spec["params"]["recbole"] = spec["params"].get("recbole", {}) | options
    config = work / f"{model}-{tag}.yaml"
    config.write_text(yaml.safe_dump(spec), encoding="utf-8")
    wall, cpu = time.perf_counter(), cpu_seconds()
    results = run_baseline(
        model,
        "recommendation",
        data,
        work / f"results-{tag}",
        ["valid", "test"],
        examples_dir=examples,
        config=config,
        show_progress=True,
    )
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    by_split = {result.split: result for result, _ in results}
    training = by_split["test"].provenance["config"].get("training", {})
    return {
        "model": model,
        "tag": tag,
        "overrides": overrides,
        "seed": spec["params"].get("seed"),
        "valid": {
            k: round(v, 4)
            for k, v in by_split["valid"].scores.items()
            if k.endswith("@10") or k.endswith("@5")
        },
        "test": {
            k: round(v, 4)
            for k, v in by_split["test"].scores.items()
            if k.endswith("@10") or k.endswith("@5")
        },
        "epochs_run": training.get("epochs_run"),
        "best_epoch": training.get("best_epoch"),
        "seconds_per_epoch": training.get("seconds_per_epoch"),
        "valid_curve": training.get("valid_curve"),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
    }


def published(dataset: str, method: str) -> dict[str, float]:
    with open(REFERENCE, newline="", encoding="utf-8") as handle:
        return {
            r["metric"]: float(r["value"])
            for r in csv.DictReader(handle)
            if r["dataset"] == dataset and r["method"] == method
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequences", type=Path, default=DEFAULT_SEQUENCES)
    parser.add_argument("--work", type=Path, default=REPO / "bench-out" / "sasrec")
    parser.add_argument("--reviews", type=Path, default=None, help="raw review file to convert first")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--grid", action="store_true", help="search the candidate settings on valid")
    parser.add_argument("--candidate", type=int, action="append", help="run only these grid entries")
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (quick looks only)")
    parser.add_argument(
        "--seeds",
        type=lambda text: [int(x) for x in text.split(",")],
        default=None,
        help="training seeds, comma-separated: each candidate runs with each, and is judged by its mean "
        "valid score (default: the YAML's one seed)",
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        default=None,
        help="choose from the printed output of earlier runs",
    )
    parser.add_argument("--no-reference", action="store_true", help="no published numbers to compare with")
    args = parser.parse_args()

    import torch

    print(json.dumps({"torch_threads": torch.get_num_threads()}))
    if args.reviews is not None:
        from unimp_bench.data.sequences import write_sequence_file

        domain = args.reviews.name.split(".")[0].removeprefix("reviews_").removesuffix("_5")
        args.sequences = args.work / f"{domain}.txt"
        args.work.mkdir(parents=True, exist_ok=True)
        converted = write_sequence_file(args.reviews, args.sequences)
        print(json.dumps({"converted": str(args.reviews), **converted}))
        args.no_reference = True
    if args.summarize:  # choose from runs printed earlier (e.g. candidates run in parallel)
        runs = [
            json.loads(line)
            for path in args.summarize
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("{") and '"valid"' in line
        ]
        print(json.dumps(summarize(runs, None if args.no_reference else published_for(args))))
        return
    data, examples = prepared(args.sequences, args.work)
    params = {"epochs": args.epochs} if args.epochs else {}
    grid = GRIDS.get(args.model, GRID)
    candidates = list(enumerate(grid if args.grid or args.candidate else [{}]))
    if args.candidate:
        candidates = [candidates[i] for i in args.candidate]
    runs = []
    for index, overrides in candidates:
        for seed in args.seeds or [None]:
            tag = f"{args.model}-{args.sequences.stem}-{index}" + (f"-seed{seed}" if seed is not None else "")
            seeded = params | ({"seed": seed} if seed is not None else {})
            outcome = run(args.model, overrides, seeded, data, examples, args.work, tag)
            outcome["candidate"] = index
            print(json.dumps(outcome), flush=True)
            runs.append(outcome)
    print(json.dumps(summarize(runs, None if args.no_reference else published_for(args))))


def published_for(args) -> dict[str, float]:
    reference = published(args.sequences.stem, args.model)
    return {k: reference[k] for k in ("HR@10", "NDCG@10") if k in reference}


def summarize(runs: list[dict], reference: dict[str, float] | None) -> dict:
    """The candidate with the best valid NDCG@10, averaged over its seeds (valid only: test is read
    for the chosen one), with its mean test scores and their spread over seeds."""
    by_candidate: dict[int | str, list[dict]] = {}  # grid entry (or a label in a records file)
    for outcome in runs:
        by_candidate.setdefault(outcome["candidate"], []).append(outcome)

    def mean(values) -> float:
        values = list(values)
        return round(sum(values) / len(values), 4)

    table = {
        index: {
            "overrides": group[0]["overrides"],
            "seeds": [r.get("seed") for r in group],
            "valid_NDCG@10": mean(r["valid"]["NDCG@10"] for r in group),
        }
        for index, group in sorted(by_candidate.items())
    }
    chosen = max(table, key=lambda index: table[index]["valid_NDCG@10"])
    group = by_candidate[chosen]
    summary = {
        "candidates": table,
        "chosen": chosen,
        "overrides": table[chosen]["overrides"],
        "test": {k: mean(r["test"][k] for r in group) for k in group[0]["test"]},
        "test_range": {
            k: [min(r["test"][k] for r in group), max(r["test"][k] for r in group)]
            for k in ("HR@10", "NDCG@10")
        },
    }
    if reference:
        summary["published"] = reference
        summary["relative_difference"] = {
            k: round(summary["test"][k] / v - 1.0, 4) for k, v in reference.items()
        }
    return summary


if __name__ == "__main__":
    main()
