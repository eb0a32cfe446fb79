"""The held-out domain as two transfer protocols, read from one prepared dataset.

Every user with an interaction in the held-out domain (default Office) is in the `new_domain` group
and never trained on. Two splits evaluate them, both targeting each such user's LAST interaction in
the held-out domain and both ranking, by default, only that domain's catalog:

- ``new_domain`` (zero-shot): no held-out-domain interaction is trained on. A method that can only
  score items it learned from interactions (an id embedding, a popularity count) has nothing for
  these items and reports "not applicable" rather than a chance-level number.
- ``new_domain_finetune``: the held-out users' interactions in that domain are split leave-last-out
  inside it (last = test, the target above; second last = valid; earlier = train). A method may
  fine-tune on the train part of a seeded `target_share` of the held-out users, and early-stops on
  those users' valid targets. Two training regimes:
    * ``source+target``: the train split of the source users plus, for each chosen held-out user,
      every interaction before their held-out-domain valid target (their earlier source-domain items
      too). The source users' own valid and test interactions are not used (the valid targets are
      the held-out domain's);
    * ``target`` ("scratch"): only the chosen held-out users' held-out-domain train part; models
      read histories restricted to that domain.
  The difference between the two is the transfer gain.

`finetune_view(dataset, settings)` returns the dataset as the training regime sees it: the same
files, with `users.group` and `interactions.split` relabelled (never a row dropped or renumbered, so
example positions stay valid). A relabelled interaction that must be neither trained on nor
validated on gets the split ``context``: it stays in the user's history, where it was.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import polars as pl

from unimp_bench.config import check_choices
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.errors import UnimpError

TRANSFER_SPLITS = ("new_domain", "new_domain_finetune")
Regime = Literal["source+target", "target"]
REGIMES = get_args(Regime)
CONTEXT = "context"  # in the history, never a training row, never a valid target


@dataclass(frozen=True)
class FinetuneSettings:
    regime: Regime = "source+target"  # target: trained on the target train part alone
    target_share: float = 1.0  # fraction of the held-out users whose train part may be trained on
    seed: int = 0  # which held-out users make up that share

    def __post_init__(self) -> None:
        check_choices(self, "fine-tuning ")
        if not 0.0 < self.target_share <= 1.0:
            raise UnimpError(f"the target share must be in (0, 1], not {self.target_share}")

    @property
    def tag(self) -> str:
        """The suffix of a method's name under this regime: results of different regimes never share
        a leaderboard row."""
        tag = "+scratch" if self.regime == "target" else "+finetune"
        return tag + (f"+share{self.target_share:g}" if self.target_share < 1.0 else "")

    def describe(self) -> dict[str, Any]:
        trained = {
            "source+target": "source users' train split + the chosen held-out users' interactions "
            "before their held-out-domain valid target",
            "target": "the chosen held-out users' held-out-domain train part only",
        }
        return {
            "regime": self.regime,
            "trained_on": trained[self.regime],
            "target_share": self.target_share,
            "share_seed": self.seed,
            "valid_targets": "the chosen held-out users' second-last held-out-domain interaction",
        }


def _require_held_out(dataset: PreparedDataset) -> str:
    domain = dataset.held_out_domain
    if domain is None:
        raise UnimpError(
            f"{dataset.root} has no held-out domain with users (prepare with --new-domain DOMAIN), "
            "so it has no new_domain splits"
        )
    return domain


def candidate_items(dataset: PreparedDataset, split: str) -> np.ndarray | None:
    """The items a ranking on `split` may return (sorted item ids), or None for the whole catalog."""
    domain = dataset.held_out_domain
    if split not in TRANSFER_SPLITS or dataset.candidates == "all" or domain is None:
        return None  # (without a held-out domain these splits have no examples to rank)
    items = dataset.scan("items").filter(pl.col("domain") == domain).select("item_idx").collect()
    return np.sort(items["item_idx"].to_numpy().astype(np.int64))


def describe_candidates(dataset: PreparedDataset, split: str) -> dict[str, Any]:
    """What a ranking result on `split` ranked over, for its provenance."""
    chosen = candidate_items(dataset, split)
    if chosen is None:
        total = dataset.catalog_size
        return {"candidates": "the whole catalog", "n_candidates": int(total)}
    return {"candidates": f"the {dataset.held_out_domain} catalog", "n_candidates": int(len(chosen))}


def transfer_gain(results) -> dict[str, float] | None:
    """Source+target minus scratch for every metric both new_domain_finetune results of one share
    report, from a run's results (Result objects); None unless both regimes are among them."""
    tuned = {
        r.provenance["config"]["finetune"]["regime"]: r
        for r in results
        if r.split == "new_domain_finetune" and "finetune" in r.provenance.get("config", {})
    }
    if set(tuned) != set(REGIMES) or any("not_applicable" in r.provenance for r in tuned.values()):
        return None
    source, scratch = tuned["source+target"].scores, tuned["target"].scores
    return {metric: source[metric] - scratch[metric] for metric in source if metric in scratch}


def candidates_tag(dataset: PreparedDataset, split: str) -> str:
    """The method-name suffix of a ranking over a non-default candidate set on `split`."""
    return "+all_candidates" if split in TRANSFER_SPLITS and dataset.candidates == "all" else ""


