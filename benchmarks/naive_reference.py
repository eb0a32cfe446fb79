"""The obvious way to prepare Amazon reviews: json.loads per line into pandas, Python loops for k-core.

It is the reference that benchmarks/prepare.py measures against, and tests use it as an independent
implementation of the same rules (copies of one review under several asins collapsed, earliest
duplicate kept, iterative k-core, leave-last-out).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd


def _read_json_lines(path: Path) -> pd.DataFrame:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return pd.DataFrame([json.loads(line) for line in handle])


def read_reviews(path: Path) -> pd.DataFrame:
    frame = _read_json_lines(path)
    frame["line"] = range(1, len(frame) + 1)
    return frame.rename(
        columns={
            "reviewerID": "user_id",
            "overall": "rating",
            "unixReviewTime": "timestamp",
            "reviewText": "review_text",
        }
    )


def k_core_loops(pairs: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    while True:
        user_count: dict[str, int] = {}
        item_count: dict[str, int] = {}
        for user, item in pairs:
            user_count[user] = user_count.get(user, 0) + 1
            item_count[item] = item_count.get(item, 0) + 1
        kept = [(u, i) for u, i in pairs if user_count[u] >= k and item_count[i] >= k]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


def collapse_copies(frame: pd.DataFrame) -> pd.DataFrame:
    """One user's reviews with the same time, text and summary are one review (the first line); a
    review with neither text nor summary is never a copy."""
    text = frame.get("review_text", pd.Series([None] * len(frame))).fillna("").astype(str)
    summary = frame.get("summary", pd.Series([None] * len(frame))).fillna("").astype(str)
    keyed = frame.assign(_text=text.values, _summary=summary.values)
    empty = (keyed["_text"] == "") & (keyed["_summary"] == "")
    copies = keyed[~empty].duplicated(["user_id", "timestamp", "_text", "_summary"], keep="first")
    drop = set(keyed[~empty][copies]["line"])
    return frame[~frame["line"].isin(drop)]


def prepare(review_path: Path, meta_path: Path | None, k: int = 5) -> pd.DataFrame:
    frame = collapse_copies(read_reviews(review_path))
    frame = frame.sort_values(["timestamp", "line"], kind="stable").drop_duplicates(
        ["user_id", "asin"], keep="first"
    )
    meta = None
    if meta_path is not None:
        meta = _read_json_lines(meta_path).drop_duplicates("asin")
        frame = frame[frame["asin"].isin(set(meta["asin"]))]
    kept = set(k_core_loops(list(zip(frame["user_id"], frame["asin"])), k))
    frame = frame[[(u, i) in kept for u, i in zip(frame["user_id"], frame["asin"])]]
    frame = frame.sort_values(["user_id", "timestamp", "line"], kind="stable").copy()
    splits = []
    for _, history in frame.groupby("user_id", sort=False):
        n = len(history)
        splits += ["train"] * max(0, n - 2) + (["valid"] if n >= 2 else []) + ["test"]
    frame["split"] = splits
    if meta is not None:
        frame = frame.merge(meta[["asin", "title", "brand", "price"]], on="asin", how="left")
    return frame
