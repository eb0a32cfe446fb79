"""Metrics against reference implementations (RecBole, scikit-learn, sacrebleu) and hand-computed cases."""

import itertools
import math

import numpy as np
import pytest

from unimp_bench.errors import UnimpError
from unimp_bench.metrics import (
    diversity,
    paired_cosine,
    parse_metric,
    ranking_metrics,
    rating_metrics,
    set_metrics,
    target_rank_counts,
    target_rank_from_list,
    text_metrics,
)

KS = [1, 3, 5, 10, 20]
NAMES = [f"{family}@{k}" for family in ("HR", "NDCG", "MRR") for k in KS]


def recbole_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """RecBole's own Hit / NDCG / MRR classes on the top-k of each score row."""
    import torch

    from unimp_bench.baselines.recbole_compat import import_recbole_metrics

    metrics = import_recbole_metrics()
    from recbole.evaluator.collector import DataStruct

    top = np.argsort(-scores, axis=1, kind="stable")[:, : max(KS)]
    pos_index = (top == targets[:, None]).astype(np.int64)
    data = DataStruct()
    data.set(
        "rec.topk", torch.from_numpy(np.concatenate([pos_index, np.ones((len(targets), 1), np.int64)], 1))
    )
    config = {"topk": KS, "metric_decimal_place": 12}
    found = {}
    for cls, name in ((metrics.Hit, "HR"), (metrics.NDCG, "NDCG"), (metrics.MRR, "MRR")):
        for key, value in cls(config).calculate_metric(data).items():
            found[f"{name}@{key.split('@')[1]}"] = value
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_match_recbole_on_random_score_matrices(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(300, 40))
    targets = rng.integers(0, 40, size=300)
    greater, ties = target_rank_counts(scores, targets)
    assert (ties == 0).all()
    ours = ranking_metrics(greater, ties, NAMES)
    theirs = recbole_metrics(scores, targets)
    for name in NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name


def test_ranked_lists_give_the_same_metrics_as_score_matrices():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(50, 30))
    targets = rng.integers(0, 30, size=50)
    lists = np.argsort(-scores, axis=1)
    from_lists = np.array([target_rank_from_list(row.tolist(), t) for row, t in zip(lists, targets)])
    from_scores, _ = target_rank_counts(scores, targets)
    assert (from_lists == from_scores).all()
    # a target missing from a truncated list is a miss at every k
    assert target_rank_from_list([3, 4], 9) == math.inf
    assert ranking_metrics(np.array([math.inf]), np.array([0.0]), ["HR@10", "NDCG@10", "MRR@10"]) == {
        "HR@10": 0.0,
        "NDCG@10": 0.0,
        "MRR@10": 0.0,
    }


