"""Typer wiring only: each command parses its options and calls one library function."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import typer
from rich.console import Console

from unimp_bench.errors import UnimpError

app = typer.Typer(
    help="unimp-bench: benchmark toolkit for unified multi-modal personalization (UniMP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prepare_app = typer.Typer(
    help="Build the benchmark dataset from raw Amazon dumps or the synthetic corpus.", no_args_is_help=True
)
app.add_typer(prepare_app, name="prepare")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def friendly_errors(command):
    """Print a user error as one sentence and exit 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UnimpError as exc:
            err.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # unreadable input, unwritable output, full disk
            where = f" {exc.filename}" if exc.filename else ""
            err.print(
                f"[bold red]Error:[/] cannot use{where}: {exc.strerror or exc}.",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("Interrupted; nothing was written in place of the output.")
            raise typer.Exit(130) from None

    return wrapper


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _show_progress() -> bool:
    return err.is_terminal and not os.environ.get("UNIMP_BENCH_NO_PROGRESS")


@prepare_app.command("amazon")
@friendly_errors
def prepare_amazon_command(
    raw_dir: Path = typer.Option(
        ..., "--raw-dir", help="Folder with raw review (and meta) files, searched recursively."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Output dataset folder (written atomically)."),
    domains: str = typer.Option(
        None, help="Comma-separated domains to keep, e.g. baby,beauty (default: all found)."
    ),
    recipe: str = typer.Option("unimp_paper", help="Recipe name from data_recipes/ or a YAML path."),
    k_core: int = typer.Option(
        None, "--k-core", help="Minimum interactions per user and per item (recipe: 5)."
    ),
    new_domain: str = typer.Option(
        None, help="Domain held out for the new_domain split ('none' to disable)."
    ),
    new_user_fraction: float = typer.Option(
        None, help="Share of training-domain users held out as new users."
    ),
    images: Path = typer.Option(None, "--images", help="Folder of local product images named <asin>.<ext>."),
    download_images: bool = typer.Option(
        False, "--download-images", help="Fetch each item's image URL (cached)."
    ),
    image_cache: Path = typer.Option(
        Path.home() / ".cache" / "unimp-bench" / "images", help="Cache folder for downloaded images."
    ),
    download_concurrency: int = typer.Option(8, help="Parallel image requests."),
    download_timeout: float = typer.Option(10.0, help="Seconds per connection or read before a retry."),
    seed: int = typer.Option(0, help="Seed of id permutations and the new-user draw."),
    workers: int = typer.Option(None, help="Worker processes, one domain each (default: one per CPU core)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
):
    """Turn raw Amazon dumps (2014, 2018 or 2023 releases, plain or gzip) into the benchmark dataset.

    Example: unimp-bench prepare amazon --raw-dir ~/amazon --out data/amazon --domains baby,beauty
    """
    from unimp_bench.data.api import prepare_amazon_dataset

    manifest = prepare_amazon_dataset(
        raw_dir=raw_dir,
        out=out_dir,
        recipe_name=recipe,
        domains=_split_list(domains),
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
        show_progress=_show_progress(),
    )
    _print_summary(out_dir, manifest)


@prepare_app.command("synthetic")
@friendly_errors
def prepare_synthetic_command(
    out_dir: Path = typer.Option(..., "--out", help="Output dataset folder (written atomically)."),
    users: int = typer.Option(600, help="Number of synthetic users before the k-core."),
    items: int = typer.Option(240, help="Number of synthetic items (split evenly over the domains)."),
    domains: str = typer.Option("Beauty,Sports,Toys,Office", help="Comma-separated domain names."),
    seed: int = typer.Option(0, help="Seed of the generator and of the preparation."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
):
    """Generate the embedded synthetic corpus (raw 2018-format files + PNG images) and prepare it.

    Example: unimp-bench prepare synthetic --out data/synthetic
    """
    from unimp_bench.data.api import prepare_synthetic_dataset

    manifest = prepare_synthetic_dataset(
        out=out_dir,
        users=users,
        items=items,
        domains=_split_list(domains) or [],
        seed=seed,
        overwrite=overwrite,
        show_progress=_show_progress(),
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
        out.print(f"Dropped domain {name}: {dropped['reason']}.")


@app.command("stats")
@friendly_errors
def stats_command(
    data: Path = typer.Argument(..., help="A prepared dataset folder."),
    with_paper: bool = typer.Option(
        False, "--with-paper", help="Add the paper's Table 5 numbers for comparison."
    ),
):
    """Print users, items, interactions and sparsity per domain (the paper's Table 5 columns).

    Example: unimp-bench stats data/synthetic
    """
    from unimp_bench.data.api import dataset_statistics_table

    out.print(dataset_statistics_table(data, with_paper=with_paper))


if __name__ == "__main__":  # pragma: no cover
    app()
