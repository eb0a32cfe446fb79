"""`prepare amazon`: raw review dumps -> the fixed benchmark dataset (DESIGN.md section 3).

Per domain (in parallel worker processes): one pass reads the keys of every review into memory and
its texts into a spill file, copies collapse, duplicates keep the earliest, items without meta leave
(recipe), the iterative k-core runs, then the texts and meta of the survivors only are read. The
domains are then combined: user and item ids become seeded random permutations, users get their group
(new_domain, a seeded new_user share, train), each history is ordered by time (ties: raw file order)
and split leave-last-out; ordered_write.py writes the interactions in that order with bounded memory.
Everything is written to a staging folder that replaces the output only once complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench import __version__
from unimp_bench.config import to_mapping
from unimp_bench.data import images as image_io
from unimp_bench.data.contract import COLUMNS, SCHEMA_VERSION
from unimp_bench.data.domain import (
    DomainResult,
    DomainSources,
    init_worker,
    process_domain,
    process_domain_in_worker,
)
from unimp_bench.data.kcore import chronological_positions, leave_last_out
from unimp_bench.data.ordered_write import write_interactions
from unimp_bench.data.raw_files import RawFile, discover
from unimp_bench.data.recipe import Recipe
from unimp_bench.data.rejects import RejectLog
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import file_sha256, write_json_atomic
from unimp_bench.progress import ProgressReporter

DATA_FILES = tuple(COLUMNS)


@dataclass(frozen=True)
class ImageOptions:
    images_dir: Path | None = None
    download: bool = False
    settings: image_io.DownloadSettings | None = None


def plan_domains(
    files: list[RawFile], recipe: Recipe, selected: list[str] | None, unreadable: dict[str, str] | None = None
) -> list[DomainSources]:
    """One plan per domain with a review file; an error naming what is missing (and any raw file that
    could not be read, with the reason) when nothing, or not every selected domain, can be prepared."""
    by_domain: dict[str, dict[str, list[RawFile]]] = {}
    for raw in files:
        name = recipe.domain_name(raw.stem, raw.release)
        by_domain.setdefault(name, {"reviews": [], "meta": []})[raw.role].append(raw)
    plans = []
    for name in sorted(by_domain):
        roles = by_domain[name]
        if not roles["reviews"]:
            continue
        for role in ("reviews", "meta"):
            if len(roles[role]) > 1:
                listed = ", ".join(str(r.path) for r in roles[role])
                raise UnimpError(
                    f"domain {name} has several {role} files ({listed}); keep one of them in the raw folder"
                )
        plans.append(DomainSources(name, roles["reviews"][0], roles["meta"][0] if roles["meta"] else None))
    unreadable_note = "".join(f"; cannot read {name}: {why}" for name, why in (unreadable or {}).items())
    if not plans:
        raise UnimpError(
            "found no Amazon review files; expected names such as reviews_Beauty_5.json.gz (2014), "
            "Beauty_5.json.gz (2018) or Beauty.jsonl.gz (2023)" + unreadable_note
        )
    if selected:
        known = {p.name.lower(): p for p in plans} | {p.reviews.stem.lower(): p for p in plans}
        missing = [s for s in selected if s.lower() not in known]
        if missing:
            raise UnimpError(
                f"no review file found for domain(s) {', '.join(missing)}; "
                f"found: {', '.join(p.name for p in plans)}" + unreadable_note
            )
        chosen = {known[s.lower()].name for s in selected}
        plans = [p for p in plans if p.name in chosen]
    return plans


PARALLEL_MIN_BYTES = 32 << 20  # below this much raw review data, starting worker processes costs more


def _run_domains(
    plans: list[DomainSources], recipe: Recipe, work: Path, workers: int, progress: ProgressReporter
) -> list[DomainResult]:
    """process_domain for every plan, in worker processes when it pays; results in plan order.

    The progress bar counts the stored bytes the passes have read, across all domains.
    """
    task = progress.add("read raw files", total=sum(plan.bytes_to_read for plan in plans))
    sizes = [plan.reviews.path.stat().st_size for plan in plans]
    if workers <= 1 or len(plans) == 1 or sum(sizes) < PARALLEL_MIN_BYTES:
        report = functools.partial(progress.advance, task) if progress.enabled else None
        return [process_domain(plan, recipe, work, index, report) for index, plan in enumerate(plans)]
    largest_first = sorted(range(len(plans)), key=lambda i: -sizes[i])  # balances the workers' loads
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    pool = ProcessPoolExecutor(
        min(workers, len(plans)),
        mp_context=context,
        initializer=init_worker,
        initargs=(messages, os.getpid()),  # the workers end when this process dies
    )
    with pool:
        futures = {pool.submit(process_domain_in_worker, plans[i], recipe, work, i): i for i in largest_first}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a worker's error surfaces here
            while not messages.empty():
                progress.advance(task, messages.get()[1])
    return [future.result() for future in sorted(futures, key=futures.get)]


def seeded_permutation(n: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, stream]).permutation(n).astype(np.int32)


def combine(results: list[DomainResult], recipe: Recipe) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per-domain survivors -> (items, users, placement) with seeded ids, groups, positions, splits.

    Everything is computed on narrow key columns. `placement` says, row by row in the final order
    (user_idx, pos), which row of the concatenated per-domain files goes there (`row`) with its final
    keys; write_interactions then moves the review texts once, straight into the output file.
    """
    domain_rank = {r.name: rank for rank, r in enumerate(sorted(results, key=lambda r: r.name))}
    key_columns = ["user_id", "asin", "domain", "ts_ms", "order"]
    keys = pl.concat([pl.read_ipc(r.interactions_path, columns=key_columns) for r in results])
    keys = keys.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
        # ties in time: domain name, then raw file order
        (
            pl.col("domain").replace_strict(domain_rank, return_dtype=pl.Int64) * (1 << 40) + pl.col("order")
        ).alias("order"),
    )
    items = pl.concat([pl.read_ipc(r.items_path) for r in results]).sort("domain", "asin")
    items = items.with_columns(pl.Series("item_idx", seeded_permutation(items.height, recipe.seed, 2)))
    users = _assign_users(keys, recipe, recipe.new_domain in domain_rank)

    keys = keys.join(users.select("user_id", "user_idx"), on="user_id").join(
        items.select("domain", "asin", "item_idx"), on=["domain", "asin"]
    )
    placement = (
        leave_last_out(chronological_positions(keys, "user_idx"), "user_idx")
        .sort("user_idx", "pos")
        .select("row", "user_idx", "item_idx", (pl.col("ts_ms") // 1000).alias("timestamp"), "split", "pos")
    )
    return items, users.select("user_idx", "user_id", "group").sort("user_idx"), placement


def _assign_users(keys: pl.DataFrame, recipe: Recipe, held_domain_present: bool) -> pl.DataFrame:
    """Seeded user ids and groups: every user of the held-out domain is new_domain, a seeded share of
    the others new_user, the rest train."""
    users = keys.select("user_id").unique().sort("user_id")
    users = users.with_columns(pl.Series("user_idx", seeded_permutation(users.height, recipe.seed, 1)))
    in_held_domain = pl.lit(False)
    if held_domain_present:
        held = keys.filter(pl.col("domain") == recipe.new_domain).select("user_id").unique()
        in_held_domain = pl.col("user_id").is_in(held["user_id"].implode())
    remaining = users.filter(~in_held_domain)["user_id"]
    n_new = int(round(recipe.new_user_fraction * remaining.len()))
    chosen = remaining.gather(np.sort(seeded_permutation(remaining.len(), recipe.seed, 3)[:n_new]))
    group = (
        pl.when(in_held_domain)
        .then(pl.lit("new_domain"))
        .when(pl.col("user_id").is_in(chosen.implode()))
        .then(pl.lit("new_user"))
        .otherwise(pl.lit("train"))
    )
    return users.with_columns(group.alias("group"))


def _attach_images(
    items: pl.DataFrame, out: Path, options: ImageOptions, progress
) -> tuple[pl.DataFrame, dict, list]:
    paths: list[str | None] = [None] * items.height
    failures: list[dict] = []
    report: dict = {"source": "none"}
    images_out = out / "images"
    if options.images_dir is not None:
        if not options.images_dir.is_dir():
            raise UnimpError(f"images folder {options.images_dir} does not exist")
        local = image_io.index_local_images(options.images_dir)
        task = progress.add("verify and copy local images", total=items.height)
        for row, asin in enumerate(items["asin"]):
            source = local.get(image_io.safe_file_stem(asin)) or local.get(asin)  # the stem is one-to-one
            if source is None:
                failures.append({"asin": asin, "reason": "no_local_file"})
            else:
                try:
                    suffix = image_io.verify_image(source.read_bytes())
                    paths[row] = image_io.place_image(source, images_out, asin, suffix)
                except ValueError as exc:
                    failures.append(
                        {"asin": asin, "file": source.name, "reason": "not_an_image", "detail": str(exc)}
                    )
            progress.advance(task)
        report = {"source": "local", "folder": options.images_dir.name}
    elif options.download:
        settings = options.settings
        urls = [u for u in items["image_url"].to_list() if u]
        task = progress.add("download images", total=len(set(urls)))
        outcomes = image_io.fetch_all(urls, settings, lambda: progress.advance(task))
        for row, (asin, url) in enumerate(items.select("asin", "image_url").iter_rows()):
            if not url:
                failures.append({"asin": asin, "reason": "no_image_url"})
                continue
            outcome = outcomes[url]
            if outcome.path is None:
                failures.append(
                    {"asin": asin, "url": url, "reason": outcome.reason, "attempts": outcome.attempts}
                )
            else:
                paths[row] = image_io.place_image(outcome.path, images_out, asin, outcome.suffix)
        report = {
            "source": "download",
            "from_cache": sum(1 for o in outcomes.values() if o.from_cache),
            "downloaded": sum(1 for o in outcomes.values() if o.path is not None and not o.from_cache),
        }
    if report["source"] != "none":
        reasons: dict[str, int] = {}
        for failure in failures:
            reasons[failure["reason"]] = reasons.get(failure["reason"], 0) + 1
        report |= {"items": items.height, "with_image": sum(p is not None for p in paths), "failed": reasons}
    return items.with_columns(pl.Series("image_path", paths, dtype=pl.String)), report, failures


def content_hash(out: Path) -> tuple[str, dict[str, str]]:
    """sha256 over the data files and images (relative path + file hash, in sorted order)."""
    files = [out / name for name in DATA_FILES]
    if (out / "images").is_dir():
        files += sorted((out / "images").iterdir())
    hashes = {str(p.relative_to(out)): file_sha256(p) for p in files}
    combined = hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(hashes.items())).encode()
    )
    return combined.hexdigest(), {name: hashes[name] for name in DATA_FILES}


