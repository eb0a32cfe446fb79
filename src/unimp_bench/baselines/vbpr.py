"""VBPR (He & McAuley 2016): BPR matrix factorization plus a visual term from item image features.

    score(u, i) = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

f_i are the item's image features: CLIP image embeddings (`features: clip`, open_clip weights from a
local file) or, where no CLIP weights are at hand, an 8x8 RGB thumbnail (`features: thumbnail`, a weak
but weight-free stand-in); an item without an image has f_i = 0. Trained with the BPR loss on the
training interactions (one uniform negative per positive), the epoch with the best valid NDCG@10 kept.
It learns one vector per training user, so it is not applicable to new_user / new_domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import torch
from torch import nn

from unimp_bench.baselines.early_stopping import BestEpoch
from unimp_bench.baselines.history import (
    item_histories,
    no_user_vector,
    valid_interactions,
    valid_outside,
)
from unimp_bench.baselines.item_features import image_features
from unimp_bench.clip_scoring import ClipEmbedder
from unimp_bench.config import check_choices, from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import ranking_metrics, target_rank_counts
from unimp_bench.ranking import (
    SHOWN_TOP,
    earlier_items,
    examples_split,
    leave_out,
    outside_candidates,
    ranking_predictions,
)
from unimp_bench.tasks import Task

Features = Literal["clip", "thumbnail"]


@dataclass(frozen=True)
class VBPRParams:
    features: Features = "clip"
    clip_model: str = "ViT-L-14"
    clip_checkpoint: str | None = None  # local open_clip weights for features: clip
    factors: int = 32  # gamma dimension
    visual_factors: int = 32  # theta dimension (E maps image features to it)
    epochs: int = 50
    stopping_step: int = 5
    batch_size: int = 1024
    learning_rate: float = 0.005
    weight_decay: float = 1e-5
    exclude_seen: bool = True  # leave the user's earlier items out of the ranking
    seed: int = 0

    def __post_init__(self) -> None:
        check_choices(self, "VBPR params: ")


class VisualBPR(nn.Module):
    def __init__(self, users: int, features: torch.Tensor, factors: int, visual_factors: int):
        super().__init__()
        items = features.shape[0]
        self.register_buffer("features", features)  # [items, F], fixed
        self.user_gamma = nn.Embedding(users, factors)
        self.item_gamma = nn.Embedding(items, factors)
        self.user_theta = nn.Embedding(users, visual_factors)
        self.item_bias = nn.Embedding(items, 1)
        self.projection = nn.Linear(features.shape[1], visual_factors, bias=False)  # E
        self.visual_bias = nn.Linear(features.shape[1], 1, bias=False)  # beta'
        for table in (self.user_gamma, self.item_gamma, self.user_theta):
            nn.init.normal_(table.weight, std=0.01)
        nn.init.zeros_(self.item_bias.weight)

    def item_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per item: gamma_i [I, K], E f_i [I, K'], beta_i + beta' . f_i [I]."""
        visual = self.projection(self.features)
        bias = self.item_bias.weight.squeeze(1) + self.visual_bias(self.features).squeeze(1)
        return self.item_gamma.weight, visual, bias

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gamma, visual, bias = self.item_terms()
        return (
            bias[items]
            + (self.user_gamma(users) * gamma[items]).sum(1)
            + (self.user_theta(users) * visual[items]).sum(1)
        )

    def all_scores(self, users: torch.Tensor) -> torch.Tensor:
        """[B, items]."""
        gamma, visual, bias = self.item_terms()
        return bias + self.user_gamma(users) @ gamma.T + self.user_theta(users) @ visual.T


