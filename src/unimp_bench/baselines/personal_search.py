"""Personalized search baselines: BM25 with a history-affinity term, and ZAM.

bm25-personal: score(i) = BM25(query, i) / max_j BM25(query, j) + weight * affinity(user, i), where
affinity is the TF-IDF cosine between item i's text and the mean of the user's history items' texts
(the example's history). The weight is chosen on valid examples only, from `weights`.

ZAM (Ai et al. 2019, the zero attention model): items, words and the query live in one space; the
user is an attention over their history items keyed by the query, with an extra zero vector so the
model can ignore a history that does not help; score(i) = (query + user) . item_i. Trained with a
softmax over the catalog on the training interactions (query = the target item's category, as in the
search task) plus an item language model (each item predicts its own words). Because the user is built
from their items, ZAM serves new users too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from unimp_bench.baselines.early_stopping import BestEpoch
from unimp_bench.baselines.history import (
    item_histories,
    valid_interactions,
    valid_outside,
)
from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.data.transfer import no_item_evidence
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import ranking_metrics, target_rank_counts
from unimp_bench.prompts import most_specific_category
from unimp_bench.ranking import (
    SHOWN_TOP,
    earlier_items,
    excluded_items,
    leave_out,
    mask_seen,
    ranking_predictions,
)
from unimp_bench.retrieval import (
    DOCUMENT_FIELDS,
    BM25Ranker,
    BM25Settings,
    check_fields,
    item_documents,
    tokenize,
)
from unimp_bench.tasks import Task

CHUNK = 1024  # examples scored per dense [examples, items] score matrix


def _rank_rows(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    greater, ties = target_rank_counts(scores, targets)
    shown = np.argsort(-scores, axis=1, kind="stable")[:, :SHOWN_TOP].tolist()
    return greater, ties, shown


@dataclass(frozen=True)
class PersonalBM25Params:
    bm25: BM25Settings = BM25Settings()
    weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)  # affinity weights tried on valid
    exclude_seen: bool = True  # leave the user's earlier items out of the ranking (valid and test)


class PersonalBM25Predictor:
    name = "bm25-personal"

    def __init__(self, params: PersonalBM25Params, dataset: PreparedDataset):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not params.weights:
            raise UnimpError("bm25-personal params: weights must list at least one value")
        if not params.bm25.exclude_seen:
            raise UnimpError("bm25-personal params: set exclude_seen at the top of params, not under bm25")
        check_fields(params.bm25.fields, "bm25 fields")
        self.params = params
        self.dataset = dataset
        documents = item_documents(dataset.scan("items").collect(), params.bm25.fields)
        self.ranker = BM25Ranker(documents, params.bm25)
        vectorizer = TfidfVectorizer(analyzer=lambda tokens: tokens, sublinear_tf=True)
        self.item_vectors = vectorizer.fit_transform(documents)  # [items, vocabulary], rows L2-normalized
        self.weight: float | None = None
        self.valid_ndcg: dict[float, float] = {}

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> PersonalBM25Predictor:
        return cls(from_mapping(PersonalBM25Params, spec.params, f"{spec.name} params"), dataset)

    def config(self) -> dict:
        return {
            "params": to_mapping(self.params),
            "affinity_weight": self.weight,
            "weight_tuned_on": "valid",
            "valid_NDCG@10_by_weight": self.valid_ndcg,
        }

    def not_applicable(self, task, split: str) -> str | None:
        return None  # it reads item texts and the example's own history, never a trained vector

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return task.builder == "search"

    def _chunks(self, examples: pl.DataFrame):
        """(targets, BM25 part, affinity part) per chunk of examples: dense [chunk, items] matrices
        stay small whatever the number of examples."""
        for start in range(0, len(examples), CHUNK):
            part = examples.slice(start, CHUNK)
            seen = excluded_items(self.dataset, part, self.params.exclude_seen)
            yield (part["target_item"].to_numpy(), *self._parts(part), seen)

    def _parts(self, examples: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores scaled to [0, 1] per query, and the history affinity, each [examples, items]."""
        lexical = {}
        for query in examples["query"].unique().to_list():
            scores = self.ranker.scores(query)
            top = scores.max()
            lexical[query] = scores / top if top > 0 else scores
        bm25 = np.stack([lexical[q] for q in examples["query"].to_list()])
        affinity = np.zeros_like(bm25)
        for row, history in enumerate(examples["history"].to_list()):
            if history:
                profile = np.asarray(self.item_vectors[history].mean(axis=0))
                affinity[row] = np.asarray(self.item_vectors @ profile.T).ravel()
        return bm25, affinity

    def tune(self, task: Task, valid: pl.DataFrame) -> None:
        counts = {weight: ([], []) for weight in self.params.weights}
        for targets, bm25, affinity, seen in self._chunks(valid):
            for weight, (greater, ties) in counts.items():
                g, t = target_rank_counts(mask_seen(bm25 + weight * affinity, seen, targets), targets)
                greater.append(g)
                ties.append(t)
        for weight, (greater, ties) in counts.items():
            scores = ranking_metrics(np.concatenate(greater), np.concatenate(ties), ["NDCG@10"])
            self.valid_ndcg[weight] = scores["NDCG@10"]
        self.weight = max(self.params.weights, key=lambda w: (self.valid_ndcg[w], -w))

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "search":
            raise UnimpError(f"bm25-personal does not serve task {task.name}")
        if self.weight is None:
            raise UnimpError("the bm25-personal affinity weight must be tuned on valid first")
        greater, ties, shown = [], [], []
        for targets, bm25, affinity, seen in self._chunks(examples):
            g, t, s = _rank_rows(mask_seen(bm25 + self.weight * affinity, seen, targets), targets)
            greater.append(g)
            ties.append(t)
            shown.extend(s)
        return ranking_predictions(
            examples["example_id"], np.concatenate(greater), np.concatenate(ties), shown
        )


