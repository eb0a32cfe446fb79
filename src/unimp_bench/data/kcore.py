"""Pure interaction-table transforms: de-duplication, iterative k-core, chronological positions, splits.

Every function takes and returns a polars frame with at least user_id, asin, ts_ms and an `order`
tie-breaker (raw file order), so the same input always gives the same output.
"""

from __future__ import annotations

import polars as pl


def collapse_copies(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One user's reviews with the same time and the same text and summary (`text_key`, null for an
    empty review) are one interaction: the 2018 release copies a review under every variant asin of a
    product, and such copies would otherwise put a training review's twin in valid and test. The first
    in file order is kept. Returns (the kept rows, asin -> sorted variant asins merged into it)."""
    group = ["user_id", "ts_ms", "text_key"]
    marked = frame.with_columns(pl.col("order").min().over(group).alias("_first"))
    is_copy = pl.col("text_key").is_not_null() & (pl.col("order") != pl.col("_first"))
    kept_asin = marked.filter(pl.col("order") == pl.col("_first")).select(
        "_first", pl.col("asin").cast(pl.String).alias("kept")
    )
    variants = (
        marked.filter(is_copy)
        .select("_first", pl.col("asin").cast(pl.String))
        .join(kept_asin, on="_first")
        .filter(pl.col("asin") != pl.col("kept"))
        .group_by("kept")
        .agg(pl.col("asin").unique().sort().alias("variant_asins"))
        .rename({"kept": "asin"})
        .sort("asin")
    )
    return marked.filter(~is_copy).drop("_first"), variants


def drop_duplicate_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the earliest review of each (user, item); equal times keep the one earlier in the raw file."""
    return frame.sort("ts_ms", "order").unique(subset=["user_id", "asin"], keep="first", maintain_order=True)


def k_core(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Iteratively drop users and items with fewer than k interactions until none is left; returns rounds."""
    rounds = 0
    if k <= 1:
        return frame, rounds
    while True:
        rounds += 1
        kept = frame.filter((pl.len().over("user_id") >= k) & (pl.len().over("asin") >= k))
        if kept.height == frame.height:
            return kept, rounds
        frame = kept


def chronological_positions(frame: pl.DataFrame, user: str = "user_id") -> pl.DataFrame:
    """0-based position of each interaction in its user's history, ordered by time then raw order."""
    return frame.sort(user, "ts_ms", "order").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int32).over(user).alias("pos")
    )


def leave_last_out(frame: pl.DataFrame, user: str = "user_id") -> pl.DataFrame:
    """Last interaction of each user = test, second last = valid, the rest = train (needs `pos`)."""
    last = pl.col("pos").max().over(user)
    split = (
        pl.when(pl.col("pos") == last)
        .then(pl.lit("test"))
        .when(pl.col("pos") == last - 1)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return frame.with_columns(split.alias("split"))
