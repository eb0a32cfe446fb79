"""Commands that show what is registered: `tasks list|show`, `baselines list`, and the RecBole export."""

from typing import Annotated

import typer

from unimp_bench.cli.common import (
    AsJson,
    Data,
    Overwrite,
    baselines_app,
    friendly_errors,
    out,
    out_option,
    print_json,
    print_listing,
    tasks_app,
)


@tasks_app.command("list")
@friendly_errors
def tasks_list_command(as_json: AsJson = False):
    """List every registered task with its kind, version, metrics and splits (names never cut).

    Example: unimp-bench tasks list --json
    """
    from unimp_bench.tasks import registry

    tasks = list(registry().tasks.values())
    if as_json:
        print_json(
            [
                {
                    "task": t.name,
                    "version": t.version,
                    "kind": t.builder,
                    "metrics": list(t.metrics),
                    "splits": list(t.splits),
                }
                for t in tasks
            ]
        )
        return
    rows = [[t.name, str(t.version), t.builder, ", ".join(t.metrics), ", ".join(t.splits)] for t in tasks]
    print_listing(["task", "version", "kind", "metrics", "splits"], rows, whole=("task", "kind"))


@tasks_app.command("show")
@friendly_errors
def tasks_show_command(name: Annotated[str, typer.Argument(help="Task name, e.g. search.")]):
    """Print one task's full definition as YAML.

    Example: unimp-bench tasks show selection
    """
    import yaml

    from unimp_bench.config import to_mapping
    from unimp_bench.tasks import registry

    out.print(
        yaml.safe_dump(to_mapping(registry().get(name)), sort_keys=False, allow_unicode=True), highlight=False
    )


@baselines_app.command("list")
@friendly_errors
def baselines_list_command(as_json: AsJson = False):
    """List the shipped baselines: their engine and the task kinds each serves (names never cut).

    Example: unimp-bench baselines list --json
    """
    from unimp_bench.baselines.registry import available_baselines, load_baseline

    specs = [load_baseline(name) for name in available_baselines()]
    if as_json:
        print_json([{"baseline": s.name, "engine": s.engine, "kinds": list(s.kinds)} for s in specs])
        return
    rows = [[s.name, s.engine, ", ".join(s.kinds)] for s in specs]
    print_listing(["baseline", "engine", "kinds"], rows, whole=("baseline",))


@baselines_app.command("export")
@friendly_errors
def baselines_export_command(
    data: Data,
    out_dir: out_option("Folder for the RecBole atomic files (RecBole's data_path).", required=True),
    layout: Annotated[
        str, typer.Option(help="sequential (pre-augmented item_id_list rows) or general.")
    ] = "sequential",
    max_history: Annotated[
        int, typer.Option("--max-history", min=1, help="Items kept in each sequential history.")
    ] = 50,
    name: Annotated[str, typer.Option(help="RecBole dataset name (the files' prefix).")] = "unimp",
    overwrite: Overwrite = False,
):
    """Write RecBole atomic files with OUR train/valid/test split, for running RecBole yourself
    (set benchmark_filename: [train, valid, test] and load_col: ~ in its config).

    Example: unimp-bench baselines export data/synthetic --out recbole-data --layout general
    """
    from unimp_bench.baselines.recbole_export import export_recbole
    from unimp_bench.data.contract import open_dataset

    exported = export_recbole(
        open_dataset(data), out_dir, layout=layout, max_history=max_history, name=name, overwrite=overwrite
    )
    for part, path in exported.files.items():
        out.print(f"{part:<6} {path}", highlight=False)
