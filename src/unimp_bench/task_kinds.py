"""Task kinds: everything that sets one kind of task apart, as one object per kind.

A task YAML names its kind (`builder: recommendation`); every stage looks the kind up here, so a new
task that reuses a kind is one more YAML file, and a new kind is one more object in this module:

- `placeholders`: what each instruction template must use (checked by tasks.py), and `check`, the
  kind's own conditions on a task's settings;
- `columns`: the example columns the kind adds to the common ones (examples.py writes them);
- `build_row`: how one example is built from the user's sequence and the target position;
- `family`: the prediction fields it reads and the scorer (evaluation/scoring.py);
- `untrainable`: why UniMP cannot train on it, or None when it can;
- baselines serve kinds: their YAML lists the kinds they answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from unimp_bench.evaluation.scoring import FAMILIES, MetricFamily
from unimp_bench.prompts import (
    Segment,
    clean_text,
    image_code_text,
    item_segment,
    item_token,
    rating_token,
)

if TYPE_CHECKING:
    from unimp_bench.examples import ExampleBuilder
    from unimp_bench.tasks import Task

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2, "context": 3}  # how examples.py codes a user's splits
# (context: a fine-tuning view's history-only interaction, data/transfer.py)


@dataclass
class RowContext:
    """One example about to be built: the user's sequence and the position it targets."""

    builder: ExampleBuilder  # the catalog, the BM25 retriever and the negative sampler
    task: Task
    split: str
    items: list[int]  # the user's items in order
    splits: list[int]  # their split codes (0 train, 1 valid, 2 test)
    ratings: np.ndarray
    reviews: list[str] | None
    position: int  # the target position
    last_train: int  # the user's last train position (-1: none)
    rng: np.random.Generator | None

    def history(self, first: int) -> list[int]:
        """The last max_history items before position `first`."""
        return self.items[max(0, first - self.task.max_history) : first]


@dataclass
class Row:
    """What a kind adds to an example: the first position it asks about, the template's segments
    other than the history, its own columns and the target text the model learns to produce."""

    first: int
    segments: dict[str, Segment]
    fields: dict[str, Any]
    target_text: str


@dataclass(frozen=True)
class TaskKind:
    name: str
    placeholders: frozenset[str]
    family: MetricFamily
    columns: tuple[tuple[str, pa.DataType], ...]
    build_row: Callable[[RowContext], Row | str]  # a Row, or the reason the example is skipped
    check: Callable[[Task], str | None] = field(default=lambda task: None)  # what is wrong, if anything
    untrainable: str | None = None
    reads_reviews: bool = False
    draws: bool = False  # build_row draws from the example's random generator


def _recommendation_row(ctx: RowContext) -> Row | str:
    target = ctx.items[ctx.position]
    return Row(ctx.position, {}, {"target_item": target}, item_token(target))


def _query(ctx: RowContext) -> tuple[int, str] | str:
    target = ctx.items[ctx.position]
    query = ctx.builder.catalog.category[target]
    return "target item has no category" if query is None else (target, query)


def _search_row(ctx: RowContext) -> Row | str:
    found = _query(ctx)
    if isinstance(found, str):
        return found
    target, query = found
    return Row(
        ctx.position, {"query": Segment(query)}, {"target_item": target, "query": query}, item_token(target)
    )


def _image_generation_row(ctx: RowContext) -> Row | str:
    found = _query(ctx)
    if isinstance(found, str):
        return found
    target, query = found
    catalog = ctx.builder.catalog
    if not catalog.image_path[target]:
        return "target item has no image"
    retrieved = ctx.builder.retriever().top(query, ctx.task.retrieved_images, exclude=target)
    segments = {"query": Segment(query), "retrieved": item_segment(catalog.flat, retrieved)}
    fields = {
        "target_item": target,
        "query": query,
        "retrieved": retrieved,
        "target_image": catalog.image_path[target],
    }
    # what a model learns to write: the target image's codes once the catalog is tokenized
    # (`tokenizer train`), until then the image's path (scoring external images needs no codes)
    codes = ctx.builder.image_codes
    target_text = catalog.image_path[target] if codes is None else image_code_text(codes.codes[target])
    return Row(ctx.position, segments, fields, target_text)


