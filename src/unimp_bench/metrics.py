"""Pure metric functions and the one table that maps a metric name to its family.

Ranking metrics (HR, NDCG, MRR at any k) work on the rank of the single target item. A rank comes
from a ranked list (best first) or from a score vector over the catalog. From scores, the target's
rank is described by two counts: `greater` (items scored strictly higher) and `ties` (other items
with exactly the target's score). The tie rule says where the target lands among its ties:

- ``expected`` (default): the exact expectation over a uniformly random order of the tied items,
  so a model that scores everything equal gets the score of a random ranking, never a perfect one;
- ``pessimistic``: every tied item is ranked above the target (rank = greater + ties + 1);
- ``optimistic``: the target is ranked above its ties (rank = greater + 1).

A target missing from a ranked list (or scored -inf) has rank infinity: it counts as a miss at
every k. HR@k = 1 if rank <= k; NDCG@k = 1 / log2(rank + 1) if rank <= k (one relevant item, so the
ideal DCG is 1); MRR@k = 1 / rank if rank <= k. Each is averaged over examples.

Text metrics are on a 0-1 scale: BLEU-4 is sacrebleu's corpus BLEU / 100; BLEU-1 is the corpus's
clipped unigram precision with no brevity penalty (sacrebleu's 13a tokens: matched unigrams, each
counted at most as often as the reference has it, over the hypotheses' unigrams). That is
`precisions[0]` of Hugging Face evaluate's BLEU, which the UniMP code (weitianxin/UniMP,
pipeline/eval/eval_exp.py) reports as "BLEU", so the paper's BLEU column is compared with BLEU-1
here, not with BLEU-4. ROUGE-1/2/L are
rouge-score F-measures (Porter stemmer) averaged over examples; METEOR is nltk's sentence METEOR
averaged over examples; BERTScore-P/R/F1 come from bert-score (model recorded by the caller).

Set metrics (item selection): ``Precision``/``Recall``/``F1`` are macro averages, computed per
example and averaged over examples; ``Precision-micro``/``Recall-micro``/``F1-micro`` pool the true
positives, false positives and false negatives of all examples first. An empty selection has
precision 0 (nothing correct was selected); an example always has at least one positive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from unimp_bench.errors import MissingResource, UnimpError
from unimp_bench.uncertainty import BLEU_COLUMNS, ExampleStatistics

TIE_RULES = ("expected", "pessimistic", "optimistic")
RANKING_FAMILIES = ("HR", "NDCG", "MRR")
RATING_METRICS = ("MAE", "RMSE")
SET_METRICS = ("Precision", "Recall", "F1", "Precision-micro", "Recall-micro", "F1-micro")
TEXT_METRICS = (
    "BLEU-1",
    "BLEU-4",
    "ROUGE-1",
    "ROUGE-2",
    "ROUGE-L",
    "METEOR",
    "BERTScore-P",
    "BERTScore-R",
    "BERTScore-F1",
)
IMAGE_METRICS = ("CLIP-I", "CLIP-T", "Diversity")
_RANKING_NAME = re.compile(r"^(HR|NDCG|MRR)@([1-9][0-9]*)$")


@dataclass(frozen=True)
class MetricName:
    """A parsed metric name: its family (the kind of prediction it scores) and, for ranking, k."""

    name: str
    family: str  # ranking | rating | set | text | image
    k: int | None = None


def parse_metric(name: str) -> MetricName:
    match = _RANKING_NAME.match(name)
    if match:
        return MetricName(name, "ranking", int(match.group(2)))
    for family, names in (
        ("rating", RATING_METRICS),
        ("set", SET_METRICS),
        ("text", TEXT_METRICS),
        ("image", IMAGE_METRICS),
    ):
        if name in names:
            return MetricName(name, family)
    known = ", ".join(
        ("HR@k", "NDCG@k", "MRR@k", *RATING_METRICS, *SET_METRICS, *TEXT_METRICS, *IMAGE_METRICS)
    )
    raise UnimpError(f"unknown metric {name!r}; known metrics: {known}")


# ---------------------------------------------------------------------------------------------
# Ranking


def target_rank_counts(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(greater, ties) of each row's target in a score matrix [n_examples, n_items].

    NaN scores are refused (a NaN compares false with everything and would hide the target).
    A target scored -inf counts as never ranked: greater = inf.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(targets) != scores.shape[0]:
        raise UnimpError("scores must be a matrix with one row per target")
    if np.isnan(scores).any():
        raise UnimpError("scores contain NaN; a ranking cannot be derived from them")
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    greater = (scores > target_scores).sum(axis=1).astype(np.float64)
    ties = ((scores == target_scores).sum(axis=1) - 1).astype(np.float64)
    unranked = np.isneginf(target_scores[:, 0])
    greater[unranked] = np.inf
    ties[unranked] = 0
    return greater, ties


def target_rank_from_list(ranked: Sequence[int], target: int) -> float:
    """0-based count of items ranked above the target's first occurrence; inf when absent."""
    for position, item in enumerate(ranked):
        if item == target:
            return float(position)
    return math.inf


