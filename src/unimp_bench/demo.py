"""`unimp-bench demo`: the whole benchmark path on the embedded synthetic corpus, on the CPU."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.api import dataset_statistics_table, prepare_synthetic_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.evaluation.checkpoint import evaluate_checkpoint
from unimp_bench.examples import build_examples
from unimp_bench.leaderboard import export_leaderboard
from unimp_bench.report import write_report
from unimp_bench.tasks import registry
from unimp_bench.training.launcher import run_training

DEMO_BASELINES = (("pop", "recommendation"), ("pop", "selection"), ("bm25", "search"))
DEMO_SPLITS = ["valid", "test", "new_user", "new_domain", "new_domain_finetune"]
# what --with-model evaluates: every task on test, and recommendation on both generalization splits
DEMO_MODEL_RUNS = (
    *(("test", task) for task in ("recommendation", "search", "preference", "explanation", "selection")),
    ("new_user", "recommendation"),
    ("new_domain", "recommendation"),
)


def run_demo(
    out: Path,
    overwrite: bool,
    say: Callable[[object], None],
    show_progress: bool = False,
    model_steps: int | None = None,
) -> pl.DataFrame:
    """prepare synthetic -> stats -> build examples -> baselines -> (train + eval the tiny UniMP) ->
    leaderboard, all under `out`."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UnimpError(f"output {out} already exists; pass --overwrite to replace it")
    if model_steps is not None and model_steps < 1:
        raise UnimpError("--model-steps must be at least 1")
    data, examples, results = out / "data", out / "examples", out / "results"
    stages = 5 if model_steps else 4
    say(f"1/{stages} preparing the synthetic corpus")
    prepare_synthetic_dataset(data, overwrite=True, show_progress=show_progress)
    say(dataset_statistics_table(data))
    say(f"2/{stages} building the task examples")
    build_examples(data, examples, overwrite=True, show_progress=show_progress)
    say(f"3/{stages} running the reference baselines")
    shutil.rmtree(results, ignore_errors=True)
    for model, task in DEMO_BASELINES:
        splits = [s for s in DEMO_SPLITS if s in registry().get(task).splits]
        run_baseline(model, task, data, results, splits, examples_dir=examples)
    if model_steps:
        say(f"4/{stages} training the tiny UniMP for {model_steps} steps on the CPU, then evaluating it")
        run = out / "run"
        overrides = [f"train.steps={model_steps}", f"train.save_every={model_steps}"]
        run_training(
            Path("tiny"), data, run, overrides=overrides, overwrite=True, show_progress=show_progress
        )
        for split, task in DEMO_MODEL_RUNS:
            evaluate_checkpoint(
                task, run, data, split, results, examples_dir=examples, show_progress=show_progress
            )
    say(f"{stages}/{stages} writing the leaderboard and the report")
    board = export_leaderboard(
        results, out / "leaderboard.csv", out / "leaderboard.md", out / "leaderboard.png"
    )
    write_report(results, out / "report.html", runs=[out / "run"] if model_steps else [], datasets=[data])
    return board
