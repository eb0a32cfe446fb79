"""`unimp-bench demo`: the whole benchmark path on the embedded synthetic corpus, on the CPU."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.api import dataset_statistics_table, prepare_synthetic_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.examples import build_examples
from unimp_bench.leaderboard import export_leaderboard

DEMO_BASELINES = (("pop", "recommendation"), ("pop", "selection"), ("bm25", "search"))
DEMO_SPLITS = ["valid", "test", "new_user", "new_domain"]


def run_demo(
    out: Path, overwrite: bool, say: Callable[[object], None], show_progress: bool = False
) -> pl.DataFrame:
    """prepare synthetic -> stats -> build examples -> baselines -> leaderboard, all under `out`."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UnimpError(f"output {out} already exists; pass --overwrite to replace it")
    data, examples, results = out / "data", out / "examples", out / "results"
    say("1/4 preparing the synthetic corpus")
    prepare_synthetic_dataset(data, overwrite=True, show_progress=show_progress)
    say(dataset_statistics_table(data))
    say("2/4 building the task examples")
    build_examples(data, examples, overwrite=True, show_progress=show_progress)
    say("3/4 running the reference baselines")
    shutil.rmtree(results, ignore_errors=True)
    for model, task in DEMO_BASELINES:
        run_baseline(model, task, data, results, DEMO_SPLITS, examples_dir=examples)
    say("4/4 writing the leaderboard")
    return export_leaderboard(
        results, out / "leaderboard.csv", out / "leaderboard.md", out / "leaderboard.png"
    )
