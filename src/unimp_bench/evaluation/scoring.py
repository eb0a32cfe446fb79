"""Metric families: the prediction fields a family reads and the scorer that turns them into metrics.

A task kind (task_kinds.py) names its family; every task of the kind is scored here.

| family  | prediction fields                                                                   |
|---------|-------------------------------------------------------------------------------------|
| ranking | `ranked` (item ids, best first) or `greater` + `ties` (see metrics)                  |
| rating  | `rating` (a number)                                                                 |
| text    | `text`                                                                              |
| set     | `selected` (item ids)                                                               |
| image   | `image` (path of the generated image, relative to the predictions file)             |

`greater`/`ties` are the exact rank counts of the target in a full score vector, which keeps ties
honest; `ranked` lists are taken as given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from unimp_bench.clip_scoring import ClipEmbedder, ClipSettings
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import (
    paired_cosines,
    ranking_values,
    rating_values,
    set_values,
    shared_query_diversity,
    target_rank_from_list,
    text_values,
)
from unimp_bench.uncertainty import ExampleStatistics

if TYPE_CHECKING:
    from unimp_bench.tasks import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringSettings:
    tie_rule: str = "expected"
    bertscore_model: str = "auto"  # auto | minilm | a local folder | a model in the Hugging Face cache
    bertscore_layers: int | None = None
    clip: ClipSettings = field(default_factory=ClipSettings)
    # a metric whose system resource is absent (METEOR without WordNet) is an error instead of being
    # recorded as missing
    strict_metrics: bool = False


@dataclass(frozen=True)
class ScoreInputs:
    """What a scorer may need beyond the joined rows: settings, and where relative paths point."""

    settings: ScoringSettings
    dataset_root: Path | None = None
    predictions_root: Path | None = None
    embedder: ClipEmbedder | None = None


# a scorer: (task, examples joined with predictions, inputs) -> the per-example statistics of the
# task's metrics (each metric follows from their sums: uncertainty.py) and the metric settings used
Scorer = Callable[["Task", pl.DataFrame, ScoreInputs], tuple[ExampleStatistics, dict]]


def scores_of(task: Task, statistics: ExampleStatistics, extra: dict[str, float] | None = None) -> dict:
    """Every metric of the task, from its statistics (NaN where one could not be computed: no
    examples, or a missing resource), or from `extra` for the metrics that are not sums (Diversity)."""
    formulas, extra = statistics.formulas, extra or {}
    return {
        name: extra[name] if name in extra else statistics.value(name) if name in formulas and statistics.n
        else float("nan")
        for name in task.metrics
    }  # fmt: skip


@dataclass(frozen=True)
class MetricFamily:
    name: str
    fields: dict[str, pl.DataType]  # every prediction field the family reads, with its type
    # the sets of fields a prediction may give, in order of preference (ranking: counts or a list)
    alternatives: tuple[tuple[str, ...], ...]
    score: Scorer

    def required(self, columns: list[str]) -> list[str]:
        """The fields a predictions file with these columns must give: the first alternative it
        touches, else the last one (what an error then names)."""
        for fields in self.alternatives:
            if any(name in columns for name in fields):
                return list(fields)
        return list(self.alternatives[-1])


def _score_ranking(task: Task, joined: pl.DataFrame, inputs: ScoreInputs) -> tuple[dict[str, float], dict]:
    if "greater" in joined.columns:
        greater = joined["greater"].to_numpy()
        ties = joined["ties"].to_numpy()
        if (greater < 0).any() or (ties < 0).any() or np.isnan(greater).any() or np.isnan(ties).any():
            raise UnimpError("greater and ties must be non-negative counts")
    else:
        greater = np.array(
            [target_rank_from_list(r, t) for r, t in zip(joined["ranked"].to_list(), joined["target_item"])]
        )
        ties = np.zeros(len(greater))
    tie_rule = inputs.settings.tie_rule
    values = ranking_values(greater, ties, task.metrics, tie_rule)
    return ExampleStatistics(values, tuple(task.metrics)), {"tie_rule": tie_rule}


def _score_rating(task: Task, joined: pl.DataFrame, inputs: ScoreInputs) -> tuple[dict[str, float], dict]:
    # the example's own `rating` is the truth; the prediction's was renamed rating_right by the join
    values = rating_values(joined["rating_right"], joined["rating"])
    return ExampleStatistics(values, tuple(task.metrics)), {}


def _score_set(task: Task, joined: pl.DataFrame, inputs: ScoreInputs) -> tuple[dict[str, float], dict]:
    candidates = joined["candidates"].to_list()
    selected = joined["selected"].to_list()
    outside = sum(1 for chosen, allowed in zip(selected, candidates) if not set(chosen) <= set(allowed))
    if outside:
        raise UnimpError(f"{outside} selections name items that are not among their candidates")
    return ExampleStatistics(set_values(selected, joined["positives"].to_list()), tuple(task.metrics)), {}


def _score_text(task: Task, joined: pl.DataFrame, inputs: ScoreInputs) -> tuple[dict[str, float], dict]:
    from unimp_bench.text_resources import resolve_bertscore_model

    used: dict = {}
    scorer = None
    if any(m.startswith("BERTScore") for m in task.metrics):
        model = resolve_bertscore_model(inputs.settings.bertscore_model, inputs.settings.bertscore_layers)
        scorer = (model.path, model.num_layers)
        used["bertscore_model"] = model.describe()
    hypotheses = [t or "" for t in joined["text"].to_list()]
    missing: dict[str, str] | None = None if inputs.settings.strict_metrics else {}
    values = text_values(hypotheses, joined["review"].to_list(), task.metrics, scorer, missing)
    if missing:
        used["missing_metrics"] = missing
        for name, reason in missing.items():
            logger.warning("%s not computed: %s; --strict-metrics makes this an error", name, reason)
    return ExampleStatistics(values, tuple(task.metrics)), used


def _score_image(task: Task, joined: pl.DataFrame, inputs: ScoreInputs) -> tuple[dict[str, float], dict]:
    used: dict = {}
    embedder = inputs.embedder
    if embedder is None:
        embedder = ClipEmbedder.from_settings(inputs.settings.clip)
        used["clip"] = inputs.settings.clip.describe()
    generated = [inputs.predictions_root / p for p in joined["image"].to_list()]
    targets = [inputs.dataset_root / p for p in joined["target_image"].to_list()]
    generated_embeddings = embedder.images(generated)
    queries = joined["query"].to_list()
    spread, groups = shared_query_diversity(generated_embeddings, queries)
    values = {
        "CLIP-I": paired_cosines(generated_embeddings, embedder.images(targets)),
        "CLIP-T": paired_cosines(generated_embeddings, embedder.texts(queries)),
    }
    used["diversity"] = f"across users sharing a query: {groups} queries with two or more examples"
    used["group_scores"] = {"Diversity": spread}  # not a sum over examples: no interval
    return ExampleStatistics(values, tuple(task.metrics)), used


RANKING = MetricFamily(
    "ranking",
    {"ranked": pl.List(pl.Int64), "greater": pl.Float64, "ties": pl.Float64},
    (("greater", "ties"), ("ranked",)),
    _score_ranking,
)
RATING = MetricFamily("rating", {"rating": pl.Float64}, (("rating",),), _score_rating)
TEXT = MetricFamily("text", {"text": pl.String}, (("text",),), _score_text)
SET = MetricFamily("set", {"selected": pl.List(pl.Int64)}, (("selected",),), _score_set)
IMAGE = MetricFamily("image", {"image": pl.String}, (("image",),), _score_image)
FAMILIES = {family.name: family for family in (RANKING, RATING, TEXT, SET, IMAGE)}
