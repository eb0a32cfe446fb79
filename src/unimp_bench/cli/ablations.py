"""`unimp-bench ablations run`: every ablation against the full model, over seeds."""

from pathlib import Path
from typing import Annotated

import typer

from unimp_bench.cli.common import (
    DataOption,
    Overwrite,
    ablations_app,
    friendly_errors,
    out,
    out_option,
    show_progress,
    split_list,
)


@ablations_app.command("run")
@friendly_errors
def ablations_run_command(
    config: Annotated[
        Path, typer.Option("--config", help="The base preset, e.g. tiny or configs/small.yaml.")
    ],
    data: DataOption,
    out_dir: out_option("Folder for the runs, results and the ablation table.", required=True),
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per variant (0, 1, ...).")] = 3,
    ablations: Annotated[
        str | None, typer.Option(help="Comma-separated ablations (default: every shipped one).")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks to evaluate (default: the trained ones).")
    ] = None,
    splits: Annotated[str, typer.Option(help="Comma-separated evaluation splits.")] = "test",
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config key of every run, e.g. train.steps=600."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Evaluate only the first N examples of each split (a quick look)."),
    ] = None,
    overwrite: Overwrite = False,
):
    """Train and evaluate the full model and each ablation with every seed; write the results, and a
    table of mean and standard error per metric (ablations.csv, ablations.md).

    Example: unimp-bench ablations run --config tiny --data data/synthetic --out ablations --seeds 3
    """
    from unimp_bench.ablations import run_ablations
    from unimp_bench.models.predictor import ModelEvalSettings

    summary = run_ablations(
        config,
        data,
        out_dir,
        ablations=split_list(ablations),
        seeds=seeds,
        tasks=split_list(tasks),
        splits=tuple(split_list(splits) or ["test"]),
        overrides=overrides or [],
        settings=ModelEvalSettings(limit=limit),
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    out.print((out_dir / "ablations.md").read_text(encoding="utf-8"), highlight=False)
    out.print(f"Wrote {out_dir / 'ablations.csv'} ({summary.height} rows) and {out_dir / 'ablations.md'}.")