# ---------------------------------------------------------------------------------------------------
# ZAM


@dataclass(frozen=True)
class ZAMParams:
    dimension: int = 64
    max_history: int = 10  # history items the user attention reads
    epochs: int = 30
    stopping_step: int = 5  # epochs without a better valid NDCG@10 before stopping
    batch_size: int = 256
    learning_rate: float = 0.005
    word_loss_weight: float = 0.5  # the item language model's share of the loss
    words_per_item: int = 32  # item text tokens kept for the language model and the query encoder
    seed: int = 0
    exclude_seen: bool = True  # leave the user's earlier items out of the ranking


class ZeroAttentionModel(nn.Module):
    def __init__(self, items: int, words: int, dimension: int):
        super().__init__()
        self.item = nn.Embedding(items + 1, dimension, padding_idx=items)  # last row: history padding
        self.word = nn.Embedding(words + 1, dimension, padding_idx=words)  # last row: query padding
        self.query_projection = nn.Linear(dimension, dimension)
        self.key = nn.Linear(dimension, dimension, bias=False)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.word.weight, std=0.05)

    def query(self, words: torch.Tensor) -> torch.Tensor:
        """[B, W] word ids (padded) -> [B, D]: tanh of a projected mean of the word vectors."""
        mask = (words != self.word.padding_idx).unsqueeze(-1).float()
        mean = (self.word(words) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.tanh(self.query_projection(mean))

    def user(self, query: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Attention over history items [B, H] keyed by the query, with one extra zero-vector slot
        whose logit is 0: an unhelpful history gets little weight. -> [B, D]"""
        vectors = self.item(history)  # [B, H, D]
        logits = (self.key(vectors) * query.unsqueeze(1)).sum(-1)  # [B, H]
        logits = logits.masked_fill(history == self.item.padding_idx, float("-inf"))
        logits = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)  # [B, H+1], zero slot last
        weights = torch.softmax(logits, dim=1)[:, :-1]  # the zero slot contributes a zero vector
        return (weights.unsqueeze(-1) * vectors).sum(1)

    def scores(self, words: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """[B, items]: (query + user) . item for every catalog item."""
        query = self.query(words)
        return (query + self.user(query, history)) @ self.item.weight[:-1].T


class ZAMPredictor:
    name = "ZAM"

    def __init__(self, params: ZAMParams, dataset: PreparedDataset, show_progress: bool = False):
        self.params = params
        self.dataset = dataset
        items = dataset.scan("items").collect().sort("item_idx")
        documents = item_documents(items, DOCUMENT_FIELDS)
        vocabulary = sorted({w for doc in documents for w in doc})
        self.word_index = {w: i for i, w in enumerate(vocabulary)}
        self.n_items, self.n_words = len(documents), len(vocabulary)
        self.item_words = self._words(documents)
        self.categories = [most_specific_category(c) or "" for c in items["categories"].to_list()]
        self.histories = item_histories(dataset)
        self.valid_outside = valid_outside(dataset)  # early stopping ranks as the evaluated split does
        torch.manual_seed(params.seed)
        self.model = ZeroAttentionModel(self.n_items, self.n_words, params.dimension)
        self.training = self._fit(dataset)

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> ZAMPredictor:
        return cls(from_mapping(ZAMParams, spec.params, f"{spec.name} params"), dataset)

    def _words(self, documents: list[list[str]]) -> torch.Tensor:
        width = self.params.words_per_item
        table = torch.full((len(documents), width), self.n_words, dtype=torch.long)
        for row, doc in enumerate(documents):
            ids = [self.word_index[w] for w in doc if w in self.word_index][:width]
            table[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        return table

    def _query_words(self, queries: list[str]) -> torch.Tensor:
        return self._words([tokenize(q) for q in queries])

    def _history(self, users: list[int], positions: list[int]) -> torch.Tensor:
        width = self.params.max_history
        table = torch.full((len(users), width), self.n_items, dtype=torch.long)
        for row, (user, position) in enumerate(zip(users, positions)):
            past = self.histories[user][max(0, position - width) : position]
            table[row, : len(past)] = torch.as_tensor(past)
        return table

    def _fit(self, dataset: PreparedDataset) -> dict:
        params = self.params
        # targets with at least one earlier item: the user attention needs a history
        train = dataset.training_interactions(["user_idx", "pos"]).filter(pl.col("pos") >= 1).rows()
        valid = valid_interactions(dataset, ["user_idx", "pos"]).filter(pl.col("pos") >= 1).rows()
        if not train:
            raise UnimpError("ZAM has no training interactions with an earlier item to learn from")
        optimizer = torch.optim.Adam(self.model.parameters(), lr=params.learning_rate)
        generator = np.random.default_rng(params.seed)
        best, epoch = BestEpoch(params.stopping_step), 0
        for epoch in range(1, params.epochs + 1):
            self.model.train()
            order = generator.permutation(len(train))
            for start in range(0, len(train), params.batch_size):
                batch = [train[i] for i in order[start : start + params.batch_size]]
                users, positions = [u for u, _ in batch], [p for _, p in batch]
                targets = torch.as_tensor([int(self.histories[u][p]) for u, p in batch])
                words = self._query_words([self.categories[int(t)] for t in targets.tolist()])
                scores = self.model.scores(words, self._history(users, positions))
                loss = nn.functional.cross_entropy(scores, targets)
                # item language model: each target item predicts its own words (softmax over words)
                item_vectors = self.model.item(targets)  # [B, D]
                word_logits = item_vectors @ self.model.word.weight[:-1].T  # [B, words]
                item_words = self.item_words[targets]  # [B, W]
                present = item_words != self.n_words
                if present.any():
                    log_probs = torch.log_softmax(word_logits, dim=1)
                    picked = log_probs.gather(1, item_words.clamp(max=self.n_words - 1))
                    loss = loss - params.word_loss_weight * (picked * present).sum() / present.sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            score = self.valid_ndcg(valid) if valid else 0.0
            if best.update(epoch, score, self.model.state_dict):
                break
        self.model.load_state_dict(best.state)
        return {"epochs_run": epoch, "best_epoch": best.epoch, "best_valid_NDCG@10": round(best.score, 6)}

    def _score(self, users: list[int], positions: list[int], queries: list[str]) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return (
                self.model.scores(self._query_words(queries), self._history(users, positions))
                .double()
                .numpy()
            )

    def valid_ndcg(self, valid: list[tuple[int, int]]) -> float:
        """NDCG@10 of the valid targets ranked as the evaluated splits rank theirs: without the user's
        earlier items (exclude_seen) and, on a fine-tuning view, within the held-out domain."""
        users, positions = [u for u, _ in valid], [p for _, p in valid]
        targets = np.asarray([self.histories[u][p] for u, p in valid])
        scores = self._score(users, positions, [self.categories[t] for t in targets.tolist()])
        seen = earlier_items(self.histories, users, positions) if self.params.exclude_seen else None
        greater, ties = target_rank_counts(leave_out(scores, seen, targets, self.valid_outside), targets)
        return ranking_metrics(greater, ties, ["NDCG@10"])["NDCG@10"]

    def config(self) -> dict:
        return {"params": to_mapping(self.params), "training": self.training}

    def not_applicable(self, task: Task, split: str) -> str | None:
        return no_item_evidence(self.name, split)  # item vectors learn only from training targets

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "search":
            raise UnimpError(f"ZAM does not serve task {task.name}")
        greater, ties, shown = [], [], []
        for start in range(0, len(examples), CHUNK):
            part = examples.slice(start, CHUNK)
            scores = self._score(
                part["user_idx"].to_list(), part["target_pos"].to_list(), part["query"].to_list()
            )
            targets = part["target_item"].to_numpy()
            seen = excluded_items(self.dataset, part, self.params.exclude_seen)
            g, t, s = _rank_rows(mask_seen(scores, seen, targets), targets)
            greater.append(g)
            ties.append(t)
            shown.extend(s)
        return ranking_predictions(
            examples["example_id"], np.concatenate(greater), np.concatenate(ties), shown
        )