def ranking_metrics(
    greater: np.ndarray, ties: np.ndarray, metrics: Iterable[str], tie_rule: str = "expected"
) -> dict[str, float]:
    """HR/NDCG/MRR@k averaged over examples, from each target's (greater, ties) counts."""
    values = ranking_values(greater, ties, metrics, tie_rule)
    return {name: float(v.mean()) if len(v) else math.nan for name, v in values.items()}


def ranking_values(
    greater: np.ndarray, ties: np.ndarray, metrics: Iterable[str], tie_rule: str = "expected"
) -> dict[str, np.ndarray]:
    """Each example's HR/NDCG/MRR@k (under the tie rule, an expectation over its ties)."""
    if tie_rule not in TIE_RULES:
        raise UnimpError(f"unknown tie rule {tie_rule!r}; choose one of {', '.join(TIE_RULES)}")
    greater = np.asarray(greater, dtype=np.float64)
    ties = np.asarray(ties, dtype=np.float64)
    if tie_rule == "pessimistic":
        greater, ties = greater + ties, np.zeros_like(ties)
    elif tie_rule == "optimistic":
        ties = np.zeros_like(ties)
    parsed = [parse_metric(m) for m in metrics]
    if any(p.family != "ranking" for p in parsed):
        raise UnimpError("ranking_metrics only computes HR@k, NDCG@k and MRR@k")
    if len(greater) == 0:
        return {p.name: np.zeros(0) for p in parsed}
    max_k = max(p.k for p in parsed)
    # Under the expected rule the target's 1-based rank is uniform on greater+1 .. greater+ties+1,
    # so each metric is (1 / (ties + 1)) * sum of its gain over the ranks of that range within k.
    positions = np.arange(1, max_k + 1, dtype=np.float64)[None, :]  # [1, max_k]
    in_range = (positions >= greater[:, None] + 1) & (positions <= greater[:, None] + ties[:, None] + 1)
    weight = in_range / (ties[:, None] + 1.0)  # [n, max_k]: probability the target sits at rank r
    gains = {
        "HR": np.ones_like(positions),
        "NDCG": 1.0 / np.log2(positions + 1.0),
        "MRR": 1.0 / positions,
    }
    cumulative = {family: np.cumsum(weight * gain, axis=1) for family, gain in gains.items()}
    return {p.name: cumulative[p.name.split("@")[0]][:, p.k - 1] for p in parsed}


# ---------------------------------------------------------------------------------------------
# Rating


def rating_metrics(predicted: Sequence[float], actual: Sequence[float]) -> dict[str, float]:
    values = rating_values(predicted, actual)
    if len(values["abs_error"]) == 0:
        return {"MAE": math.nan, "RMSE": math.nan}
    return {"MAE": float(values["abs_error"].mean()), "RMSE": float(np.sqrt(values["squared_error"].mean()))}


