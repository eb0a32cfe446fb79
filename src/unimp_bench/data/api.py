"""The data commands as plain functions (what cli/data.py calls): prepare, synthetic, stats."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import polars as pl
from rich.table import Table
from rich.text import Text

from unimp_bench.data import images as image_io
from unimp_bench.data.contract import open_dataset, paper_dataset_statistics
from unimp_bench.data.prepare import ImageOptions, build, domain_statistics
from unimp_bench.data.recipe import load_recipe, with_overrides
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import atomic_directory
from unimp_bench.progress import ProgressReporter


def prepare_amazon_dataset(
    raw_dir: Path,
    out: Path,
    recipe_name: str = "unimp_paper",
    domains: list[str] | None = None,
    k_core: int | None = None,
    new_domain: str | None = None,
    new_user_fraction: float | None = None,
    seed: int = 0,
    images_dir: Path | None = None,
    download_images: bool = False,
    image_cache: Path | None = None,
    download_concurrency: int = 8,
    download_timeout: float = 10.0,
    workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict:
    if images_dir is not None and download_images:
        raise UnimpError("choose either --images or --download-images, not both")
    if workers is not None and workers < 1:
        raise UnimpError(f"--workers must be at least 1, got {workers}")
    recipe = with_overrides(
        load_recipe(recipe_name), k_core=k_core, new_user_fraction=new_user_fraction, seed=seed
    )
    if new_domain is not None:  # "none" (or "") switches the held-out domain off
        held_out = None if new_domain.strip().lower() in ("", "none") else new_domain.strip()
        recipe = dataclasses.replace(recipe, new_domain=held_out)
    settings = None
    if download_images:
        settings = image_io.DownloadSettings(
            cache_dir=image_cache or Path.home() / ".cache" / "unimp-bench" / "images",
            concurrency=download_concurrency,
            timeout_s=download_timeout,
        )
    image_options = ImageOptions(images_dir=images_dir, download=download_images, settings=settings)
    with ProgressReporter(enabled=show_progress) as progress, atomic_directory(out, overwrite) as staging:
        return build(
            raw_dir, staging, recipe, domains, image_options, workers or os.cpu_count() or 1, progress
        )


def prepare_synthetic_dataset(
    out: Path,
    users: int = 600,
    items: int = 240,
    domains: list[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict:
    from unimp_bench.data.synthetic import SyntheticSpec, write_raw_corpus

    spec = SyntheticSpec(
        users=users, items=items, domains=tuple(domains or SyntheticSpec().domains), seed=seed
    )
    recipe = with_overrides(load_recipe("synthetic"), seed=seed)
    if recipe.new_domain not in spec.domains:
        recipe = dataclasses.replace(recipe, new_domain=None)
    with ProgressReporter(enabled=show_progress) as progress, atomic_directory(out, overwrite) as staging:
        raw_dir = staging / "raw"
        write_raw_corpus(spec, raw_dir)
        manifest = build(
            raw_dir, staging, recipe, None, ImageOptions(images_dir=raw_dir / "images"), 1, progress
        )
        return manifest


def dataset_statistics(root: Path, with_paper: bool = False) -> dict:
    """Users, items, interactions and sparsity per domain and over all domains (the paper's Table 5
    columns), with the paper's numbers of each domain when asked."""
    dataset = open_dataset(root)
    interactions = dataset.scan("interactions").select("user_idx", "item_idx").collect()
    stats = domain_statistics(dataset.scan("items").collect(), interactions)
    paper = paper_dataset_statistics() if with_paper else {}
    domains = []
    for row in stats.iter_rows(named=True):
        entry = {k: row[k] for k in ("domain", "users", "items", "interactions", "sparsity")}
        if with_paper:
            entry["paper"] = paper.get(row["domain"])
        domains.append(entry)
    totals = stats.select(pl.col("interactions").sum()).item()
    users = dataset.scan("users").select(pl.len()).collect().item()
    items = dataset.catalog_size
    sparsity = 1 - totals / (users * items) if users and items else 0.0
    return {
        "dataset": str(root),
        "content_hash": dataset.manifest.get("content_hash"),
        "domains": domains,
        "all": {"users": users, "items": items, "interactions": totals, "sparsity": sparsity},
    }


def statistics_table(statistics: dict) -> Table:
    """`dataset_statistics` as a table; domain names are shown whole."""
    with_paper = any("paper" in entry for entry in statistics["domains"])
    title = f"{statistics['dataset']} (content hash {str(statistics['content_hash'])[:12]})"
    table = Table(title=Text(title))
    width = max([len(entry["domain"]) for entry in statistics["domains"]] + [len("domain")])
    table.add_column("domain", justify="left", no_wrap=True, min_width=width)
    for column in ("users", "items", "interactions", "sparsity"):
        table.add_column(column, justify="right")
    if with_paper:
        for column in ("paper users", "paper items", "paper interactions"):
            table.add_column(column, justify="right")
    for entry in statistics["domains"]:
        cells = [
            Text(entry["domain"]),  # data, never markup
            f"{entry['users']:,}",
            f"{entry['items']:,}",
            f"{entry['interactions']:,}",
            f"{entry['sparsity']:.4%}",
        ]
        if with_paper:
            reference = entry["paper"]
            cells += [f"{reference[k]:,}" if reference else "-" for k in ("users", "items", "interactions")]
        table.add_row(*cells)
    total = statistics["all"]
    table.add_row(
        "all",
        f"{total['users']:,}",
        f"{total['items']:,}",
        f"{total['interactions']:,}",
        f"{total['sparsity']:.4%}",
        *(["", "", ""] if with_paper else []),
    )
    return table


def dataset_statistics_table(root: Path, with_paper: bool = False) -> Table:
    return statistics_table(dataset_statistics(root, with_paper))
