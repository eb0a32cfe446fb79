"""Mean and standard error over seeds of the Results in some folders: a method's seeds are the
results whose names differ only in `seedN` (e.g. UniMP-full-seed0, UniMP-full-seed1), or the same
method name found in several folders (one folder per seed).

    python benchmarks/seed_summary.py FOLDER [FOLDER ...] [--metrics HR@10,NDCG@10] [--task recommendation]

Prints one line per (method, task, split) with mean +- standard error (n = seeds), and "n/a" where the
method reported the split as not applicable.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

SEED = re.compile(r"-seed\d+")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--metrics", default="HR@10,NDCG@10")
    parser.add_argument("--task", default=None)
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    values: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for folder in args.folders:
        for path in sorted(folder.glob("*.json")):
            result = json.loads(path.read_text())
            if args.task and result["task"] != args.task:
                continue
            key = (SEED.sub("", result["method"]), result["task"], result["split"])
            for metric in metrics:
                value = result["scores"].get(metric)
                values[key][metric].append(math.nan if value is None else float(value))
    for (method, task, split), by_metric in sorted(values.items()):
        cells = []
        for metric in metrics:
            seen = by_metric.get(metric, [])
            if not seen or any(math.isnan(v) for v in seen):
                cells.append(f"{metric} n/a")
                continue
            mean = statistics.fmean(seen)
            se = statistics.stdev(seen) / math.sqrt(len(seen)) if len(seen) > 1 else math.nan
            cells.append(f"{metric} {mean:.4f} +- {se:.4f}")
        n = len(next(iter(by_metric.values()), []))
        print(f"{method}\t{task}\t{split}\tn={n}\t" + "\t".join(cells))


if __name__ == "__main__":
    main()