def test_tie_rules_on_a_hand_computed_case():
    # One item above the target and three tied with it: the target's rank is 2, 3, 4 or 5.
    scores = np.array([[5.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    greater, ties = target_rank_counts(scores, np.array([1]))
    assert (greater[0], ties[0]) == (1.0, 3.0)
    names = ["HR@1", "HR@3", "NDCG@3", "MRR@3", "HR@10"]
    expected = ranking_metrics(greater, ties, names, "expected")
    assert expected["HR@1"] == 0.0
    assert expected["HR@3"] == pytest.approx(2 / 4)
    assert expected["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert expected["MRR@3"] == pytest.approx((1 / 2 + 1 / 3) / 4)
    assert expected["HR@10"] == 1.0
    pessimistic = ranking_metrics(greater, ties, names, "pessimistic")  # rank 5
    assert pessimistic["HR@3"] == 0.0 and pessimistic["HR@10"] == 1.0
    optimistic = ranking_metrics(greater, ties, names, "optimistic")  # rank 2
    assert optimistic["HR@3"] == 1.0 and optimistic["MRR@3"] == pytest.approx(0.5)


def test_expected_tie_rule_is_the_average_over_every_tie_break():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(6, 7)).astype(float)  # many ties
    targets = rng.integers(0, 7, size=6)
    greater, ties = target_rank_counts(scores, targets)
    names = ["HR@2", "NDCG@3", "MRR@4"]
    ours = ranking_metrics(greater, ties, names, "expected")
    totals = dict.fromkeys(names, 0.0)
    for row, target in zip(scores, targets):
        tied = [i for i in range(7) if row[i] == row[target]]
        orders = list(itertools.permutations(tied))
        for order in orders:  # every order of the tied items, each equally likely
            ranked = sorted(range(7), key=lambda i: (-row[i], order.index(i) if i in tied else 0))
            rank = target_rank_from_list(ranked, target)
            single = ranking_metrics(np.array([rank]), np.array([0.0]), names)
            for name in names:
                totals[name] += single[name] / len(orders) / len(targets)
    for name in names:
        assert ours[name] == pytest.approx(totals[name])


def test_a_constant_scorer_gets_a_random_rankers_score_not_a_perfect_one():
    greater, ties = target_rank_counts(np.zeros((4, 100)), np.array([0, 5, 50, 99]))
    assert ranking_metrics(greater, ties, ["HR@10"])["HR@10"] == pytest.approx(0.1)
    assert ranking_metrics(greater, ties, ["HR@10"], "optimistic")["HR@10"] == 1.0


def test_ranking_inputs_that_cannot_be_ranked_are_refused():
    with pytest.raises(UnimpError, match="NaN"):
        target_rank_counts(np.array([[0.1, np.nan]]), np.array([0]))
    greater, _ = target_rank_counts(np.array([[-np.inf, 1.0]]), np.array([0]))
    assert greater[0] == math.inf
    with pytest.raises(UnimpError, match="tie rule"):
        ranking_metrics(np.zeros(1), np.zeros(1), ["HR@1"], "random")
    with pytest.raises(UnimpError, match="unknown metric"):
        parse_metric("HR@0")
    assert parse_metric("NDCG@25").k == 25


def test_rating_metrics_hand_computed():
    scores = rating_metrics([4.0, 2.0, 5.0], [5.0, 2.0, 3.0])
    assert scores["MAE"] == pytest.approx(1.0)
    assert scores["RMSE"] == pytest.approx(math.sqrt(5 / 3))


def test_set_metrics_match_scikit_learn_samples_and_micro_averages():
    from sklearn.metrics import precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    selected = [[1, 2], [3], [], [4, 5, 6]]
    positives = [[1], [3, 7], [8], [4, 5]]
    ours = set_metrics(selected, positives)
    binarizer = MultiLabelBinarizer(classes=list(range(10)))
    truth, predicted = binarizer.fit_transform(positives), binarizer.transform(selected)
    for average, suffix in (("samples", ""), ("micro", "-micro")):
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average=average, zero_division=0)
        assert ours[f"Precision{suffix}"] == pytest.approx(p)
        assert ours[f"Recall{suffix}"] == pytest.approx(r)
        assert ours[f"F1{suffix}"] == pytest.approx(f)
    # by hand: example 1 has P 1/2, R 1, F1 2/3
    assert set_metrics([[1, 2]], [[1]])["F1"] == pytest.approx(2 / 3)


def test_bleu_and_rouge_hand_checked():
    perfect = text_metrics(["the cat sat on the mat"], ["the cat sat on the mat"], ["BLEU-4", "ROUGE-L"])
    assert perfect == {"BLEU-4": pytest.approx(1.0), "ROUGE-L": pytest.approx(1.0)}
    assert text_metrics(["dogs bark loudly"], ["the cat sat on the mat"], ["BLEU-4"])["BLEU-4"] == 0.0
    # unigrams: precision 2/2, recall 2/3 -> F 0.8; bigrams: 1/1 and 1/2 -> F 2/3
    scores = text_metrics(["the cat"], ["the cat sat"], ["ROUGE-1", "ROUGE-2", "ROUGE-L"])
    assert scores["ROUGE-1"] == pytest.approx(0.8)
    assert scores["ROUGE-2"] == pytest.approx(2 / 3)
    assert scores["ROUGE-L"] == pytest.approx(0.8)


def test_bleu1_is_the_clipped_unigram_precision_the_paper_reports_as_bleu():
    """BLEU-1 = matched unigrams (each at most as often as in the reference) / hypothesis unigrams,
    pooled over the corpus, with no brevity penalty: `precisions[0]` of HF evaluate's BLEU."""
    # "the" four times against one "the" in the reference: 1 of 4 counts
    assert text_metrics(["the the the the"], ["the cat"], ["BLEU-1"])["BLEU-1"] == pytest.approx(0.25)
    # a one-word hypothesis of a three-word reference: precision 1 (BLEU-1 with a brevity penalty
    # would be exp(1 - 3) = 0.135)
    assert text_metrics(["the"], ["the cat sat"], ["BLEU-1"])["BLEU-1"] == pytest.approx(1.0)
    # pooled, not averaged per example: (1 + 2) / (4 + 3), where the mean of 1/4 and 2/3 would differ
    pooled = text_metrics(["the the the the", "a dog ran"], ["the cat", "a dog sat"], ["BLEU-1"])
    assert pooled["BLEU-1"] == pytest.approx(3 / 7)
    assert text_metrics([""], ["the cat"], ["BLEU-1"])["BLEU-1"] == 0.0


def test_meteor_uses_wordnet_from_the_system_packages(wordnet):
    identical = text_metrics(["the cat sat on the mat"], ["the cat sat on the mat"], ["METEOR"])["METEOR"]
    # six matches in one chunk: F-mean 1, fragmentation penalty 0.5 * (1/6)^3
    assert identical == pytest.approx(1 - 0.5 * (1 / 6) ** 3)
    # WordNet makes "auto" match "car": four matches in one chunk
    synonym = text_metrics(["a auto is red"], ["a car is red"], ["METEOR"])["METEOR"]
    assert synonym == pytest.approx(1 - 0.5 * (1 / 4) ** 3)
    # "banana" matches nothing: 3 of 4 words in two chunks
    unrelated = text_metrics(["a banana is red"], ["a car is red"], ["METEOR"])["METEOR"]
    assert unrelated == pytest.approx(0.75 * (1 - 0.5 * (2 / 3) ** 3))


def test_bertscore_runs_offline_with_the_packaged_model():
    from unimp_bench.text_resources import resolve_bertscore_model

    model = resolve_bertscore_model("minilm")
    scores = text_metrics(
        ["the battery lasts all day", "the battery lasts all day"],
        ["the battery lasts all day", "terrible smell, returned it"],
        ["BERTScore-F1"],
        (model.path, model.num_layers),
    )
    assert 0.2 < scores["BERTScore-F1"] < 1.0
    same = text_metrics(["works great"], ["works great"], ["BERTScore-F1"], (model.path, model.num_layers))
    assert same["BERTScore-F1"] == pytest.approx(1.0, abs=1e-4)
    assert model.describe()["num_layers"] == 6 and "MiniLM" in model.describe()["name"]


def test_a_missing_bertscore_model_is_a_clear_error(tmp_path):
    from unimp_bench.text_resources import resolve_bertscore_model

    with pytest.raises(UnimpError, match="neither a local folder nor in the Hugging Face cache"):
        resolve_bertscore_model("someone/not-downloaded-model", 4)


def test_image_similarity_and_diversity_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert paired_cosine(a, b) == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    # three embeddings: two identical, one orthogonal -> pairwise cosines 1, 0, 0
    assert diversity(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1 - 1 / 3)
    with pytest.raises(UnimpError, match="all zeros"):
        paired_cosine(np.zeros((1, 2)), np.ones((1, 2)))


def test_diversity_across_users_sharing_a_query_hand_computed():
    from unimp_bench.metrics import shared_query_diversity

    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    queries = ["shoe", "shoe", "lamp", "lamp", "tent"]
    # shoe: one orthogonal pair -> 1; lamp: identical pair -> 0; tent: alone, not counted
    assert shared_query_diversity(embeddings, queries) == (pytest.approx(0.5), 2)
    value, groups = shared_query_diversity(embeddings[:1], ["shoe"])
    assert math.isnan(value) and groups == 0