def chosen_users(held_out: np.ndarray, settings: FinetuneSettings) -> np.ndarray:
    """The seeded `target_share` of the held-out users (at least one), sorted."""
    ordered = np.sort(np.asarray(held_out, dtype=np.int64))
    count = max(1, int(round(settings.target_share * len(ordered))))
    rng = np.random.default_rng([settings.seed, 0x7A26])
    return np.sort(ordered[rng.permutation(len(ordered))[:count]])


@dataclass(frozen=True)
class FinetuneView(PreparedDataset):
    """The dataset as one fine-tuning regime sees it (see the module docstring)."""

    settings: FinetuneSettings = FinetuneSettings()

    def scan(self, name: str) -> pl.LazyFrame:
        if name == "users":
            return self._users.lazy()
        if name == "interactions":  # the stored rows with the regime's split, computed once
            columns = super().scan("interactions").collect_schema().names()
            return (
                super()
                .scan("interactions")
                .drop("split")
                .join(self._splits.lazy(), on=["user_idx", "pos"], how="left", maintain_order="left")
                .select(columns)
            )
        return super().scan(name)

    def _chosen(self) -> pl.Series:
        held = super().scan("users").filter(pl.col("group") == "new_domain").select("user_idx").collect()
        return pl.Series("user_idx", chosen_users(held["user_idx"].to_numpy(), self.settings), pl.Int32)

    @functools.cached_property
    def _users(self) -> pl.DataFrame:
        chosen = self._chosen().implode()
        group = pl.col("group")
        if self.settings.regime == "target":  # the source users train nothing
            group = pl.when(group == "train").then(pl.lit("source")).otherwise(group)
        return (
            super()
            .scan("users")
            .with_columns(
                pl.when(pl.col("user_idx").is_in(chosen))
                .then(pl.lit("train"))
                .otherwise(group)
                .alias("group")
            )
            .collect()
        )

    @functools.cached_property
    def _splits(self) -> pl.DataFrame:
        """(user_idx, pos, split) of every interaction under this regime."""
        domain = _require_held_out(self)
        groups = super().scan("users").select("user_idx", "group")
        in_domain = super().scan("items").select("item_idx", (pl.col("domain") == domain).alias("in_domain"))
        frame = (
            super()
            .scan("interactions")
            .join(groups, on="user_idx", how="left")
            .join(in_domain, on="item_idx", how="left")
        )
        held = pl.col("group") == "new_domain"
        # rank of each held-out-domain interaction within its user, counted from the last (0 = last)
        from_last = (
            pl.when(pl.col("in_domain"))
            .then(pl.col("in_domain").cast(pl.Int32).reverse().cum_sum().reverse().over("user_idx") - 1)
            .otherwise(None)
        )
        frame = frame.sort("user_idx", "pos").with_columns(from_last.alias("from_last"))
        valid_pos = (
            pl.when(pl.col("from_last") == 1).then(pl.col("pos")).otherwise(None).max().over("user_idx")
        )
        frame = frame.with_columns(valid_pos.alias("valid_pos"))
        held_split = (
            pl.when(pl.col("from_last") == 0)
            .then(pl.lit("test"))
            .when(pl.col("from_last") == 1)
            .then(pl.lit("valid"))
            .when(pl.col("in_domain"))
            .then(pl.lit("train"))
        )
        if self.settings.regime == "source+target":  # the user's source items before the valid target
            held_split = held_split.when(pl.col("pos") < pl.col("valid_pos")).then(pl.lit("train"))
            source_split = pl.when(pl.col("split") == "train").then(pl.lit("train"))
        else:
            source_split = pl.when(pl.lit(False)).then(pl.lit("train"))
        split = (
            pl.when(held)
            .then(held_split.otherwise(pl.lit(CONTEXT)))
            .when(pl.col("group") == "train")
            .then(source_split.otherwise(pl.lit(CONTEXT)))
            .otherwise(pl.col("split"))  # new_user users: untouched, never trained
        )
        return frame.select("user_idx", "pos", split.alias("split")).collect()

    def history_items(self) -> np.ndarray | None:
        """Which items a model of this regime may read in a history: [catalog] booleans, or None for
        every item. Trained on the held-out domain alone, it never saw the other domains' items."""
        if self.settings.regime != "target":
            return None
        domains = super().scan("items").sort("item_idx").select("domain").collect()["domain"]
        return (domains == _require_held_out(self)).to_numpy()


def finetune_view(dataset: PreparedDataset, settings: FinetuneSettings) -> FinetuneView:
    _require_held_out(dataset)
    view = FinetuneView(dataset.root, dataset.manifest, dataset.candidates, settings)
    valid = view.scan("interactions").filter(pl.col("split") == "valid").select(pl.len()).collect().item()
    if valid == 0:
        raise UnimpError(
            f"no held-out {dataset.held_out_domain} user has two interactions in that domain, so "
            "new_domain_finetune has no valid targets"
        )
    return view


def no_item_evidence(method: str, split: str) -> str | None:
    """Why a model that knows items only from training interactions (an id vector, a count) cannot
    serve the zero-shot split, whose items no training interaction holds."""
    if split == "new_domain":
        return (
            f"{method} knows items only from training interactions and none of the held-out domain's "
            "items has one (zero-shot); see new_domain_finetune"
        )
    return None
