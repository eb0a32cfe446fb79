"""Native baselines: preference means and biased MF, review retrieval, personalized search, VBPR."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from unimp_bench.baselines.registry import available_baselines, load_baseline, make_predictor
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.contract import open_dataset
from unimp_bench.examples import open_examples
from unimp_bench.prompts import clean_text
from unimp_bench.tasks import registry

NATIVE_RUNS = [
    (name, task)
    for name in available_baselines()
    # VBPR needs CLIP weights; the image references are scored with CLIP in test_image_tokens.py
    if (spec := load_baseline(name)).engine == "native" and name != "vbpr" and not name.startswith("image-")
    for task, definition in registry().tasks.items()
    if definition.builder in spec.kinds
]


def training_rows(data) -> pl.DataFrame:
    users = pl.read_parquet(data / "users.parquet").filter(pl.col("group") == "train")
    return (
        pl.read_parquet(data / "interactions.parquet")
        .join(users.select("user_idx"), on="user_idx")
        .filter(pl.col("split") == "train")
    )


@pytest.mark.parametrize(("model", "task"), NATIVE_RUNS)
def test_every_native_baseline_runs_on_the_synthetic_corpus(
    model, task, synthetic_data, synthetic_examples, tmp_path
):
    results = run_baseline(
        model, task, synthetic_data, tmp_path, ["test", "new_user"], examples_dir=synthetic_examples
    )
    by_split = {r.split: r for r, _ in results}
    assert by_split["test"].n_examples > 0
    assert all(np.isfinite(v) for v in by_split["test"].scores.values())
    if model.lower() in ("biasedmf", "vbpr-thumbnail"):  # one vector per training user
        assert "new_user" in by_split["new_user"].provenance["not_applicable"]
    else:
        assert all(np.isfinite(v) for v in by_split["new_user"].scores.values())


def test_means_are_the_hand_computed_means(synthetic_data, synthetic_examples):
    dataset = open_dataset(synthetic_data)
    task = registry().get("preference")
    examples = open_examples(synthetic_examples).load(task, "test").head(20)
    train = training_rows(synthetic_data)
    interactions = pl.read_parquet(synthetic_data / "interactions.parquet")
    global_mean = train["rating"].mean()
    predicted = {
        name: make_predictor(load_baseline(name), dataset).predict(task, examples)["rating"].to_list()
        for name in ("global-mean", "user-mean", "item-mean")
    }
    for row, g, u, i in zip(examples.iter_rows(named=True), *predicted.values()):
        assert g == pytest.approx(global_mean)
        earlier = interactions.filter(
            (pl.col("user_idx") == row["user_idx"]) & (pl.col("pos") < row["target_pos"])
        )
        assert u == pytest.approx(earlier["rating"].mean())
        item_ratings = train.filter(pl.col("item_idx") == row["target_item"])["rating"]
        assert i == pytest.approx(item_ratings.mean() if len(item_ratings) else global_mean)


def test_biased_mf_beats_the_global_mean(synthetic_data, synthetic_examples, tmp_path):
    scores = {
        model: run_baseline(
            model, "preference", synthetic_data, tmp_path, ["test"], examples_dir=synthetic_examples
        )[0][0].scores
        for model in ("global-mean", "BiasedMF")
    }
    assert scores["BiasedMF"]["RMSE"] < scores["global-mean"]["RMSE"]


def test_review_retrieval_answers_with_a_training_review_of_the_same_item(synthetic_data, synthetic_examples):
    dataset = open_dataset(synthetic_data)
    task = registry().get("explanation")
    examples = open_examples(synthetic_examples).load(task, "test")
    predictor = make_predictor(load_baseline("review-retrieval"), dataset)
    answers = predictor.predict(task, examples)["text"].to_list()
    train = training_rows(synthetic_data)
    by_item = {
        item: {clean_text(r, task.review_max_words) for r in reviews}
        for item, reviews in train.group_by("item_idx").agg("review_text").iter_rows()
    }
    from_item = sum(
        answer in by_item.get(item, set()) for answer, item in zip(answers, examples["target_item"])
    )
    routes = predictor.config()["answers_by_route"]
    item_routes = routes.get("closest to the user's reviews", 0) + routes.get(
        "most typical review of the item", 0
    )
    assert from_item == item_routes and item_routes > 0.9 * len(examples)
    # the held-out answer itself is never retrievable: it is a test review
    assert sum(a == t for a, t in zip(answers, examples["review"])) < len(examples)


def test_personal_bm25_weight_is_the_best_on_valid_and_zero_weight_is_bm25(
    synthetic_data, synthetic_examples
):
    dataset = open_dataset(synthetic_data)
    task = registry().get("search")
    example_set = open_examples(synthetic_examples)
    valid, test = example_set.load(task, "valid"), example_set.load(task, "test")
    predictor = make_predictor(load_baseline("bm25-personal"), dataset)
    predictor.tune(task, valid)
    grid = predictor.config()["valid_NDCG@10_by_weight"]
    assert grid[predictor.weight] == max(grid.values())
    predictor.weight = 0.0
    plain = make_predictor(load_baseline("bm25"), dataset).predict(task, test)
    personal = predictor.predict(task, test)
    assert personal["greater"].to_list() == plain["greater"].to_list()


def test_zam_learns_to_search_far_above_chance(synthetic_data, synthetic_examples, tmp_path):
    [(result, _)] = run_baseline(
        "ZAM", "search", synthetic_data, tmp_path, ["test"], examples_dir=synthetic_examples
    )
    items = pl.read_parquet(synthetic_data / "items.parquet").height
    chance = sum(1 / np.log2(r + 1) for r in range(1, 11)) / items  # NDCG@10 of a random ranking
    assert result.scores["NDCG@10"] > 3 * chance


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_zam_early_stopping_ranks_valid_as_the_evaluation_does(synthetic_data, exclude_seen):
    """The valid NDCG@10 that picks ZAM's epoch is the one its predictions on those valid targets give
    (earlier items left out with exclude_seen), not a ranking the evaluation never makes."""
    from unimp_bench.baselines.history import valid_interactions
    from unimp_bench.baselines.personal_search import ZAMParams, ZAMPredictor
    from unimp_bench.metrics import ranking_metrics

    predictor = ZAMPredictor(ZAMParams(epochs=2, exclude_seen=exclude_seen), open_dataset(synthetic_data))
    valid = valid_interactions(predictor.dataset, ["user_idx", "pos"]).filter(pl.col("pos") >= 1)
    targets = [int(predictor.histories[u][p]) for u, p in valid.rows()]
    examples = valid.rename({"pos": "target_pos"}).with_columns(
        example_id=pl.int_range(pl.len()).cast(pl.String),
        split=pl.lit("valid"),
        target_item=pl.Series(targets),
        query=pl.Series([predictor.categories[t] for t in targets]),
    )
    predicted = predictor.predict(registry().get("search"), examples)
    evaluated = ranking_metrics(predicted["greater"].to_numpy(), predicted["ties"].to_numpy(), ["NDCG@10"])
    assert predictor.valid_ndcg(valid.rows()) == pytest.approx(evaluated["NDCG@10"], abs=1e-12)


def test_vbpr_reads_image_features_and_refuses_without_clip_weights(synthetic_data):
    from unimp_bench.baselines.item_features import thumbnail_features
    from unimp_bench.baselines.vbpr import VBPRParams, VBPRPredictor
    from unimp_bench.errors import UnimpError

    items = pl.read_parquet(synthetic_data / "items.parquet").sort("item_idx")
    features = thumbnail_features(synthetic_data, items["image_path"].to_list())
    with_image = items["image_path"].is_not_null().to_numpy()
    assert features.shape == (items.height, 192)
    assert (np.abs(features[with_image]).sum(axis=1) > 0).all() and not features[~with_image].any()
    with pytest.raises(UnimpError, match="needs local CLIP weights"):
        VBPRPredictor(VBPRParams(features="clip"), open_dataset(synthetic_data))