def rating_values(predicted: Sequence[float], actual: Sequence[float]) -> dict[str, np.ndarray]:
    """Each example's absolute and squared error (MAE and RMSE follow from their means)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise UnimpError("predicted and actual ratings differ in length")
    if not np.isfinite(predicted).all():
        raise UnimpError("predicted ratings must be finite numbers")
    error = predicted - actual
    return {"abs_error": np.abs(error), "squared_error": error**2}


# ---------------------------------------------------------------------------------------------
# Sets


def set_metrics(selected: Sequence[Iterable[int]], positives: Sequence[Iterable[int]]) -> dict[str, float]:
    values = set_values(selected, positives)
    if len(positives) == 0:
        return {name: math.nan for name in SET_METRICS}
    statistics = ExampleStatistics(values, SET_METRICS)
    return {name: statistics.value(name) for name in SET_METRICS}


def set_values(
    selected: Sequence[Iterable[int]], positives: Sequence[Iterable[int]]
) -> dict[str, np.ndarray]:
    """Each example's precision, recall and F1 (macro metrics are their means) and its counts of true
    and false positives and false negatives (micro metrics pool them)."""
    if len(selected) != len(positives):
        raise UnimpError("selections and positive sets differ in length")
    rows = []
    for chosen, relevant in zip(selected, positives):
        chosen, relevant = set(chosen), set(relevant)
        tp, fp, fn = len(chosen & relevant), len(chosen - relevant), len(relevant - chosen)
        p = tp / len(chosen) if chosen else 0.0
        r = tp / len(relevant) if relevant else 0.0
        rows.append((p, r, 2 * p * r / (p + r) if p + r else 0.0, tp, fp, fn, len(chosen), len(relevant)))
    names = ("Precision", "Recall", "F1", "true_positives", "false_positives", "false_negatives",
             "selected_count", "positive_count")  # fmt: skip
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    return {name: table[:, i] for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# Text

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (METEOR's input; no tokenizer model needed)."""
    return _WORD.findall(text.lower())


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Each example's sacrebleu statistics (13a tokens): hypothesis and reference length, and per
    n-gram order 1-4 the clipped matches and the hypothesis n-grams. Corpus BLEU-4 is sacrebleu's
    score of their sums (what corpus_bleu computes); BLEU-1 is matches_1 / total_1."""
    from sacrebleu.metrics import BLEU

    rows = BLEU()._extract_corpus_statistics(list(hypotheses), [list(references)])
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(BLEU_COLUMNS))
    return {name: table[:, i] for i, name in enumerate(BLEU_COLUMNS)}


def rouge_values(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Each example's ROUGE-1/2/L F-measure (Porter stemmer)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = []
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(reference, hypothesis)
        rows.append((scores["rouge1"].fmeasure, scores["rouge2"].fmeasure, scores["rougeL"].fmeasure))
    table = np.array(rows, dtype=np.float64).reshape(len(rows), 3)
    return {"ROUGE-1": table[:, 0], "ROUGE-2": table[:, 1], "ROUGE-L": table[:, 2]}


def meteor_values(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Each example's nltk METEOR (raises MissingResource without WordNet)."""
    from nltk.translate.meteor_score import meteor_score

    from unimp_bench.text_resources import wordnet_reader

    wordnet = wordnet_reader()
    return np.array(
        [
            meteor_score([words(reference)], words(hypothesis), wordnet=wordnet)
            for hypothesis, reference in zip(hypotheses, references)
        ],
        dtype=np.float64,
    )


