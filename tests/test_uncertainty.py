"""Uncertainty: per-example statistics reproduce every metric, bootstrap intervals have the width
theory predicts and are seeded, paired tests tell a real difference from noise, and results, the
leaderboard and `leaderboard --compare` carry them; seeds of one method aggregate to mean +- SE."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from helpers import invoke
from unimp_bench.cli import app
from unimp_bench.metrics import (
    rating_metrics,
    rating_values,
    set_metrics,
    set_values,
    text_metrics,
)
from unimp_bench.uncertainty import ExampleStatistics, bootstrap_intervals, paired_test


def test_a_mean_metrics_interval_has_the_normal_width_and_is_seeded():
    rng = np.random.default_rng(1)
    hits = (rng.random(400) < 0.1).astype(float)
    stats = ExampleStatistics({"HR@10": hits}, ("HR@10",))
    low, high = bootstrap_intervals(stats)["HR@10"]
    mean = hits.mean()
    assert low < mean < high
    normal_width = 2 * 1.96 * math.sqrt(mean * (1 - mean) / len(hits))
    assert high - low == pytest.approx(normal_width, rel=0.15)
    assert bootstrap_intervals(stats) == bootstrap_intervals(stats)
    assert bootstrap_intervals(stats, seed=1) != bootstrap_intervals(stats)


def test_statistics_reproduce_the_corpus_metrics():
    """BLEU-4 from summed statistics is sacrebleu's corpus BLEU; RMSE, micro F1 and BLEU-1 follow
    from their sums, never from a mean of per-example values."""
    import sacrebleu

    hypotheses = ["the cat sat on the mat", "a dog ran far away today", "nothing matches", ""]
    references = ["the cat sat on a mat", "a dog ran away", "the bird sang", "an empty answer"]
    scores = text_metrics(hypotheses, references, ["BLEU-4", "BLEU-1"])
    assert scores["BLEU-4"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score / 100)
    corpus = sacrebleu.corpus_bleu(hypotheses, [references])
    assert scores["BLEU-1"] == pytest.approx(corpus.counts[0] / corpus.totals[0])

    predicted, actual = [1.0, 2.0, 5.0, 4.0], [1.0, 4.0, 4.0, 4.0]
    stats = ExampleStatistics(rating_values(predicted, actual), ("MAE", "RMSE"))
    assert stats.value("RMSE") == pytest.approx(rating_metrics(predicted, actual)["RMSE"])
    assert stats.value("RMSE") == pytest.approx(math.sqrt(5 / 4))

    selected, positives = [[1, 2], [3], []], [[1], [3, 4], [5]]
    stats = ExampleStatistics(set_values(selected, positives), ("F1-micro", "Precision-micro", "F1"))
    expected = set_metrics(selected, positives)
    assert stats.value("F1-micro") == pytest.approx(expected["F1-micro"])  # tp 2, fp 1, fn 2: 4/7
    assert stats.value("F1-micro") == pytest.approx(4 / 7)
    assert stats.value("Precision-micro") == pytest.approx(2 / 3)


def test_a_paired_test_tells_a_real_difference_from_noise():
    rng = np.random.default_rng(0)
    base = (rng.random(500) < 0.3).astype(float)
    same = ExampleStatistics({"HR@10": base}, ("HR@10",))
    identical = paired_test(same, same, "HR@10")
    assert identical["difference"] == 0 and identical["p_value"] == 1.0

    better = base.copy()
    better[np.flatnonzero(base == 0)[:60]] = 1.0  # 60 more hits on the same examples: +0.12
    test = paired_test(ExampleStatistics({"HR@10": better}, ("HR@10",)), same, "HR@10")
    assert test["difference"] == pytest.approx(0.12)
    assert test["low"] > 0 and test["p_value"] < 0.01

    shuffled = ExampleStatistics({"HR@10": rng.permutation(base)}, ("HR@10",))
    noise = paired_test(shuffled, same, "HR@10")  # same hit rate, other examples: no difference
    assert noise["difference"] == 0 and noise["p_value"] > 0.5 and noise["low"] < 0 < noise["high"]


def _ranked(examples: pl.DataFrame, hit_every: int) -> list[dict]:
    """Predictions that rank the target first on every `hit_every`-th example, else not at all."""
    return [
        {"example_id": e, "ranked": [t] if i % hit_every == 0 else []}
        for i, (e, t) in enumerate(zip(examples["example_id"], examples["target_item"]))
    ]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_results_leaderboard_and_compare_carry_the_uncertainty(synthetic_examples, tmp_path):
    from unimp_bench.examples import open_examples
    from unimp_bench.tasks import registry

    test = open_examples(synthetic_examples).load(registry().get("recommendation"), "test")
    results = tmp_path / "results"
    common = ["--task", "recommendation", "--examples", synthetic_examples, "--out", results]
    for name, every in (("often", 2), ("rarely", 5)):
        invoke("score", _write(tmp_path / f"{name}.jsonl", _ranked(test, every)), *common, "--method", name)
    for seed, every in enumerate((2, 3, 4)):
        rows = _ranked(test, every)
        invoke("score", _write(tmp_path / f"s{seed}.jsonl", rows), *common, "--method", f"mine-seed{seed}")

    often = json.loads(next(results.glob("often__*.json")).read_text())
    uncertainty = often["provenance"]["uncertainty"]
    low, high = uncertainty["intervals"]["HR@10"]
    assert low < often["scores"]["HR@10"] < high and uncertainty["resamples"] == 1000
    stored = pl.read_parquet(results / uncertainty["statistics"]["file"])
    assert stored.height == test.height and stored["HR@10"].mean() == pytest.approx(often["scores"]["HR@10"])

    board = tmp_path / "board.csv"
    invoke("leaderboard", results, "--csv", board, "--markdown", tmp_path / "board.md", "--compare", "rarely")
    wide = pl.read_csv(board)
    row = wide.filter(pl.col("method") == "often").row(0, named=True)
    assert (row["HR@10 low"], row["HR@10 high"]) == pytest.approx((low, high), abs=1e-6)
    # three seeds of `mine` give one more row: their mean and its standard error
    seeds = wide.filter(pl.col("method").str.starts_with("mine-seed"))["HR@10"].to_list()
    mean_row = wide.filter(pl.col("method") == "mine (mean of 3 seeds)").row(0, named=True)
    assert mean_row["HR@10"] == pytest.approx(statistics.fmean(seeds), abs=1e-6)
    assert mean_row["HR@10 se"] == pytest.approx(statistics.stdev(seeds) / math.sqrt(3), abs=1e-6)
    markdown = (tmp_path / "board.md").read_text()
    assert f"[{low:.4f}, {high:.4f}]" in markdown and "Paired tests against rarely" in markdown

    paired = pl.read_csv(tmp_path / "board.compare.csv").filter(pl.col("metric") == "HR@10")
    versus = paired.filter(pl.col("method") == "often").row(0, named=True)
    hits = {
        name: [i % every == 0 for i in range(test.height)] for name, every in (("often", 2), ("rarely", 5))
    }
    assert versus["difference"] == pytest.approx(np.mean(hits["often"]) - np.mean(hits["rarely"]), abs=1e-6)
    assert versus["paired_examples"] == test.height and versus["p_value"] < 0.01 and versus["low"] > 0
    failed = CliRunner().invoke(
        app, ["leaderboard", str(results), "--csv", str(board), "--compare", "nobody"]
    )
    assert failed.exit_code == 1 and "no results of 'nobody'" in " ".join(failed.output.split())
