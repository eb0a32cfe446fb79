"""Uncertainty of a score over the examples: per-example statistics, seeded bootstrap confidence
intervals, and a paired test of two methods on the same examples.

Every metric with an interval is a function of the *sums* of a few per-example statistics: a mean
metric (HR@10, MAE, ROUGE-L, ...) is sum/n of its per-example value, RMSE is sqrt(sum of squared
errors / n), BLEU-1 is matched unigrams / hypothesis unigrams, BLEU-4 is sacrebleu's score of the
summed n-gram counts, micro F1 is a function of the summed true/false positives and negatives. So a
resample of the examples is a vector of how often each example is drawn, and its sums are one matrix
product. Scoring stores the per-example statistics next to the result (`statistics/*.parquet`), so
intervals and paired tests never rerun a model or a scorer.

- Interval: the percentile bootstrap over examples (`RESAMPLES` resamples, seed `SEED`, level 95%).
- Paired test (`leaderboard --compare`): on the examples both methods answered, a permutation test
  that swaps the two methods' statistics per example (two-sided p-value), with a paired-bootstrap
  interval of the difference.

Diversity (a property of groups of examples) and the model-only rates get no interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from unimp_bench.errors import UnimpError

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
_CHUNK_CELLS = 4_000_000  # resample-weight cells held at once (resamples x examples)


@dataclass(frozen=True)
class Formula:
    """A metric as a function of the column sums of some per-example statistics: `value(sums, n)`
    with sums [B, len(columns)] returns [B]."""

    columns: tuple[str, ...]
    value: Callable[[np.ndarray, int], np.ndarray]


def mean_of(column: str) -> Formula:
    return Formula((column,), lambda sums, n: sums[:, 0] / n)


def root_mean_of(column: str) -> Formula:
    return Formula((column,), lambda sums, n: np.sqrt(sums[:, 0] / n))


def ratio_of(numerator: str, denominator: str) -> Formula:
    def value(sums: np.ndarray, n: int) -> np.ndarray:
        top, bottom = sums[:, 0], sums[:, 1]
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    return Formula((numerator, denominator), value)


def micro_f1(tp: str, fp: str, fn: str) -> Formula:
    def value(sums: np.ndarray, n: int) -> np.ndarray:
        denominator = 2 * sums[:, 0] + sums[:, 1] + sums[:, 2]
        return np.divide(2 * sums[:, 0], denominator, out=np.zeros_like(denominator), where=denominator > 0)

    return Formula((tp, fp, fn), value)


def _bleu4(sums: np.ndarray, n: int) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    bleu = BLEU()  # sacrebleu's own score of summed statistics: the same number corpus_bleu reports
    return np.array(
        [bleu._compute_score_from_stats(row.round().astype(int).tolist()).score / 100 for row in sums]
    )


BLEU_COLUMNS = ("bleu_hyp_len", "bleu_ref_len", *(f"bleu_correct_{k}" for k in range(1, 5)),
                *(f"bleu_total_{k}" for k in range(1, 5)))  # fmt: skip
FIXED_FORMULAS = {
    "MAE": mean_of("abs_error"),
    "RMSE": root_mean_of("squared_error"),
    "Precision-micro": ratio_of("true_positives", "selected_count"),
    "Recall-micro": ratio_of("true_positives", "positive_count"),
    "F1-micro": micro_f1("true_positives", "false_positives", "false_negatives"),
    "BLEU-1": ratio_of("bleu_correct_1", "bleu_total_1"),
    "BLEU-4": Formula(BLEU_COLUMNS, _bleu4),
}
NO_INTERVAL = ("Diversity",)  # a property of groups of examples, not a sum over them


def formula_for(metric: str) -> Formula | None:
    """How `metric` follows from per-example statistics; None when it has no interval. Any other
    metric is the mean of a per-example column of its own name."""
    if metric in NO_INTERVAL:
        return None
    return FIXED_FORMULAS.get(metric) or mean_of(metric)


@dataclass(frozen=True)
class ExampleStatistics:
    """Per-example statistics (columns of equal length, in the examples' order) and the metrics they
    give an interval for."""

    columns: dict[str, np.ndarray]
    metrics: tuple[str, ...]

    def __post_init__(self) -> None:
        if len({len(v) for v in self.columns.values()}) > 1:
            raise UnimpError("per-example statistics differ in length")

    @property
    def n(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def formulas(self) -> dict[str, Formula]:
        """The metrics whose statistics are all present, with their formulas."""
        found = {metric: formula_for(metric) for metric in self.metrics}
        return {m: f for m, f in found.items() if f is not None and set(f.columns) <= set(self.columns)}

    def value(self, metric: str) -> float:
        """The metric on all the examples (what the scorer reports)."""
        formula = self.formulas[metric]
        sums = np.array([[self.columns[c].sum() for c in formula.columns]], dtype=np.float64)
        return float(formula.value(sums, self.n)[0])

    def frame(self, example_ids: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"example_id": example_ids, **self.columns})

    def select(self, rows: np.ndarray) -> ExampleStatistics:
        return ExampleStatistics({k: v[rows] for k, v in self.columns.items()}, self.metrics)


def _chunk_size(n: int, resamples: int) -> int:
    """Resamples drawn at once, so that a chunk holds at most _CHUNK_CELLS example weights."""
    return max(1, min(resamples, _CHUNK_CELLS // max(n, 1)))


def _weights(n: int, resamples: int, rng: np.random.Generator):
    """Chunks of resample weights [b, n]: how often each example is drawn in each resample."""
    chunk = _chunk_size(n, resamples)
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        done += size


def _resampled(matrix: np.ndarray, formula: Formula, n: int, weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([formula.value(w @ matrix, n) for w in weights])


def bootstrap_intervals(
    statistics: ExampleStatistics, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> dict[str, list[float]]:
    """Per metric, the percentile-bootstrap interval [low, high] over examples."""
    n = statistics.n
    if n == 0 or not statistics.formulas:
        return {}
    weights = list(_weights(n, resamples, np.random.default_rng(seed)))
    tail = (1 - level) / 2
    intervals = {}
    for metric, formula in statistics.formulas.items():
        matrix = np.stack([statistics.columns[c] for c in formula.columns], axis=1).astype(np.float64)
        values = _resampled(matrix, formula, n, weights)
        low, high = np.quantile(values, [tail, 1 - tail])
        intervals[metric] = [float(low), float(high)]
    return intervals


def paired_test(
    a: ExampleStatistics,
    b: ExampleStatistics,
    metric: str,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, float]:
    """Method a minus method b on the same examples (same order): the difference, a paired-bootstrap
    interval of it, and the two-sided p-value of a permutation test that swaps a's and b's
    statistics per example."""
    if a.n != b.n:
        raise UnimpError("a paired test needs both methods' statistics on the same examples")
    formula = a.formulas[metric]
    n = a.n
    left = np.stack([a.columns[c] for c in formula.columns], axis=1).astype(np.float64)
    right = np.stack([b.columns[c] for c in formula.columns], axis=1).astype(np.float64)
    ones = np.ones((1, n))
    observed = float(formula.value(ones @ left, n)[0] - formula.value(ones @ right, n)[0])
    rng = np.random.default_rng(seed)
    weights = list(_weights(n, resamples, rng))
    differences = _resampled(left, formula, n, weights) - _resampled(right, formula, n, weights)
    tail = (1 - level) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    extreme = 0
    chunk = _chunk_size(n, resamples)
    for start in range(0, resamples, chunk):
        size = min(resamples - start, chunk)
        swap = rng.integers(0, 2, size=(size, n)).astype(np.float64)  # 1: this example's a and b swap
        sums_a = (1 - swap) @ left + swap @ right
        sums_b = swap @ left + (1 - swap) @ right
        permuted = formula.value(sums_a, n) - formula.value(sums_b, n)
        extreme += int((np.abs(permuted) >= abs(observed) - 1e-12).sum())
    return {
        "difference": observed,
        "low": float(low),
        "high": float(high),
        "p_value": (extreme + 1) / (resamples + 1),
    }


def read_statistics(path, metrics: tuple[str, ...]) -> tuple[list[str], ExampleStatistics]:
    frame = pl.read_parquet(path)
    columns = {name: frame[name].to_numpy() for name in frame.columns if name != "example_id"}
    return frame["example_id"].to_list(), ExampleStatistics(columns, metrics)
