"""What a baseline may learn from, and each example's own past, read from the prepared dataset."""

from __future__ import annotations

import numpy as np
import polars as pl

from unimp_bench.data.contract import PreparedDataset


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


def valid_outside(dataset: PreparedDataset) -> np.ndarray | None:
    """The items early stopping leaves out of its valid rankings: on a fine-tuning view, those outside
    the held-out domain (its valid targets are ranked as its test targets will be); else None."""
    from unimp_bench.data.transfer import FinetuneView
    from unimp_bench.ranking import outside_candidates

    return outside_candidates(dataset, "new_domain_finetune") if isinstance(dataset, FinetuneView) else None
