"""Pure interaction-table transforms: de-duplication, iterative k-core, chronological positions, splits.

Every function takes and returns a polars frame with at least user_id, asin, ts_ms and an `order`
tie-breaker (raw file order), so the same input always gives the same output.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _codes(column: pl.Series) -> np.ndarray:
    """Small non-negative integer codes, equal exactly where the values are equal."""
    if column.dtype == pl.Categorical:
        return column.to_physical().to_numpy()
    return column.rank("dense").to_numpy()


def _repeated(*codes: np.ndarray) -> np.ndarray:
    """Rows whose combination of integer codes may occur more than once: a 64-bit mix of the codes,
    so every repeated combination is caught and, rarely, a unique one too (callers check exactly)."""
    mixed = np.zeros(len(codes[0]), dtype=np.uint64)
    for code in codes:
        mixed = (mixed ^ code.astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)  # wraps, as meant
    return pl.Series(mixed).is_duplicated().to_numpy()


def collapse_copies(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One user's reviews with the same time and the same text and summary (`text_key`, null for an
    empty review) are one interaction: the 2018 release copies a review under every variant asin of a
    product, and such copies would otherwise put a training review's twin in valid and test. The first
    in file order is kept. Returns (the kept rows, asin -> sorted variant asins merged into it).

    Only the rows whose (user, time) repeats can be copies; the exact grouping runs on those."""
    group = ["user_id", "ts_ms", "text_key"]
    candidates = _repeated(_codes(frame.get_column("user_id")), frame.get_column("ts_ms").to_numpy())
    marked = frame.filter(pl.Series(candidates)).with_columns(
        pl.col("order").min().over(group).alias("_first")
    )
    copies = marked.filter(pl.col("text_key").is_not_null() & (pl.col("order") != pl.col("_first")))
    kept_asin = marked.filter(pl.col("order") == pl.col("_first")).select(
        "_first", pl.col("asin").cast(pl.String).alias("kept")
    )
    variants = (
        copies.select("_first", pl.col("asin").cast(pl.String))
        .join(kept_asin, on="_first")
        .filter(pl.col("asin") != pl.col("kept"))
        .group_by("kept")
        .agg(pl.col("asin").unique().sort().alias("variant_asins"))
        .rename({"kept": "asin"})
        .sort("asin")
    )
    return frame.filter(~pl.col("order").is_in(copies.get_column("order").implode())), variants


def drop_duplicate_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the earliest review of each (user, item); equal times keep the one earlier in the raw file.
    Rows stay in raw file order. Only the repeated pairs go through the exact sort and unique."""
    repeated = pl.Series(_repeated(_codes(frame.get_column("user_id")), _codes(frame.get_column("asin"))))
    first = (
        frame.filter(repeated)
        .sort("ts_ms", "order")
        .unique(subset=["user_id", "asin"], keep="first", maintain_order=True)
    )
    return pl.concat([frame.filter(~repeated), first]).sort("order")


def k_core(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Iteratively drop users and items with fewer than k interactions until none is left; returns rounds.

    Each round counts on integer codes with numpy's bincount (a window count per round in polars cost
    ten times as much); a round drops users and items below k at once, as filtering on both counts.
    """
    rounds = 0
    if k <= 1:
        return frame, rounds
    users, items = _codes(frame.get_column("user_id")), _codes(frame.get_column("asin"))
    rows = np.arange(frame.height)  # the rows still in, shrinking each round
    while True:
        rounds += 1
        user_counts = np.bincount(users, minlength=int(users.max(initial=0)) + 1)
        item_counts = np.bincount(items, minlength=int(items.max(initial=0)) + 1)
        keep = (user_counts[users] >= k) & (item_counts[items] >= k)
        if keep.all():
            return frame[rows], rounds
        users, items, rows = users[keep], items[keep], rows[keep]


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
