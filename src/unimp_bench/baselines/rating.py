"""Preference (rating prediction) baselines: global / user / item means and biased matrix factorization.

- global-mean: the mean training rating.
- user-mean: the mean of the user's own ratings before the target (their visible past, as in the
  prompt; held-out users have one too), else the global mean.
- item-mean: the mean training rating of the target item, else the global mean.
- BiasedMF: mu + b_user + b_item + p_user . q_item (Koren et al. 2009), fitted on training ratings
  with L2 regularization, full-batch Adam, the epoch with the best valid RMSE kept. It learns one
  vector per training user, so it is not applicable to new_user / new_domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import torch

from unimp_bench.baselines.early_stopping import BestEpoch
from unimp_bench.baselines.history import (
    no_user_vector,
    user_histories,
    valid_interactions,
)
from unimp_bench.config import check_choices, from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.data.transfer import no_item_evidence
from unimp_bench.errors import UnimpError
from unimp_bench.tasks import Task

Mean = Literal["global", "user", "item"]
RATING_RANGE = (1.0, 5.0)


def _training_ratings(dataset: PreparedDataset) -> pl.DataFrame:
    ratings = dataset.training_interactions(["user_idx", "item_idx", "rating"]).drop_nulls("rating")
    if ratings.is_empty():
        raise UnimpError(f"{dataset.root} has no training ratings to learn from")
    return ratings


@dataclass(frozen=True)
class MeanParams:
    of: Mean = "global"

    def __post_init__(self) -> None:
        check_choices(self, "mean params: ")


class MeanRatingPredictor:
    def __init__(self, name: str, params: MeanParams, dataset: PreparedDataset):
        self.name = name
        self.params = params
        ratings = _training_ratings(dataset)
        self.global_mean = float(ratings["rating"].mean())
        self.item_means = dict(ratings.group_by("item_idx").agg(pl.col("rating").mean()).iter_rows())
        self.past_ratings = user_histories(dataset, "rating") if params.of == "user" else {}

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> MeanRatingPredictor:
        return cls(spec.name, from_mapping(MeanParams, spec.params, f"{spec.name} params"), dataset)

    def config(self) -> dict:
        return {"params": to_mapping(self.params), "global_mean": self.global_mean}

    def not_applicable(self, task: Task, split: str) -> str | None:
        # an item mean needs the item's training ratings; zero-shot it would be the global mean
        return no_item_evidence(self.name, split) if self.params.of == "item" else None

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def _user_mean(self, user: int, position: int) -> float:
        past = [r for r in self.past_ratings.get(user, [])[:position] if r is not None]
        return float(np.mean(past)) if past else self.global_mean

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "preference":
            raise UnimpError(f"{self.name} does not serve task {task.name}")
        if self.params.of == "global":
            ratings = [self.global_mean] * len(examples)
        elif self.params.of == "item":
            ratings = [self.item_means.get(i, self.global_mean) for i in examples["target_item"].to_list()]
        else:
            ratings = [
                self._user_mean(u, p)
                for u, p in zip(examples["user_idx"].to_list(), examples["target_pos"].to_list())
            ]
        return examples.select("example_id", pl.Series("rating", ratings, dtype=pl.Float64))


@dataclass(frozen=True)
class BiasedMFParams:
    factors: int = 16
    epochs: int = 300  # full-batch steps, at most
    learning_rate: float = 0.02
    weight_decay: float = 0.05  # L2 on the user/item factors and biases, per rating
    stopping_step: int = 20  # steps without a better valid RMSE before stopping
    seed: int = 0


class BiasedMFPredictor:
    name = "BiasedMF"

    def __init__(self, params: BiasedMFParams, dataset: PreparedDataset):
        self.params = params
        self.known_users = dataset.training_users()
        ratings = _training_ratings(dataset)
        self.users = ratings["user_idx"].to_numpy().astype(np.int64)
        self.items = ratings["item_idx"].to_numpy().astype(np.int64)
        self.values = ratings["rating"].to_numpy().astype(np.float32)
        self.n_users = dataset.scan("users").select(pl.len()).collect().item()
        self.n_items = dataset.catalog_size
        valid = valid_interactions(dataset, ["user_idx", "item_idx", "rating"]).drop_nulls("rating")
        self.training = self._fit(valid)

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> BiasedMFPredictor:
        return cls(from_mapping(BiasedMFParams, spec.params, f"{spec.name} params"), dataset)

    def _fit(self, valid: pl.DataFrame) -> dict:
        params = self.params
        generator = torch.Generator().manual_seed(params.seed)
        self.mu = float(self.values.mean())
        self.user_bias = torch.zeros(self.n_users, requires_grad=True)
        self.item_bias = torch.zeros(self.n_items, requires_grad=True)
        self.user_factors = (
            0.01 * torch.randn(self.n_users, params.factors, generator=generator)
        ).requires_grad_()
        self.item_factors = (
            0.01 * torch.randn(self.n_items, params.factors, generator=generator)
        ).requires_grad_()
        weights = [self.user_bias, self.item_bias, self.user_factors, self.item_factors]
        optimizer = torch.optim.Adam(weights, lr=params.learning_rate)
        users, items = torch.as_tensor(self.users), torch.as_tensor(self.items)
        target = torch.as_tensor(self.values)
        valid_users = valid["user_idx"].to_numpy().astype(np.int64)
        valid_items = valid["item_idx"].to_numpy().astype(np.int64)
        valid_values = valid["rating"].to_numpy()
        best, step = BestEpoch(params.stopping_step, higher_is_better=False), 0
        for step in range(1, params.epochs + 1):
            optimizer.zero_grad()
            predicted = self._raw(users, items)
            penalty = (
                self.user_factors[users].pow(2).sum(1)
                + self.item_factors[items].pow(2).sum(1)
                + self.user_bias[users].pow(2)
                + self.item_bias[items].pow(2)
            )
            loss = ((predicted - target) ** 2 + params.weight_decay * penalty).mean()
            loss.backward()
            optimizer.step()
            rmse = (
                float(np.sqrt(np.mean((self._predict(valid_users, valid_items) - valid_values) ** 2)))
                if len(valid)
                else 0.0
            )
            if best.update(step, rmse, lambda: [w.detach() for w in weights]):
                break
        with torch.no_grad():
            for weight, kept in zip(weights, best.state):
                weight.copy_(kept)
        return {"steps_run": step, "best_step": best.epoch, "best_valid_RMSE": round(best.score, 6)}

    def _raw(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors[users] * self.item_factors[items]).sum(1)
        return self.mu + self.user_bias[users] + self.item_bias[items] + dot

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            raw = self._raw(torch.as_tensor(users), torch.as_tensor(items)).numpy()
        return np.clip(raw, *RATING_RANGE)

    def config(self) -> dict:
        return {"params": to_mapping(self.params), "training": self.training}

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def not_applicable(self, task: Task, split: str) -> str | None:
        return no_user_vector("BiasedMF", split)

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "preference":
            raise UnimpError(f"BiasedMF does not serve task {task.name}")
        users = examples["user_idx"].to_numpy().astype(np.int64)
        if not set(users.tolist()) <= self.known_users:
            raise UnimpError("BiasedMF has no vector for a user it did not train on")
        predicted = self._predict(users, examples["target_item"].to_numpy().astype(np.int64))
        return examples.select("example_id", pl.Series("rating", predicted.astype(np.float64)))
