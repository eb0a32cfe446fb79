"""Scoring predictions into Result JSONs, the pop and BM25 baselines, and the leaderboard."""

import json

import numpy as np
import polars as pl
import pytest

from unimp_bench.baselines.popularity import PopularityParams, PopularityPredictor, training_counts
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.contract import open_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.evaluation.run import score_file, score_predictions
from unimp_bench.evaluation.scoring import ScoringSettings
from unimp_bench.examples import open_examples
from unimp_bench.leaderboard import REPORTED, export_leaderboard, long_table
from unimp_bench.metrics import target_rank_counts
from unimp_bench.results import read_result
from unimp_bench.retrieval import BM25Ranker, item_documents
from unimp_bench.tasks import registry


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_perfect_and_empty_predictions_score_as_expected(synthetic_examples, tmp_path):
    example_set = open_examples(synthetic_examples)
    task = registry().get("recommendation")
    test = example_set.load(task, "test")
    perfect = write_jsonl(
        tmp_path / "perfect.jsonl",
        [{"example_id": e, "ranked": [t, 0]} for e, t in zip(test["example_id"], test["target_item"])],
    )
    result, path = score_file(
        task, perfect, example_set, "oracle", tmp_path / "results", None, ScoringSettings()
    )
    assert result.split == "test" and result.n_examples == test.height
    assert all(v == 1.0 for v in result.scores.values())
    stored = json.loads(path.read_text())
    manifest = example_set.manifest
    assert stored["dataset"]["content_hash"] == manifest["dataset"]["content_hash"]
    assert stored["task_version"] == task.version
    assert (
        stored["provenance"]["examples"]["sha256"]
        == manifest["tasks"]["recommendation"]["splits"]["test"]["sha256"]
    )
    assert stored["provenance"]["predictions"]["file"] == "perfect.jsonl"
    assert stored["provenance"]["package_version"] and stored["provenance"]["seed"] == 0
    wrong = write_jsonl(
        tmp_path / "wrong.jsonl", [{"example_id": e, "ranked": []} for e in test["example_id"]]
    )
    result, _ = score_file(task, wrong, example_set, "empty", tmp_path / "results", None, ScoringSettings())
    assert all(v == 0.0 for v in result.scores.values())


def test_rating_and_set_predictions_are_scored_against_the_examples(synthetic_examples):
    example_set = open_examples(synthetic_examples)
    preference = registry().get("preference")
    examples = example_set.load(preference, "test")
    predictions = examples.select("example_id", (pl.col("rating") - 1.0).alias("rating"))
    scores, _, _ = score_predictions(preference, examples, predictions, ScoringSettings())
    assert scores == {"MAE": pytest.approx(1.0), "RMSE": pytest.approx(1.0)}
    selection = registry().get("selection")
    examples = example_set.load(selection, "test")
    everything = examples.select("example_id", pl.col("candidates").alias("selected"))
    scores, _, _ = score_predictions(selection, examples, everything, ScoringSettings())
    assert scores["Recall"] == 1.0 and scores["Precision"] == pytest.approx(0.1)  # 1 positive of 10
    outside = examples.select("example_id", pl.lit([10_000]).alias("selected"))
    with pytest.raises(UnimpError, match="not among their candidates"):
        score_predictions(selection, examples, outside, ScoringSettings())


def test_explanation_predictions_get_every_text_metric_and_the_scorer_is_recorded(
    synthetic_examples, wordnet
):
    example_set = open_examples(synthetic_examples)
    task = registry().get("explanation")
    examples = example_set.load(task, "new_user")
    echo = examples.select("example_id", pl.col("review").alias("text"))
    scores, used, _ = score_predictions(task, examples, echo, ScoringSettings(bertscore_model="minilm"))
    assert set(scores) == set(task.metrics)
    assert scores["BLEU-4"] == pytest.approx(1.0) and scores["ROUGE-L"] == pytest.approx(1.0)
    assert scores["BERTScore-F1"] == pytest.approx(1.0, abs=1e-4)
    assert 0.99 < scores["METEOR"] <= 1.0 and "missing_metrics" not in used
    assert "MiniLM" in used["bertscore_model"]["name"]