def domain_statistics(items: pl.DataFrame, interactions: pl.DataFrame) -> pl.DataFrame:
    """Paper Table 5 columns per domain: users, items, interactions, sparsity."""
    joined = interactions.select("user_idx", "item_idx").join(
        items.select("item_idx", "domain"), on="item_idx"
    )
    per_domain = joined.group_by("domain").agg(
        pl.col("user_idx").n_unique().alias("users"), pl.len().alias("interactions")
    )
    item_counts = items.group_by("domain").agg(pl.len().alias("items"))
    return (
        per_domain.join(item_counts, on="domain")
        .select(
            "domain",
            "users",
            "items",
            "interactions",
            (1 - pl.col("interactions") / (pl.col("users") * pl.col("items"))).alias("sparsity"),
        )
        .sort("domain")
    )


def write_dataset(
    out: Path,
    items: pl.DataFrame,
    users: pl.DataFrame,
    placement: pl.DataFrame,
    results: list[DomainResult],
    work: Path,
) -> None:
    items.select(list(COLUMNS["items.parquet"])).sort("item_idx").write_parquet(
        out / "items.parquet", compression="zstd"
    )
    users.write_parquet(out / "users.parquet", compression="zstd")
    write_interactions(out / "interactions.parquet", placement, results, work)


