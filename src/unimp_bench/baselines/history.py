"""What a baseline may learn from, and each example's own past, read from the prepared dataset."""

from __future__ import annotations

import numpy as np
import polars as pl

from unimp_bench.data.contract import PreparedDataset


def training_interactions(dataset: PreparedDataset, columns: list[str]) -> pl.DataFrame:
    """The train split of training-group users (what every model may learn from), in user/pos order."""
    return (
        dataset.scan("interactions")
        .join(dataset.scan("users").filter(pl.col("group") == "train").select("user_idx"), on="user_idx")
        .filter(pl.col("split") == "train")
        .sort("user_idx", "pos")
        .select(columns)
        .collect()
    )


def training_users(dataset: PreparedDataset) -> set[int]:
    return set(
        dataset.scan("users")
        .filter(pl.col("group") == "train")
        .select("user_idx")
        .collect()["user_idx"]
        .to_list()
    )


def user_histories(dataset: PreparedDataset, column: str = "item_idx") -> dict[int, list]:
    """Every user's `column` values in chronological order (all splits and groups); an example's past
    is the prefix before its target position."""
    frame = (
        dataset.scan("interactions")
        .sort("user_idx", "pos")
        .group_by("user_idx", maintain_order=True)
        .agg(column)
        .collect()
    )
    return dict(frame.iter_rows())


def item_histories(dataset: PreparedDataset) -> dict[int, np.ndarray]:
    return {user: np.asarray(items, dtype=np.int64) for user, items in user_histories(dataset).items()}


def valid_interactions(dataset: PreparedDataset, columns: list[str]) -> pl.DataFrame:
    """Each training user's valid interaction: what early stopping and threshold tuning look at."""
    return (
        dataset.scan("interactions")
        .filter(pl.col("split") == "valid")
        .join(dataset.scan("users").filter(pl.col("group") == "train").select("user_idx"), on="user_idx")
        .sort("user_idx")
        .select(columns)
        .collect()
    )


UNSEEN_USER_SPLITS = ("new_user", "new_domain")


def no_user_vector(method: str, split: str) -> str | None:
    """Why a model with one learned vector per training user cannot serve `split`, if it cannot."""
    if split in UNSEEN_USER_SPLITS:
        return f"{method} learns one vector per training user and has none for {split} users"
    return None