def test_image_generation_predictions_are_scored_with_clip_embeddings(
    synthetic_data, synthetic_examples, tmp_path
):
    import open_clip
    import torch

    from unimp_bench.clip_scoring import ClipEmbedder

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.model.CLIPVisionCfg(
            layers=1, width=32, head_width=16, patch_size=8, image_size=32
        ),
        text_cfg=open_clip.model.CLIPTextCfg(
            context_length=16, vocab_size=49408, width=32, heads=2, layers=1
        ),
    )
    preprocess = open_clip.transform.image_transform(32, is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    embedder = ClipEmbedder(model, preprocess, tokenizer)
    example_set = open_examples(synthetic_examples)
    task = registry().get("image_generation")
    examples = example_set.load(task, "new_user")
    # "generate" each target's own image: CLIP-I is then exactly 1
    copied = examples.select(
        "example_id", pl.concat_str(pl.lit(str(synthetic_data) + "/"), "target_image").alias("image")
    )
    scores, _, _ = score_predictions(
        task, examples, copied, ScoringSettings(), synthetic_data, tmp_path, embedder
    )
    assert scores["CLIP-I"] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= scores["CLIP-T"] <= 1.0 and 0.0 <= scores["Diversity"] <= 2.0
    with pytest.raises(UnimpError, match="need local CLIP weights"):
        score_predictions(task, examples, copied, ScoringSettings(), synthetic_data, tmp_path)


def test_mismatched_predictions_are_refused_with_one_sentence(synthetic_examples, tmp_path):
    example_set = open_examples(synthetic_examples)
    task = registry().get("recommendation")
    ids = example_set.load(task, "test")["example_id"].to_list()
    settings = ScoringSettings()
    cases = {
        "missing": (
            [{"example_id": e, "ranked": [1]} for e in ids[:-3]],
            "3 of .* examples have no prediction",
        ),
        "extra": (
            [{"example_id": e, "ranked": [1]} for e in ids]
            + [{"example_id": "recommendation:test:9999:1", "ranked": [1]}],
            "do not exist here",
        ),
        "duplicate": ([{"example_id": e, "ranked": [1]} for e in ids + ids[:1]], "more than one prediction"),
        "field": ([{"example_id": e, "items": [1]} for e in ids], "lacks the prediction field"),
        "type": ([{"example_id": e, "ranked": "abc"} for e in ids], "wrong type"),
        "mixed": (
            [{"example_id": "search:valid:1:1", "ranked": [1]}, {"example_id": ids[0], "ranked": [1]}],
            "one split",
        ),
    }
    for name, (rows, message) in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        with pytest.raises(UnimpError, match=message):
            score_file(task, path, example_set, name, tmp_path / "r", None, settings)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"example_id": "x", "ranked": [1]}\n{not json\n')
    with pytest.raises(UnimpError, match="line 2 is not valid JSON"):
        score_file(task, broken, example_set, "b", tmp_path / "r", None, settings)


def test_popularity_ranks_by_training_counts_with_exact_ties(synthetic_data, synthetic_examples):
    dataset = open_dataset(synthetic_data)
    counts = training_counts(dataset)
    interactions = pl.read_parquet(synthetic_data / "interactions.parquet")
    users = pl.read_parquet(synthetic_data / "users.parquet")
    train = interactions.join(users, on="user_idx").filter(
        (pl.col("group") == "train") & (pl.col("split") == "train")
    )
    assert counts.sum() == train.height
    task = registry().get("recommendation")
    examples = open_examples(synthetic_examples).load(task, "test")
    predictions = PopularityPredictor(PopularityParams(exclude_seen=False), dataset).predict(task, examples)
    # the same counts as ranking the full (identical) score matrix
    matrix = np.tile(counts, (examples.height, 1))
    greater, ties = target_rank_counts(matrix, examples["target_item"].to_numpy())
    assert (
        predictions["greater"].to_list() == greater.tolist()
        and predictions["ties"].to_list() == ties.tolist()
    )
    assert predictions["ranked"][0].to_list() == np.lexsort((np.arange(len(counts)), -counts))[:10].tolist()


def test_excluding_seen_items_removes_exactly_the_users_earlier_items(synthetic_data, synthetic_examples):
    dataset = open_dataset(synthetic_data)
    task = registry().get("recommendation")
    examples = open_examples(synthetic_examples).load(task, "test").head(30)
    kept = PopularityPredictor(PopularityParams(exclude_seen=False), dataset).predict(task, examples)
    excluded = PopularityPredictor(PopularityParams(exclude_seen=True), dataset).predict(task, examples)
    counts = training_counts(dataset)
    interactions = pl.read_parquet(synthetic_data / "interactions.parquet")
    for row, before, after in zip(
        examples.iter_rows(named=True), kept.iter_rows(named=True), excluded.iter_rows(named=True)
    ):
        earlier = interactions.filter(
            (pl.col("user_idx") == row["user_idx"]) & (pl.col("pos") < row["target_pos"])
        )
        above = sum(1 for i in earlier["item_idx"] if counts[i] > counts[row["target_item"]])
        assert after["greater"] == before["greater"] - above
        assert not set(after["ranked"]) & set(earlier["item_idx"].to_list())


def test_selection_threshold_is_tuned_on_valid_and_never_reads_test(synthetic_data, synthetic_examples):
    dataset = open_dataset(synthetic_data)
    task = registry().get("selection")
    example_set = open_examples(synthetic_examples)
    valid, test = example_set.load(task, "valid"), example_set.load(task, "test")
    predictor = PopularityPredictor(PopularityParams(), dataset)
    predictor.tune(task, valid)
    threshold = predictor.threshold
    # the chosen threshold is the best on valid among every distinct candidate popularity
    best = max(
        score_predictions(
            task,
            valid,
            valid.select(
                "example_id", pl.Series("selected", predictor.select_at(valid["candidates"].to_list(), t))
            ),
            ScoringSettings(),
        )[0]["F1"]
        for t in {float(predictor.counts[c]) for row in valid["candidates"].to_list() for c in row}
    )
    chosen = predictor.predict(task, valid)
    assert score_predictions(task, valid, chosen, ScoringSettings())[0]["F1"] == pytest.approx(best)
    # scrambling the test labels cannot move it: tuning only ever sees valid examples
    scrambled = test.with_columns(pl.col("candidates").list.reverse().list.head(1).alias("positives"))
    again = PopularityPredictor(PopularityParams(), dataset)
    again.tune(task, valid)
    again.predict(task, scrambled)
    assert again.threshold == threshold


def test_bm25_counts_match_ranking_rank_bm25_scores_directly(synthetic_data, synthetic_examples):
    from rank_bm25 import BM25Okapi

    dataset = open_dataset(synthetic_data)
    items = pl.read_parquet(synthetic_data / "items.parquet")
    documents = item_documents(items, ("title", "brand", "categories", "description"))
    direct = BM25Okapi(documents)
    task = registry().get("search")
    examples = open_examples(synthetic_examples).load(task, "test")
    matrix = np.array([direct.get_scores(q.lower().split()) for q in examples["query"]])
    # the default protocol: the user's earlier items (never the target) leave the ranking
    interactions = pl.read_parquet(synthetic_data / "interactions.parquet")
    for row, (user, position, target) in enumerate(
        examples.select("user_idx", "target_pos", "target_item").iter_rows()
    ):
        earlier = interactions.filter((pl.col("user_idx") == user) & (pl.col("pos") < position))["item_idx"]
        matrix[row, [i for i in earlier.to_list() if i != target]] = -np.inf
    greater, ties = target_rank_counts(matrix, examples["target_item"].to_numpy())
    from unimp_bench.baselines.registry import load_baseline, make_predictor

    predictions = make_predictor(load_baseline("bm25"), dataset).predict(task, examples)
    assert (
        predictions["greater"].to_list() == greater.tolist()
        and predictions["ties"].to_list() == ties.tolist()
    )
    assert (
        BM25Ranker(documents).top("yoga mat", 3)
        == np.lexsort((np.arange(len(documents)), -direct.get_scores(["yoga", "mat"])))[:3].tolist()
    )


def test_baseline_results_are_reproduced_by_scoring_their_predictions(synthetic_data, tmp_path):
    runs = run_baseline("pop", "recommendation", synthetic_data, tmp_path / "results", ["test", "new_domain"])
    assert [r.split for r, _ in runs] == ["test", "new_domain"]
    result, path = runs[0]
    examples_dir = tmp_path / "examples"
    from unimp_bench.examples import build_examples

    build_examples(synthetic_data, examples_dir, ["recommendation"], ["test"])
    predictions = tmp_path / "results" / "predictions" / result.provenance["predictions"]["file"]
    rescored, _ = score_file(
        registry().get("recommendation"),
        predictions,
        open_examples(examples_dir),
        "pop-rescored",
        tmp_path / "again",
        None,
        ScoringSettings(),
    )
    assert rescored.scores == result.scores
    assert read_result(path).scores == result.scores
    # the held-out domain's items never occur in training: zero-shot popularity has nothing to rank
    # them by and says so instead of reporting chance as a score
    new_domain = runs[1][0]
    assert "zero-shot" in new_domain.provenance["not_applicable"]


def test_baselines_refuse_tasks_they_do_not_serve_and_unknown_models(synthetic_data, tmp_path):
    with pytest.raises(UnimpError, match="does not serve task search"):
        run_baseline("pop", "search", synthetic_data, tmp_path, ["test"])
    with pytest.raises(UnimpError, match="unknown baseline 'sasrec2'"):
        run_baseline("sasrec2", "search", synthetic_data, tmp_path, ["test"])
    with pytest.raises(UnimpError, match="not on train"):
        run_baseline("bm25", "search", synthetic_data, tmp_path, ["train"])
    config = tmp_path / "bm25.yaml"
    config.write_text(
        "name: bm25\ndescription: x\nengine: native\nkinds: [search]\nparams: {k1: 1.2, kay: 3}\n"
    )
    with pytest.raises(UnimpError, match="unknown key"):
        run_baseline("bm25", "search", synthetic_data, tmp_path, ["test"], config=config)


def test_leaderboard_is_one_row_per_method_task_split(synthetic_data, tmp_path):
    results = tmp_path / "results"
    run_baseline("pop", "recommendation", synthetic_data, results, ["valid", "test"])
    run_baseline("bm25", "search", synthetic_data, results, ["test"])
    wide = export_leaderboard(
        results,
        tmp_path / "b.csv",
        tmp_path / "b.md",
        tmp_path / "b.png",
        tmp_path / "long.csv",
        with_paper=True,
    )
    measured = wide.filter(pl.col("source") == "measured")
    assert sorted(measured.select("method", "task", "split").rows()) == [
        ("bm25", "search", "test"),
        ("pop", "recommendation", "test"),
        ("pop", "recommendation", "valid"),
    ]
    csv = pl.read_csv(tmp_path / "b.csv")
    assert {"HR@5", "NDCG@10", "MRR@3", "MAE", "BLEU-1"} <= set(csv.columns)
    pop_test = measured.filter((pl.col("method") == "pop") & (pl.col("split") == "test")).row(0, named=True)
    stored = read_result(next(results.glob("pop__recommendation__test__*.json")))
    assert pop_test["HR@10"] == stored.scores["HR@10"] and pop_test["n_examples"] == stored.n_examples
    reported = wide.filter(pl.col("source") == REPORTED)
    unimp_search = reported.filter((pl.col("method") == "UniMP") & (pl.col("task") == "search")).row(
        0, named=True
    )
    assert unimp_search["HR@5"] == 0.1769 and unimp_search["origin"] == "table2d"
    # the paper's new-domain rows carry the caveat of what its methods trained on
    new_domain = reported.filter(pl.col("split") == "new_domain")
    assert new_domain.height > 0 and new_domain["note"].str.contains("new_domain_finetune").all()
    assert reported.filter(pl.col("split") != "new_domain")["note"].is_null().all()
    assert "| paper (reported) |" in (tmp_path / "b.md").read_text()
    # the paper's "BLEU" is its code's unigram precision: compared with BLEU-1, never BLEU-4
    explanation = reported.filter((pl.col("method") == "UniMP") & (pl.col("task") == "explanation"))
    assert explanation["BLEU-1"].to_list() == [0.1423] and "BLEU-4" not in explanation.columns
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert pl.read_csv(tmp_path / "long.csv").height == long_table(results, True).height


def test_leaderboard_refuses_duplicates_and_foreign_json(synthetic_data, tmp_path):
    results = tmp_path / "results"
    runs = run_baseline("pop", "recommendation", synthetic_data, results, ["test"])
    copy = results / "copy" / "again.json"
    copy.parent.mkdir()
    copy.write_text(runs[0][1].read_text())
    with pytest.raises(UnimpError, match="keep one"):
        export_leaderboard(results, tmp_path / "b.csv")
    copy.write_text('{"hello": 1}')
    with pytest.raises(UnimpError, match="is not a unimp-bench result"):
        export_leaderboard(results, tmp_path / "b.csv")
    with pytest.raises(UnimpError, match="no result JSON files"):
        export_leaderboard(
            tmp_path / "nothing-here" if (tmp_path / "nothing-here").mkdir() is None else None,
            tmp_path / "c.csv",
        )


@pytest.mark.parametrize("model", ["pop", "bm25", "bm25-personal"])
def test_every_ranking_baseline_leaves_earlier_items_out_by_default(
    synthetic_data, synthetic_examples, tmp_path, model
):
    """The protocol default: a user's earlier items are never ranked, the choice is in the result, and
    `exclude_seen: false` (a perturbation of only that switch) puts them back and can only move targets
    down."""
    import yaml

    from unimp_bench.baselines.registry import available_baselines
    from unimp_bench.baselines.runner import run_baseline

    spec = yaml.safe_load(available_baselines()[model].read_text())
    task = "recommendation" if model == "pop" else "search"
    spec["params"] = (spec.get("params") or {}) | {"exclude_seen": False}
    keep_yaml = tmp_path / "keep.yaml"
    keep_yaml.write_text(yaml.safe_dump(spec))
    [(default, _)] = run_baseline(
        model, task, synthetic_data, tmp_path / "r", ["test"], examples_dir=synthetic_examples
    )
    [(keep, _)] = run_baseline(
        model,
        task,
        synthetic_data,
        tmp_path / "k",
        ["test"],
        examples_dir=synthetic_examples,
        config=keep_yaml,
    )
    assert default.provenance["config"]["params"]["exclude_seen"] is True
    assert keep.provenance["config"]["params"]["exclude_seen"] is False
    read = {
        name: pl.read_parquet(tmp_path / folder / "predictions" / f"{model}__{task}__test.parquet")
        for name, folder in ((model, "r"), (f"{model}-keep", "k"))
    }
    examples = open_examples(synthetic_examples).load(registry().get(task), "test")
    interactions = pl.read_parquet(synthetic_data / "interactions.parquet")
    earlier = (
        examples.select("example_id", "user_idx", "target_pos")
        .join(interactions.select("user_idx", "pos", "item_idx"), on="user_idx")
        .filter(pl.col("pos") < pl.col("target_pos"))
        .group_by("example_id")
        .agg(pl.col("item_idx"))
    )
    seen = dict(earlier.iter_rows())
    shown = dict(read[model].select("example_id", "ranked").iter_rows())
    assert all(not set(shown[e]) & set(items) for e, items in seen.items())
    kept_shown = dict(read[f"{model}-keep"].select("example_id", "ranked").iter_rows())
    assert any(set(kept_shown[e]) & set(items) for e, items in seen.items())  # the switch does something
    # with the same scores, leaving items out can only move targets up (bm25-personal tunes its
    # weight on valid under each protocol, so its scores may differ)
    if default.provenance["config"].get("affinity_weight") == keep.provenance["config"].get(
        "affinity_weight"
    ):
        both = read[model].join(read[f"{model}-keep"], on="example_id", suffix="_keep")
        assert (both["greater"] <= both["greater_keep"]).all()
        assert default.scores["NDCG@10"] >= keep.scores["NDCG@10"]
