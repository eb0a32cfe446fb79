"""The work of one domain, run in a worker process: parse (texts to a spill file), de-duplicate, meta
join, k-core, then texts and meta of the survivors only. It imports nothing beyond the readers, so
workers start quickly."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from unimp_bench.data.kcore import collapse_copies, drop_duplicate_pairs, k_core
from unimp_bench.data.meta import ITEM_SCHEMA, index_meta, read_meta
from unimp_bench.data.raw_files import RawFile, StreamInfo
from unimp_bench.data.recipe import Recipe
from unimp_bench.data.rejects import RejectLog
from unimp_bench.data.reviews import TextSpill, read_review_keys


@dataclass(frozen=True)
class DomainSources:
    name: str
    reviews: RawFile
    meta: RawFile | None

    @property
    def bytes_to_read(self) -> int:
        """Stored bytes the passes read at most: reviews once, meta twice."""
        meta = 0 if self.meta is None else self.meta.path.stat().st_size
        return self.reviews.path.stat().st_size + 2 * meta


@dataclass
class DomainResult:
    """A domain's survivors in the staging folder: `interactions_path` holds their keys and ratings,
    ordered by raw line; `texts_path` their texts, row for row; `items_path` their items."""

    name: str
    interactions_path: Path
    texts_path: Path
    items_path: Path
    text_bytes: int  # of the surviving texts, what the combining step sizes its buckets by
    stats: dict
    sources: list[dict]
    rejects: dict[str, RejectLog] = field(default_factory=dict)


def _source_entry(raw: RawFile, info: StreamInfo, domain: str) -> dict:
    return {
        "domain": domain,
        "role": raw.role,
        "release": raw.release,
        "file": raw.path.name,
        "compression": "gzip" if raw.compressed else "none",
        "bytes": info.bytes,
        "sha256": info.sha256,
        "lines": info.all_lines,
        "truncated": info.truncated,
    }


class _ByteMeter:
    """Turns each pass's position in its file into increments of one running total for `report`."""

    def __init__(self, report: Callable[[int], None] | None):
        self.report = report
        self.position = 0

    def next_pass(self) -> Callable[[int], None] | None:
        if self.report is None:
            return None
        self.position = 0

        def seen(position: int) -> None:
            if position > self.position:
                self.report(position - self.position)
                self.position = position

        return seen


_worker_progress = None  # a multiprocessing queue, set once per worker process by init_worker


def init_worker(progress_queue, parent: int | None = None) -> None:
    """Pool initializer: where this worker process sends its (domain index, bytes read) messages; and
    a watchdog that ends the worker when its parent dies (a killed `prepare` leaves no orphans)."""
    global _worker_progress
    _worker_progress = progress_queue
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent,), daemon=True, name="parent watchdog"
        ).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # the parent is gone (we were re-parented): nobody will read our result


def process_domain_in_worker(
    sources: DomainSources, recipe: Recipe, staging: Path, index: int
) -> DomainResult:
    """process_domain in a worker process, reporting progress to the queue given to init_worker."""
    queue = _worker_progress
    return process_domain(
        sources, recipe, staging, index, None if queue is None else lambda n: queue.put((index, n))
    )


def process_domain(
    sources: DomainSources,
    recipe: Recipe,
    staging: Path,
    index: int,
    report: Callable[[int], None] | None = None,
) -> DomainResult:
    """Everything that is per domain: parse, de-duplicate, meta join, k-core, texts and meta of survivors.

    `report` is told how many more stored bytes were read, as the passes go (for progress bars).
    """
    meter = _ByteMeter(report)
    review_rejects, meta_rejects = RejectLog(), RejectLog()
    spill = TextSpill(staging / f"{index:03d}.spill.arrow")  # every valid line's texts, until the k-core
    try:
        keys, review_info = read_review_keys(sources.reviews, review_rejects, meter.next_pass(), spill)
        stats: dict = {
            "review_lines": review_info.all_lines,
            "valid_reviews": keys.height,
        }
        keys, variants = collapse_copies(keys.rename({"line": "order"}))
        stats["review_copies_collapsed"] = stats["valid_reviews"] - keys.height
        collapsed = keys.height
        keys = drop_duplicate_pairs(keys).drop("text_key")
        stats["duplicate_pairs_removed"] = collapsed - keys.height
        source_entries = [_source_entry(sources.reviews, review_info, sources.name)]

        line_of: dict[str, int] = {}
        if sources.meta is not None:
            wanted = set(keys["asin"].unique().to_list())
            line_of, meta_info = index_meta(sources.meta, wanted, meta_rejects, meter.next_pass())
            source_entries.append(_source_entry(sources.meta, meta_info, sources.name))
            if recipe.items_without_meta == "drop":
                before = keys.height
                keys = keys.filter(pl.col("asin").is_in(list(line_of)))
                stats["reviews_of_items_without_meta_removed"] = before - keys.height
        stats["meta_file"] = sources.meta is not None

        keys, rounds = k_core(keys, recipe.k_core)
        keys = keys.with_columns(pl.col("user_id", "asin").cast(pl.String))  # survivors only, from here on
        stats["k_core_rounds"] = rounds
        stats["after_k_core"] = keys.height

        keys = keys.sort("order")  # row for row with the texts file, which follows the raw lines
        texts_path = staging / f"{index:03d}.texts.arrow"
        text_bytes = spill.copy(keys["order"].to_numpy(), texts_path)
    finally:
        spill.close()
        spill.path.unlink(missing_ok=True)
    surviving_items = keys.select("asin").unique().sort("asin")
    if sources.meta is not None:
        line_of = {a: line_of[a] for a in surviving_items["asin"] if a in line_of}
        meta = read_meta(sources.meta, line_of, meta_rejects, meter.next_pass())
    else:
        meta = pl.DataFrame(schema=ITEM_SCHEMA)
    items = (
        surviving_items.join(meta, on="asin", how="left")
        .join(variants, on="asin", how="left")
        .with_columns(
            pl.col("variant_asins").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            pl.lit(sources.name).alias("domain"),
        )
    )

    interactions_path, items_path = (
        staging / f"{index:03d}.interactions.arrow",
        staging / f"{index:03d}.items.arrow",
    )
    keys.with_columns(pl.lit(sources.name).alias("domain")).write_ipc(
        interactions_path, compression="uncompressed"
    )
    items.write_ipc(items_path, compression="uncompressed")
    return DomainResult(
        sources.name,
        interactions_path,
        texts_path,
        items_path,
        text_bytes,
        stats,
        source_entries,
        {"reviews": review_rejects, "meta": meta_rejects},
    )
