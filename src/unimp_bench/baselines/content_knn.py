"""content-knn: rank items by how much their content resembles the content of the user's history.

Each item is described by what anyone can read about it, never by who bought it: its text (TF-IDF
over title, brand, categories and description) and, where it has one, its image (CLIP embeddings from
local open_clip weights, or 8x8 thumbnails). The user is the mean of their last `max_history` earlier
items' normalized vectors, and an item's score is

    score(u, i) = (1 - image_weight) * cos(text_u, text_i) + image_weight * cos(image_u, image_i)

No interaction is ever trained on, so the baseline serves every split, the zero-shot held-out domain
and items nobody bought before included; on a split whose candidates are the held-out domain's
catalog it ranks that catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from unimp_bench.baselines.history import item_histories
from unimp_bench.baselines.item_features import image_features, text_features
from unimp_bench.clip_scoring import ClipEmbedder
from unimp_bench.config import check_choices, from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.data.transfer import FinetuneView
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import target_rank_counts
from unimp_bench.ranking import (
    SHOWN_TOP,
    earlier_items,
    examples_split,
    leave_out,
    outside_candidates,
    ranking_predictions,
)
from unimp_bench.retrieval import DOCUMENT_FIELDS, check_fields
from unimp_bench.tasks import Task


@dataclass(frozen=True)
class ContentKNNParams:
    fields: tuple[str, ...] = DOCUMENT_FIELDS  # the text an item is described by
    max_features: int = 50_000  # TF-IDF vocabulary
    image: Literal["none", "thumbnail", "clip"] = "none"
    image_weight: float = 0.5  # share of the image similarity when `image` is not none
    clip_model: str = "ViT-L-14"
    clip_checkpoint: str | None = None  # local open_clip weights for image: clip
    max_history: int = 10  # the user's latest earlier items that describe them
    exclude_seen: bool = True  # leave the user's earlier items out of the ranking (the protocol)
    batch_size: int = 512

    def __post_init__(self) -> None:
        check_choices(self, "content-knn params: ")
        check_fields(self.fields, "content-knn params: fields")
        if not self.fields:
            raise UnimpError("content-knn params: fields must name at least one text field")
        if not 0.0 <= self.image_weight <= 1.0:
            raise UnimpError("content-knn params: image_weight must be in [0, 1]")
        if min(self.max_history, self.max_features, self.batch_size) < 1:
            raise UnimpError("content-knn params: max_history, max_features and batch_size must be >= 1")


class ItemContent:
    """The catalog's content vectors: text [items, vocabulary] (sparse, L2-normalized) and image
    [items, F] (L2-normalized; zero rows for items without an image), indexed by item_idx."""

    def __init__(self, text, image: np.ndarray | None, image_weight: float):
        self.text, self.image, self.image_weight = text, image, image_weight

    @classmethod
    def of(cls, dataset: PreparedDataset, params: ContentKNNParams, embedder: ClipEmbedder | None = None):
        items = dataset.scan("items").sort("item_idx").collect()
        text = text_features(items, params.fields, params.max_features)
        image = None
        if params.image != "none":
            image = image_features(
                dataset.root, items["image_path"].to_list(), params.image, params.clip_model,
                params.clip_checkpoint, embedder, who="content-knn with image: clip",
                alternative="image: thumbnail",
            )  # fmt: skip
            image = _normalized(image.astype(np.float64))
        return cls(text, image, params.image_weight)

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        """[len(histories), items] similarity of every item to the mean of each history's vectors."""
        from scipy import sparse

        rows, members = [], []
        for row, items in enumerate(histories):
            rows += [row] * len(items)
            members += list(items)
        weights = np.ones(len(members))
        pick = sparse.csr_matrix((weights, (rows, members)), shape=(len(histories), self.text.shape[0]))
        text = _normalized_sparse(pick @ self.text)  # each history's mean text direction
        scores = (text @ self.text.T).toarray()
        if self.image is not None:
            image = _normalized(pick @ self.image)
            scores = (1.0 - self.image_weight) * scores + self.image_weight * (image @ self.image.T)
        return scores.astype(np.float64)


def _normalized(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _normalized_sparse(matrix):
    from scipy import sparse

    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sparse.diags(inverse) @ matrix


class ContentKNNPredictor:
    def __init__(self, params: ContentKNNParams, dataset: PreparedDataset, name: str = "content-knn"):
        self.name, self.params, self.dataset = name, params, dataset
        self.content = ItemContent.of(dataset, params)
        self.histories = item_histories(dataset)
        # trained on nothing, but on a from-scratch fine-tuning view a method may read only the
        # held-out domain's items in a history (data/transfer.py); None: every item
        self.history_items = dataset.history_items() if isinstance(dataset, FinetuneView) else None

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> ContentKNNPredictor:
        return cls(
            from_mapping(ContentKNNParams, spec.params, f"{spec.name} params"), dataset, name=spec.name
        )

    def config(self) -> dict:
        with_image = 0 if self.content.image is None else int((np.abs(self.content.image).sum(1) > 0).sum())
        return {
            "params": to_mapping(self.params),
            "text_vocabulary": int(self.content.text.shape[1]),
            "items_with_image_features": with_image,
            "history": f"the user's last {self.params.max_history} items before the target",
        }

    def not_applicable(self, task: Task, split: str) -> str | None:
        return None  # content only: no split needs a trained user or item vector

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def profile_histories(self, earlier: list[np.ndarray]) -> list[np.ndarray]:
        """Of each example's earlier items, the last max_history (readable ones only on a scratch
        view): what describes the user."""
        histories = []
        for items in earlier:
            if self.history_items is not None:
                items = items[self.history_items[items]]
            histories.append(items[-self.params.max_history :])
        return histories

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "recommendation":
            raise UnimpError(f"{self.name} does not serve task {task.name}")
        users = examples["user_idx"].to_numpy().astype(np.int64)
        positions = examples["target_pos"].to_numpy().astype(np.int64)
        targets = examples["target_item"].to_numpy().astype(np.int64)
        outside = outside_candidates(self.dataset, examples_split(examples))
        greater, ties, shown = [], [], []
        size = self.params.batch_size
        for start in range(0, len(examples), size):
            part = slice(start, start + size)
            earlier = earlier_items(self.histories, users[part], positions[part])
            scores = self.content.scores(self.profile_histories(earlier))
            leave_out(scores, earlier if self.params.exclude_seen else None, targets[part], outside)
            g, t = target_rank_counts(scores, targets[part])
            greater.append(g)
            ties.append(t)
            shown += np.argsort(-scores, axis=1, kind="stable")[:, :SHOWN_TOP].tolist()
        return ranking_predictions(
            examples["example_id"], np.concatenate(greater), np.concatenate(ties), shown
        )
