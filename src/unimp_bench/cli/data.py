"""Commands that make data: `prepare amazon|synthetic|sequences`, `stats` and `build`."""

from pathlib import Path
from typing import Annotated

import typer

from unimp_bench.cli.common import (
    AsJson,
    Data,
    Overwrite,
    app,
    friendly_errors,
    out,
    out_option,
    prepare_app,
    print_json,
    seed_option,
    show_progress,
    split_list,
)

DatasetOut = out_option("Output dataset folder (written atomically).", required=True)


@prepare_app.command("amazon")
@friendly_errors
def prepare_amazon_command(
    raw_dir: Annotated[
        Path, typer.Option("--raw-dir", help="Folder with raw review (and meta) files, searched recursively.")
    ],
    out_dir: DatasetOut,
    domains: Annotated[
        str | None,
        typer.Option(help="Comma-separated domains to keep, e.g. baby,beauty (default: all found)."),
    ] = None,
    recipe: Annotated[
        str, typer.Option(help="Recipe name from data_recipes/ or a YAML path.")
    ] = "unimp_paper",
    k_core: Annotated[
        int | None,
        typer.Option("--k-core", min=0, help="Minimum interactions per user and per item (recipe: 5)."),
    ] = None,
    new_domain: Annotated[
        str | None, typer.Option(help="Domain held out for the new_domain split ('none' to disable).")
    ] = None,
    new_user_fraction: Annotated[
        float | None, typer.Option(help="Share of training-domain users held out as new users.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of local product images named <asin>.<ext>.")
    ] = None,
    download_images: Annotated[
        bool, typer.Option("--download-images", help="Fetch each item's image URL (cached).")
    ] = False,
    image_cache: Annotated[Path, typer.Option(help="Cache folder for downloaded images.")] = Path.home()
    / ".cache"
    / "unimp-bench"
    / "images",
    download_concurrency: Annotated[int, typer.Option(min=1, help="Parallel image requests.")] = 8,
    download_timeout: Annotated[
        float, typer.Option(help="Seconds per connection or read before a retry.")
    ] = 10.0,
    seed: seed_option("Seed of id permutations and the new-user draw.") = 0,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes, one domain each (default: one per CPU core).")
    ] = None,
    overwrite: Overwrite = False,
):
    """Turn raw Amazon dumps (2014, 2018 or 2023 releases, plain or gzip) into the benchmark dataset.

    Example: unimp-bench prepare amazon --raw-dir ~/amazon --out data/amazon --domains baby,beauty
    """
    from unimp_bench.data.api import prepare_amazon_dataset

    manifest = prepare_amazon_dataset(
        raw_dir=raw_dir,
        out=out_dir,
        recipe_name=recipe,
        domains=split_list(domains),
        k_core=k_core,
        new_domain=new_domain,
        new_user_fraction=new_user_fraction,
        seed=seed,
        images_dir=images,
        download_images=download_images,
        image_cache=image_cache,
        download_concurrency=download_concurrency,
        download_timeout=download_timeout,
        workers=workers,
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    _print_summary(out_dir, manifest)


@prepare_app.command("synthetic")
@friendly_errors
def prepare_synthetic_command(
    out_dir: DatasetOut,
    users: Annotated[int, typer.Option(min=1, help="Number of synthetic users before the k-core.")] = 600,
    items: Annotated[
        int, typer.Option(min=1, help="Number of synthetic items (split evenly over the domains).")
    ] = 240,
    domains: Annotated[str, typer.Option(help="Comma-separated domain names.")] = "Beauty,Sports,Toys,Office",
    seed: seed_option("Seed of the generator and of the preparation.") = 0,
    overwrite: Overwrite = False,
):
    """Generate the embedded synthetic corpus (raw 2018-format files + PNG images) and prepare it.

    Example: unimp-bench prepare synthetic --out data/synthetic
    """
    from unimp_bench.data.api import prepare_synthetic_dataset

    manifest = prepare_synthetic_dataset(
        out=out_dir,
        users=users,
        items=items,
        domains=split_list(domains) or [],
        seed=seed,
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    _print_summary(out_dir, manifest)


@prepare_app.command("sequences")
@friendly_errors
def prepare_sequences_command(
    sequence_file: Annotated[
        Path, typer.Argument(help="Processed sequences: one `user item item ...` line per user.")
    ],
    out_dir: DatasetOut,
    domain: Annotated[
        str | None, typer.Option(help="Domain name of the items (default: the file name, e.g. Beauty).")
    ] = None,
    seed: seed_option("Seed of the user and item index permutations.") = 0,
    overwrite: Overwrite = False,
):
    """Import a processed sequence file (the S3-Rec/SASRec Amazon format) with its published protocol:
    every user kept, last item test, second last valid, no further filtering.

    Example: unimp-bench prepare sequences Beauty.txt --out data/beauty-seq
    """
    from unimp_bench.data.sequences import prepare_sequences_dataset

    manifest = prepare_sequences_dataset(
        sequence_file, out_dir, domain=domain, seed=seed, overwrite=overwrite
    )
    _print_summary(out_dir, manifest)


def _print_summary(out_dir: Path, manifest: dict) -> None:
    totals = manifest["totals"]
    out.print(
        f"Wrote {out_dir}: {totals['users']} users, {totals['items']} items, "
        f"{totals['interactions']} interactions "
        f"in {len(manifest['domains'])} domain(s); content hash {manifest['content_hash'][:16]}."
    )
    rejected = {scope: n for scope, n in manifest["rejected_total"].items() if n}
    if rejected:
        listed = ", ".join(f"{n} {scope}" for scope, n in rejected.items())
        out.print(f"Rejected input: {listed} (reasons and examples in manifest.json).")
    held_out = manifest["new_domain"]
    if held_out["domain"] and not held_out["present"]:
        out.print(
            f"Held-out domain {held_out['domain']} is not among the prepared domains: no new_domain users."
        )
    for name, dropped in manifest.get("dropped_domains", {}).items():
        out.print(f"Dropped domain {name}: {dropped['reason']}.", markup=False)
    for name, why in manifest.get("unreadable_files", {}).items():
        out.print(f"Could not read {name}: {why}; it was left out.", markup=False, highlight=False)


@app.command("stats")
@friendly_errors
def stats_command(
    data: Data,
    with_paper: Annotated[
        bool, typer.Option("--with-paper", help="Add the paper's Table 5 numbers for comparison.")
    ] = False,
    as_json: AsJson = False,
):
    """Print users, items, interactions and sparsity per domain (the paper's Table 5 columns).

    Example: unimp-bench stats data/synthetic --with-paper
    """
    from unimp_bench.data.api import dataset_statistics, statistics_table

    statistics = dataset_statistics(data, with_paper=with_paper)
    if as_json:
        print_json(statistics)
    else:
        out.print(statistics_table(statistics))


@app.command("build")
@friendly_errors
def build_command(
    data: Data,
    out_dir: out_option("Output examples folder (written atomically).", required=True),
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated task names (default: every registered task).")
    ] = None,
    splits: Annotated[
        str | None, typer.Option(help="Comma-separated splits (default: each task's splits).")
    ] = None,
    seed: seed_option("Seed of candidate sampling and random instruction choice.") = 0,
    instruction: Annotated[
        str,
        typer.Option(help="Instruction template: first, random (seeded per example) or a template index."),
    ] = "first",
    overwrite: Overwrite = False,
):
    """Materialize task examples (Parquet per task and split) from a prepared dataset.

    Example: unimp-bench build data/synthetic --out data/synthetic-examples --tasks recommendation,search
    """
    from unimp_bench.examples import BuildSettings, build_examples

    manifest = build_examples(
        data,
        out_dir,
        task_names=split_list(tasks),
        splits=split_list(splits),
        settings=BuildSettings(seed=seed, instruction=instruction),
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    for name, entry in manifest["tasks"].items():
        parts = []
        for split, info in entry["splits"].items():
            skipped = sum(info["skipped"].values())
            parts.append(f"{split} {info['examples']}" + (f" ({skipped} skipped)" if skipped else ""))
        out.print(f"{name} v{entry['version']}: " + ", ".join(parts))
    reasons = {
        reason
        for entry in manifest["tasks"].values()
        for info in entry["splits"].values()
        for reason in info["skipped"]
    }
    if reasons:
        out.print(
            f"Skipped examples by reason are in {out_dir / 'manifest.json'}: {', '.join(sorted(reasons))}."
        )