def _preference_row(ctx: RowContext) -> Row | str:
    target = ctx.items[ctx.position]
    rating = float(ctx.ratings[ctx.position])
    segments = {"item": item_segment(ctx.builder.catalog.flat, [target])}
    return Row(ctx.position, segments, {"target_item": target, "rating": rating}, rating_token(rating))


def _explanation_row(ctx: RowContext) -> Row | str:
    target = ctx.items[ctx.position]
    review = clean_text(ctx.reviews[ctx.position], ctx.task.review_max_words)
    if not review:
        return "empty review"
    segments = {"item": item_segment(ctx.builder.catalog.flat, [target])}
    return Row(ctx.position, segments, {"target_item": target, "review": review}, review)


def _selection_row(ctx: RowContext) -> Row | str:
    sampling, items, p = ctx.task.candidates, ctx.items, ctx.position
    wanted = int(ctx.rng.integers(sampling.positives_min, sampling.positives_max + 1))
    first = p
    if ctx.split == "new_user":  # never trained on: its last `wanted` interactions
        first = max(ctx.task.min_history, p - wanted + 1)
    positives = items[first : p + 1]  # new_user: its last 1-3; otherwise the target
    if ctx.split == "train":  # later training interactions of the same user, in order
        for q in range(p + 1, min(p + wanted, len(items))):
            if ctx.splits[q] != SPLIT_CODES["train"]:
                break
            positives.append(items[q])
    # never a negative: what the user had up to this example's last positive, and all their
    # training items; a training example never looks at valid or test items
    visible = max(first + len(positives) - 1, ctx.last_train)
    seen = set(items[: visible + 1])
    negatives = ctx.builder.stratified_negatives(
        ctx.rng, positives, seen, sampling.num_candidates - len(positives), sampling.negative_pool
    )
    if negatives is None:
        return "too few items the user never interacted with"
    candidates = positives + negatives
    candidates = [candidates[i] for i in ctx.rng.permutation(len(candidates))]
    positive_set = set(positives)
    return Row(
        first,
        {"candidates": item_segment(ctx.builder.catalog.flat, candidates)},
        {"candidates": candidates, "positives": positives},
        " ".join(item_token(c) for c in candidates if c in positive_set),
    )


def _check_selection(task: Task) -> str | None:
    sampling = task.candidates
    if sampling is None:
        return "a selection task needs a candidates section"
    if not 1 <= sampling.positives_min <= sampling.positives_max < sampling.num_candidates:
        return "need 1 <= positives_min <= positives_max < num_candidates"
    return None


def _check_explanation(task: Task) -> str | None:
    return None if (task.review_max_words or 0) >= 1 else "an explanation task needs review_max_words >= 1"


def _check_image_generation(task: Task) -> str | None:
    if (task.retrieved_images or 0) >= 1:
        return None
    return "an image_generation task needs retrieved_images >= 1"


TARGET = ("target_item", pa.int32())
KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind(
            "recommendation", frozenset({"history"}), FAMILIES["ranking"], (TARGET,), _recommendation_row
        ),
        TaskKind(
            "search",
            frozenset({"history", "query"}),
            FAMILIES["ranking"],
            (TARGET, ("query", pa.string())),
            _search_row,
        ),
        TaskKind(
            "preference",
            frozenset({"history", "item"}),
            FAMILIES["rating"],
            (TARGET, ("rating", pa.float32())),
            _preference_row,
        ),
        TaskKind(
            "explanation",
            frozenset({"history", "item"}),
            FAMILIES["text"],
            (TARGET, ("review", pa.string())),
            _explanation_row,
            check=_check_explanation,
            reads_reviews=True,
        ),
        TaskKind(
            "selection",
            frozenset({"history", "candidates"}),
            FAMILIES["set"],
            (("candidates", pa.list_(pa.int32())), ("positives", pa.list_(pa.int32()))),
            _selection_row,
            check=_check_selection,
            draws=True,
        ),
        TaskKind(
            "image_generation",
            frozenset({"history", "query", "retrieved"}),
            FAMILIES["image"],
            (
                TARGET,
                ("query", pa.string()),
                ("retrieved", pa.list_(pa.int32())),
                ("target_image", pa.string()),
            ),
            _image_generation_row,
            check=_check_image_generation,
        ),
    )
}
