"""uniform: the chance level of ranking tasks, equal to the hand-computed expectation of a uniformly
random ranking over each example's candidates (the split's catalog less the user's earlier items)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.contract import open_dataset
from unimp_bench.examples import open_examples
from unimp_bench.ranking import excluded_items


def expected_scores(candidates: np.ndarray) -> dict[str, float]:
    """HR@10 and NDCG@10 of a uniformly random rank among n candidates, averaged over examples."""
    hr = np.minimum(10, candidates) / candidates
    ndcg = [sum(1 / math.log2(r + 1) for r in range(1, min(10, n) + 1)) / n for n in candidates]
    return {"HR@10": float(hr.mean()), "NDCG@10": float(np.mean(ndcg))}


@pytest.mark.parametrize("split", ["test", "new_domain"])
def test_uniform_scores_are_the_expectation_of_a_random_ranking(
    synthetic_data, synthetic_examples, tmp_path, split
):
    ((result, _),) = run_baseline(
        "uniform", "recommendation", synthetic_data, tmp_path, [split], examples_dir=synthetic_examples
    )
    dataset = open_dataset(synthetic_data)
    example_set = open_examples(synthetic_examples)
    examples = example_set.load(example_set.task("recommendation"), split)
    left_out = excluded_items(dataset, examples, exclude_seen=True)
    targets = examples["target_item"].to_list()
    candidates = np.array(
        [
            dataset.catalog_size - len(np.setdiff1d(excluded, [target]))
            for excluded, target in zip(left_out, targets)
        ]
    )
    assert result.n_examples == len(examples) > 0
    for metric, value in expected_scores(candidates).items():
        assert result.scores[metric] == pytest.approx(value, abs=1e-9)
    if split == "new_domain":  # the held-out catalog less each user's earlier items: above 10 / |catalog|
        domain = dataset.scan("items").filter(pl.col("domain") == dataset.held_out_domain).collect().height
        assert result.scores["HR@10"] > 10 / domain
