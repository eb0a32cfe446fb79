"""`unimp-bench ablations run`: the full model and each ablation, trained and evaluated with several
seeds on the same preset, data and budget, summarized as the paper's Tables 3 and 8 are (mean and
standard error over seeds per metric).

Layout under OUT:
    examples/                          the examples every run is scored on (built once, seed 0)
    runs/<variant>/seed<k>/            one training run each (`unimp-bench train` format); a finished
                                       run whose configuration matches is reused, so an interrupted
                                       study resumes where it stopped
    results/                           one Result JSON per (variant, seed, task, split), method
                                       UniMP-<variant>-seed<k>: the normal results and leaderboard path
    ablations.csv                      long: variant, task, split, metric, mean, se, seeds
    ablations.md                       the table: a row per variant, mean +- se per headline metric

The standard error is the sample standard deviation over seeds divided by sqrt(seeds); with one seed
it is left empty.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import polars as pl

from unimp_bench.errors import UnimpError
from unimp_bench.evaluation.checkpoint import evaluate_checkpoint
from unimp_bench.evaluation.scoring import ScoringSettings
from unimp_bench.examples import build_examples, open_examples
from unimp_bench.fileio import write_bytes_atomic
from unimp_bench.models.predictor import ModelEvalSettings
from unimp_bench.tasks import EVALUATION_SPLITS, registry
from unimp_bench.training.config import ablation_names, dump_config, load_run_config
from unimp_bench.training.launcher import run_training

logger = logging.getLogger(__name__)
FULL = "full"  # the preset itself, no ablation
HEADLINE = ("HR@10", "NDCG@10", "MAE", "RMSE", "F1", "ROUGE-L", "BLEU-4")


def run_ablations(
    config: Path,
    data: Path,
    out: Path,
    *,
    ablations: list[str] | None = None,
    seeds: int = 3,
    tasks: list[str] | None = None,
    splits: tuple[str, ...] = ("test",),
    overrides: list[str] = (),
    settings: ModelEvalSettings = ModelEvalSettings(),
    scoring: ScoringSettings = ScoringSettings(),
    overwrite: bool = False,
    show_progress: bool = False,
) -> pl.DataFrame:
    """Train and evaluate the full model and every ablation with seeds 0..seeds-1; returns the long
    summary (also written as ablations.csv and ablations.md)."""
    chosen = ablation_names() if ablations is None else list(ablations)
    unknown = [name for name in chosen if name not in ablation_names()]
    if unknown:
        raise UnimpError(f"unknown ablation(s) {', '.join(unknown)}; shipped: {', '.join(ablation_names())}")
    if seeds < 1:
        raise UnimpError("--seeds must be at least 1")
    bad_splits = [s for s in splits if s not in EVALUATION_SPLITS]
    if bad_splits:
        raise UnimpError(f"--splits must be among {', '.join(EVALUATION_SPLITS)}")
    variants = [FULL, *chosen]
    base = load_run_config(config, list(overrides))
    task_names = list(tasks) if tasks else list(base.train.tasks)
    for name in task_names:
        registry().get(name)
    examples = out / "examples"
    if overwrite or not (examples / "manifest.json").is_file():
        build_examples(data, examples, task_names, list(splits), overwrite=True, show_progress=show_progress)
    built = open_examples(examples).manifest["tasks"]
    missing = [name for name in task_names if name not in built]
    if missing:
        raise UnimpError(f"{examples} lacks the examples of {', '.join(missing)}; pass --overwrite")
    records = []
    for variant in variants:
        ablation = None if variant == FULL else variant
        for seed in range(seeds):
            run = out / "runs" / variant / f"seed{seed}"
            run_overrides = [*overrides, f"train.seed={seed}"]
            _train_unless_done(config, data, run, run_overrides, ablation, overwrite, show_progress)
            for name in task_names:
                task = registry().get(name)
                for split in [s for s in splits if s in task.splits]:
                    result, _, _ = evaluate_checkpoint(
                        name,
                        run,
                        data,
                        split,
                        out / "results",
                        settings=settings,
                        scoring=scoring,
                        examples_dir=examples,
                        method=f"UniMP-{variant}-seed{seed}",
                        show_progress=show_progress,
                    )
                    records += [
                        {"variant": variant, "seed": seed, "task": name, "split": split, "metric": metric,
                         "value": float(value)}
                        for metric, value in result.scores.items()
                    ]  # fmt: skip
    summary = summarize(pl.DataFrame(records), variants)
    write_bytes_atomic(out / "ablations.csv", summary.write_csv().encode())
    write_bytes_atomic(out / "ablations.md", markdown_table(summary, seeds).encode())
    return summary


def _train_unless_done(config, data, run, overrides, ablation, overwrite, show_progress) -> None:
    """Train the run, or reuse it when it finished with exactly this configuration."""
    wanted = dump_config(load_run_config(config, overrides, ablation))
    saved = run / "config.yaml"
    if not overwrite and (run / "export").is_dir() and saved.is_file():
        if saved.read_text(encoding="utf-8") != wanted:
            raise UnimpError(f"{run} was trained with another configuration; pass --overwrite to train again")
        logger.info("reusing the finished run %s", run)
        return
    run_training(
        config, data, run, overrides=overrides, overwrite=True, show_progress=show_progress, ablation=ablation
    )


def summarize(records: pl.DataFrame, variants: list[str]) -> pl.DataFrame:
    """Mean and standard error over seeds per (variant, task, split, metric); NaN scores (a split the
    model cannot serve) stay NaN."""
    summary = (
        records.group_by("variant", "task", "split", "metric", maintain_order=True)
        .agg(
            mean=pl.col("value").mean(),
            se=pl.col("value").std(ddof=1) / pl.len().sqrt(),
            seeds=pl.len(),
        )
        .with_columns(pl.col("variant").replace_strict({v: i for i, v in enumerate(variants)}).alias("order"))
        .sort("order", maintain_order=True)
        .drop("order")
    )
    return summary


def markdown_table(summary: pl.DataFrame, seeds: int) -> str:
    """A row per variant, a column per (task, split, headline metric): mean +- se."""
    headline = summary.filter(pl.col("metric").is_in(HEADLINE))
    columns = headline.select("task", "split", "metric").unique(maintain_order=True).rows()
    lines = [
        f"Mean +- standard error over {seeds} seed(s).",
        "",
        "| variant | " + " | ".join(f"{t} {s} {m}" for t, s, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for variant in headline["variant"].unique(maintain_order=True).to_list():
        mine = headline.filter(pl.col("variant") == variant)
        rows = {(r["task"], r["split"], r["metric"]): r for r in mine.iter_rows(named=True)}
        lines.append(f"| {variant} | " + " | ".join(_cell(rows.get(column)) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict | None) -> str:
    if row is None or row["mean"] is None or math.isnan(row["mean"]):
        return "n/a"
    if row["se"] is None or math.isnan(row["se"]):
        return f"{row['mean']:.4f}"
    return f"{row['mean']:.4f} +- {row['se']:.4f}"
