"""Explanation by retrieval: answer with the most similar existing review.

For an example (user, item h): the candidates are h's training reviews (train split of training users,
so never a valid/test review); the answer is the candidate closest (TF-IDF cosine) to the user's own
earlier reviews, or, for a user without earlier reviews, the candidate closest to the centroid of h's
reviews (its most typical review). An item without training reviews gets the user's latest earlier
review, else the empty string; how many answers came from each route is recorded in the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl

from unimp_bench.baselines.history import user_histories
from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.errors import UnimpError
from unimp_bench.prompts import clean_text
from unimp_bench.tasks import Task


@dataclass(frozen=True)
class RetrievalParams:
    max_features: int = 50_000  # TF-IDF vocabulary size
    profile_reviews: int = 5  # the user's latest earlier reviews that describe them


class ReviewRetrievalPredictor:
    name = "review-retrieval"

    def __init__(self, params: RetrievalParams, dataset: PreparedDataset):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.params = params
        reviews = dataset.training_interactions(["item_idx", "review_text"]).filter(
            pl.col("review_text").is_not_null() & (pl.col("review_text").str.strip_chars() != "")
        )
        if reviews.is_empty():
            raise UnimpError(f"{dataset.root} has no training reviews to retrieve from")
        self.texts = reviews["review_text"].to_list()
        self.vectorizer = TfidfVectorizer(max_features=params.max_features, sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform(self.texts)  # rows L2-normalized
        self.rows_of_item: dict[int, np.ndarray] = {
            item: np.asarray(rows, dtype=np.int64)
            for item, rows in reviews.with_row_index("row").group_by("item_idx").agg("row").iter_rows()
        }
        self.past_reviews = user_histories(dataset, "review_text")
        self.routes: Counter = Counter()

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> ReviewRetrievalPredictor:
        return cls(from_mapping(RetrievalParams, spec.params, f"{spec.name} params"), dataset)

    def config(self) -> dict:
        return {"params": to_mapping(self.params), "answers_by_route": dict(sorted(self.routes.items()))}

    def not_applicable(self, task, split: str) -> str | None:
        return None  # every split: an item without training reviews takes the documented fallback

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def _answer(self, user: int, position: int, item: int, max_words: int) -> str:
        earlier = [r for r in self.past_reviews.get(user, [])[:position] if r and r.strip()]
        rows = self.rows_of_item.get(item)
        if rows is None:
            self.routes["user's latest review (item has no training review)" if earlier else "empty"] += 1
            return clean_text(earlier[-1], max_words) if earlier else ""
        candidates = self.matrix[rows]
        if earlier:
            query = self.vectorizer.transform([" ".join(earlier[-self.params.profile_reviews :])])
            self.routes["closest to the user's reviews"] += 1
        else:
            query = candidates.mean(axis=0)
            self.routes["most typical review of the item"] += 1
        query = query.toarray() if hasattr(query, "toarray") else np.asarray(query)
        similarity = np.asarray(candidates @ query.ravel()).ravel()
        return clean_text(self.texts[rows[int(np.argmax(similarity))]], max_words)

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.builder != "explanation":
            raise UnimpError(f"review-retrieval does not serve task {task.name}")
        self.routes.clear()  # the counts describe this call's examples (one split), not earlier ones
        texts = [
            self._answer(u, p, i, task.review_max_words)
            for u, p, i in zip(
                examples["user_idx"].to_list(),
                examples["target_pos"].to_list(),
                examples["target_item"].to_list(),
            )
        ]
        return examples.select("example_id", pl.Series("text", texts, dtype=pl.String))