def build(
    raw_dir: Path,
    out: Path,
    recipe: Recipe,
    domains: list[str] | None = None,
    images: ImageOptions = ImageOptions(),
    workers: int = 2,
    progress: ProgressReporter | None = None,
) -> dict:
    """Build the dataset into the (empty) folder `out` and return its manifest."""
    progress = progress or ProgressReporter(enabled=False)
    files, ignored, unreadable = discover(raw_dir)
    plans = plan_domains(files, recipe, domains, unreadable)
    work = out / ".work"
    work.mkdir()
    results = _run_domains(plans, recipe, work, workers, progress)
    emptied = {
        r.name: f"no interaction survives the {recipe.k_core}-core"
        for r in results
        if not r.stats["after_k_core"]
    }
    if len(emptied) == len(results):
        raise UnimpError(
            f"no interactions of {', '.join(sorted(emptied))} survive the {recipe.k_core}-core; "
            "lower --k-core or add more data"
        )
    dropped_results = [r for r in results if r.name in emptied]
    results = [r for r in results if r.name not in emptied]
    items, users, placement = combine(results, recipe)
    items, image_report, image_failures = _attach_images(items, out, images, progress)
    write_dataset(out, items, users, placement, results, work)
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    if image_failures:
        lines = "".join(json.dumps(f, sort_keys=True) + "\n" for f in image_failures)
        (out / "image_failures.jsonl").write_text(lines, encoding="utf-8")

    rejects = {"reviews": RejectLog(), "meta": RejectLog()}
    for result in results + dropped_results:
        for scope, log in result.rejects.items():
            rejects[scope].merge(log)
    digest, file_hashes = content_hash(out)
    stats = domain_statistics(items, placement)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "recipe": to_mapping(recipe),
        "selected_domains": [p.name for p in plans],
        "sources": [entry for r in results + dropped_results for entry in r.sources],
        "ignored_files": ignored,
        "unreadable_files": unreadable,
        "unused_files": sorted(
            str(f.path.relative_to(raw_dir))
            for f in files
            if f.path not in {p.reviews.path for p in plans} | {p.meta.path for p in plans if p.meta}
        ),
        "dropped_domains": {
            r.name: {"reason": emptied[r.name], "pipeline": r.stats} for r in dropped_results
        },
        "domains": {
            row["domain"]: {**row, "pipeline": next(r.stats for r in results if r.name == row["domain"])}
            for row in stats.to_dicts()
        },
        "new_domain": {
            "domain": recipe.new_domain,
            "present": bool(recipe.new_domain) and recipe.new_domain in {r.name for r in results},
        },
        "totals": {
            "users": users.height,
            "items": items.height,
            "interactions": placement.height,
            "groups": dict(users.group_by("group").len().sort("group").iter_rows()),
            "splits": dict(placement.group_by("split").len().sort("split").iter_rows()),
        },
        "rejected": {scope: log.to_json() for scope, log in rejects.items()},
        "rejected_total": {scope: log.total for scope, log in rejects.items()},
        "images": image_report,
        "files": file_hashes,
        "content_hash": digest,
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