def bertscore_values(
    hypotheses: Sequence[str],
    references: Sequence[str],
    model_path: str,
    num_layers: int,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Each example's BERTScore P/R/F1. An empty hypothesis or reference (a model that generated
    nothing) scores 0: there is no token to match, and bert-score's own empty-string path needs a
    tokenizer method transformers 5 removed."""
    from bert_score import BERTScorer

    pairs = [i for i, (h, r) in enumerate(zip(hypotheses, references)) if h.strip() and r.strip()]
    totals = np.zeros((3, len(hypotheses)))
    if pairs:
        scorer = BERTScorer(model_type=model_path, num_layers=num_layers, batch_size=batch_size, lang="en")
        scored = scorer.score([hypotheses[i] for i in pairs], [references[i] for i in pairs])
        totals[:, pairs] = np.stack([t.numpy() for t in scored])
    return {"BERTScore-P": totals[0], "BERTScore-R": totals[1], "BERTScore-F1": totals[2]}


def text_values(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str],
    bertscore_model: tuple[str, int] | None = None,
    missing: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """The per-example statistics of the requested text metrics (see text_metrics)."""
    if len(hypotheses) != len(references):
        raise UnimpError("hypotheses and references differ in length")
    wanted = list(metrics)
    columns: dict[str, np.ndarray] = {}
    if any(name.startswith("BLEU") for name in wanted):
        columns |= bleu_statistics(hypotheses, references)
    if any(name.startswith("ROUGE") for name in wanted):
        columns |= rouge_values(hypotheses, references)
    if "METEOR" in wanted:
        try:
            columns["METEOR"] = meteor_values(hypotheses, references)
        except MissingResource as error:
            if missing is None:
                raise
            missing["METEOR"] = str(error)
    if any(name.startswith("BERTScore") for name in wanted):
        if bertscore_model is None:
            raise UnimpError("BERTScore needs a scorer model")
        columns |= bertscore_values(hypotheses, references, *bertscore_model)
    return columns


def text_metrics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str],
    bertscore_model: tuple[str, int] | None = None,
    missing: dict[str, str] | None = None,
) -> dict[str, float]:
    """The requested text metrics; `bertscore_model` is (model folder, layer) when BERTScore is asked.
    A metric whose system resource is absent (METEOR without WordNet) raises MissingResource, or,
    when a `missing` dict is given, is NaN and its reason goes into that dict."""
    wanted = list(metrics)
    if not references:
        if len(hypotheses):
            raise UnimpError("hypotheses and references differ in length")
        return {name: math.nan for name in wanted}
    statistics = ExampleStatistics(
        text_values(hypotheses, references, wanted, bertscore_model, missing), tuple(wanted)
    )
    scorable = statistics.formulas
    return {name: statistics.value(name) if name in scorable else math.nan for name in wanted}


# ---------------------------------------------------------------------------------------------
# Images (CLIP embeddings are computed by unimp_bench.clip_scoring; these work on the vectors)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise UnimpError("an embedding is all zeros; cosine similarity is undefined")
    return vectors / norms


def paired_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of row i of `a` with row i of `b` (CLIP-I: generated vs target image,
    CLIP-T: generated image vs its query text)."""
    return float(paired_cosines(a, b).mean())


def paired_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b`, per row."""
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise UnimpError("paired embeddings differ in shape")
    return (a * b).sum(axis=1)


def shared_query_diversity(embeddings: np.ndarray, queries: list[str]) -> tuple[float, int]:
    """Diversity across users who share a query: `diversity` within each group of examples with the
    same query (two or more), averaged over those groups with equal weight; and how many groups there
    were (NaN and 0 when no query is shared). A model that ignores the user scores 0."""
    groups: dict[str, list[int]] = {}
    for row, query in enumerate(queries):
        groups.setdefault(query, []).append(row)
    shared = [rows for rows in groups.values() if len(rows) >= 2]
    if not shared:
        return math.nan, 0
    return float(np.mean([diversity(embeddings[rows]) for rows in shared])), len(shared)


def diversity(embeddings: np.ndarray) -> float:
    """1 - mean pairwise cosine similarity between distinct rows (one generated image per user)."""
    unit = _unit(embeddings)
    n = len(unit)
    if n < 2:
        return math.nan
    similarity = unit @ unit.T
    off_diagonal = (similarity.sum() - np.trace(similarity)) / (n * (n - 1))
    return float(1.0 - off_diagonal)
