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


UNSEEN_USER_SPLITS = ("new_user", "new_domain", "new_domain_finetune")


def no_user_vector(method: str, split: str, dataset: PreparedDataset | None = None) -> str | None:
    """Why a model with one learned vector per training user cannot serve `split`, if it cannot. On
    new_domain_finetune it can when it was trained on every held-out user's train part (a fine-tuning
    view with share 1); a smaller share leaves the other users without a vector."""
    from unimp_bench.data.transfer import FinetuneView

    if split == "new_domain_finetune" and isinstance(dataset, FinetuneView):
        if dataset.settings.target_share == 1.0:
            return None
        return (
            f"{method} learns one vector per training user and has none for the held-out users "
            "left out of the target share"
        )
    if split in UNSEEN_USER_SPLITS:
        return f"{method} learns one vector per training user and has none for {split} users"
    return None


def no_item_evidence(method: str, split: str) -> str | None:
    """Why a model that knows items only from training interactions (an id vector, a count) cannot
    serve the zero-shot split, whose items no training interaction holds."""
    if split == "new_domain":
        return (
            f"{method} knows items only from training interactions and none of the held-out domain's "
            "items has one (zero-shot); see new_domain_finetune"
        )
    return None


def seen_items(dataset: PreparedDataset, examples: pl.DataFrame) -> list[np.ndarray]:
    """For each example, every item its user interacted with before the target position."""
    keys = examples.select("user_idx", "target_pos").with_row_index("row")
    earlier = (
        dataset.scan("interactions")
        .select("user_idx", "pos", "item_idx")
        .join(keys.lazy(), on="user_idx")
        .filter(pl.col("pos") < pl.col("target_pos"))
        .group_by("row")
        .agg(pl.col("item_idx"))
        .collect()
    )
    by_row = dict(zip(earlier["row"].to_list(), earlier["item_idx"].to_list()))
    return [np.asarray(by_row.get(i, []), dtype=np.int64) for i in range(len(examples))]


def examples_split(examples: pl.DataFrame) -> str | None:
    splits = examples["split"].unique().to_list() if "split" in examples.columns else []
    return splits[0] if len(splits) == 1 else None


def outside_candidates(dataset: PreparedDataset, split: str | None) -> np.ndarray | None:
    """The items a ranking on `split` must leave out (those outside its candidate catalog), or None."""
    from unimp_bench.data.transfer import candidate_items

    chosen = candidate_items(dataset, split) if split else None
    if chosen is None:
        return None
    catalog = dataset.scan("items").select(pl.len()).collect().item()
    keep = np.zeros(catalog, dtype=bool)
    keep[chosen] = True
    return np.flatnonzero(~keep).astype(np.int64)


def valid_outside(dataset: PreparedDataset) -> np.ndarray | None:
    """The items early stopping leaves out of its valid rankings: on a fine-tuning view, those outside
    the held-out domain (its valid targets are ranked as its test targets will be); else None."""
    from unimp_bench.data.transfer import FinetuneView

    return outside_candidates(dataset, "new_domain_finetune") if isinstance(dataset, FinetuneView) else None


def excluded_items(
    dataset: PreparedDataset, examples: pl.DataFrame, exclude_seen: bool
) -> list[np.ndarray] | None:
    """Per example, the items its ranking leaves out: the user's earlier items (with `exclude_seen`)
    and every item outside the split's candidates (on the new_domain splits, by default, all but the
    held-out domain's). None when nothing is left out."""
    outside = outside_candidates(dataset, examples_split(examples))
    seen = seen_items(dataset, examples) if exclude_seen else None
    if outside is None:
        return seen
    if seen is None:
        return [outside] * len(examples)
    return [np.union1d(items, outside) for items in seen]