class VBPRPredictor:
    def __init__(
        self,
        params: VBPRParams,
        dataset: PreparedDataset,
        embedder: ClipEmbedder | None = None,
        name: str = "VBPR",
    ):
        self.name = name
        self.params = params
        self.dataset = dataset
        items = dataset.scan("items").select("item_idx", "image_path").sort("item_idx").collect()
        paths = items["image_path"].to_list()
        features = image_features(
            dataset.root, paths, params.features, params.clip_model, params.clip_checkpoint, embedder,
            who="VBPR", alternative="vbpr-thumbnail",
        )  # fmt: skip
        self.items_with_image = int(sum(1 for p in paths if p))
        self.known = dataset.training_users()
        self.histories = item_histories(dataset)
        n_users = dataset.scan("users").select(pl.len()).collect().item()
        torch.manual_seed(params.seed)
        self.model = VisualBPR(n_users, torch.as_tensor(features), params.factors, params.visual_factors)
        self.training = self._fit()

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> VBPRPredictor:
        return cls(from_mapping(VBPRParams, spec.params, f"{spec.name} params"), dataset, name=spec.name)

    def _fit(self) -> dict:
        params = self.params
        train = self.dataset.training_interactions(["user_idx", "item_idx"])
        users = torch.as_tensor(train["user_idx"].to_numpy().astype(np.int64))
        positives = torch.as_tensor(train["item_idx"].to_numpy().astype(np.int64))
        valid = valid_interactions(self.dataset, ["user_idx", "pos", "item_idx"])
        outside = valid_outside(self.dataset)  # ranked as the evaluated split will be
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        generator = torch.Generator().manual_seed(params.seed)
        n_items = self.model.features.shape[0]
        best, epoch = BestEpoch(params.stopping_step), 0
        for epoch in range(1, params.epochs + 1):
            self.model.train()
            order = torch.randperm(len(users), generator=generator)
            negatives = torch.randint(0, n_items, (len(users),), generator=generator)
            for start in range(0, len(users), params.batch_size):
                part = order[start : start + params.batch_size]
                margin = self.model.pair_scores(users[part], positives[part]) - self.model.pair_scores(
                    users[part], negatives[part]
                )
                loss = -nn.functional.logsigmoid(margin).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            score = (
                self._ndcg(
                    valid["user_idx"].to_numpy(),
                    valid["pos"].to_numpy(),
                    valid["item_idx"].to_numpy(),
                    outside,
                )
                if len(valid)
                else 0.0
            )
            if best.update(epoch, score, self.model.state_dict):
                break
        self.model.load_state_dict(best.state)
        return {
            "epochs_run": epoch,
            "best_epoch": best.epoch,
            "best_valid_NDCG@10": round(best.score, 6),
            "items_with_image": self.items_with_image,
        }

    def _scores(
        self, users: np.ndarray, positions: np.ndarray, targets: np.ndarray, outside: np.ndarray | None
    ) -> np.ndarray:
        """[users, catalog] scores with the user's earlier items (with exclude_seen) and the items
        outside the split's candidates (`outside`) set to -inf; targets are never left out."""
        self.model.eval()
        with torch.no_grad():
            scores = self.model.all_scores(torch.as_tensor(users.astype(np.int64))).double().numpy()
        seen = earlier_items(self.histories, users, positions) if self.params.exclude_seen else None
        return leave_out(scores, seen, targets, outside)

    def _ndcg(
        self, users: np.ndarray, positions: np.ndarray, targets: np.ndarray, outside: np.ndarray | None
    ) -> float:
        greater, ties = target_rank_counts(self._scores(users, positions, targets, outside), targets)
        return ranking_metrics(greater, ties, ["NDCG@10"])["NDCG@10"]

    def config(self) -> dict:
        return {"params": to_mapping(self.params), "training": self.training}

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def not_applicable(self, task: Task, split: str) -> str | None:
        return no_user_vector(self.name, split, self.dataset)

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "recommendation":
            raise UnimpError(f"{self.name} does not serve task {task.name}")
        users = examples["user_idx"].to_numpy()
        if not set(users.tolist()) <= self.known:
            raise UnimpError("VBPR has no vector for a user it did not train on")
        outside = outside_candidates(self.dataset, examples_split(examples))
        greater, ties, shown = [], [], []
        for start in range(0, len(examples), 1024):
            part = slice(start, start + 1024)
            targets = examples["target_item"].to_numpy()[part]
            scores = self._scores(users[part], examples["target_pos"].to_numpy()[part], targets, outside)
            g, t = target_rank_counts(scores, targets)
            greater.append(g)
            ties.append(t)
            shown.extend(np.argsort(-scores, axis=1, kind="stable")[:, :SHOWN_TOP].tolist())
        return ranking_predictions(
            examples["example_id"], np.concatenate(greater), np.concatenate(ties), shown
        )
