"""`unimp-bench eval` on a tiny checkpoint trained on the synthetic corpus: every task end to end with
its scores recomputed from the saved predictions, exact ranking vs constrained beam search, the
invalid-ID rate of unconstrained generation, seen-item exclusion, generalization splits, robustness
perturbations and resumable shards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from helpers import SHRUNK_TINY_MODEL, tiny_train_args
from unimp_bench.cli import app
from unimp_bench.errors import UnimpError

SMALL = SHRUNK_TINY_MODEL + [
    "train.micro_batch=8",
    "train.lr=3e-3",
    "train.log_every=50",
]
LIMIT = 24
CHUNK = re.compile(r"\[IMG\] ?(.*?) ?<item_(\d+)> \[EOC\]")


def kept_attributes(body: str, pairs: list[tuple[str, str]]) -> int:
    """How many of an item's (key, value) pairs a chunk body shows, checking that it shows them in
    order and nothing else."""
    kept = 0
    for key, value in pairs:
        if body == f"{key} {value}" or body.startswith(f"{key} {value} "):
            body = body[len(f"{key} {value}") :].lstrip()
            kept += 1
    assert body == "", body
    return kept


@pytest.fixture(scope="module")
def run(synthetic_data, tmp_path_factory) -> Path:
    """A tiny UniMP trained for 25 steps on the synthetic corpus (every trainable task)."""
    run = tmp_path_factory.mktemp("eval-train") / "tiny"
    result = CliRunner().invoke(app, tiny_train_args(synthetic_data, run, 25, SMALL))
    assert result.exit_code == 0, result.output
    return run


def random_export(run: Path, data: Path, examples: Path, folder: Path, seed: int, **model_changes) -> Path:
    """An untrained UniMP of the run's configuration (with `model_changes`), exported to `folder`."""
    from dataclasses import replace

    from unimp_bench.examples import open_examples
    from unimp_bench.models.export import export_model
    from unimp_bench.models.factory import build_model
    from unimp_bench.models.tokenization import load_saved_tokenizer
    from unimp_bench.training.config import load_run_config

    config = replace(load_run_config(run / "config.yaml").model, **model_changes)
    items = len(pl.read_parquet(data / "items.parquet"))
    model = build_model(config, len(load_saved_tokenizer(run / "tokenizer")), items, seed=seed)
    dataset = open_examples(examples).manifest["dataset"]
    export_model(model, folder, run / "tokenizer", set(), None, {"dataset": dataset})
    return folder


def evaluate(run, data, examples, out, task, *options) -> tuple[dict, pl.DataFrame, str]:
    args = ["eval", "--task", task, "--checkpoint", str(run), "--data", str(data)]
    args += ["--examples", str(examples), "--out", str(out), *options]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path = Path(result.output.split("-> ")[-1].split()[0])
    payload = json.loads(path.read_text())
    predictions = pl.read_parquet(out / "predictions" / payload["provenance"]["predictions"]["file"])
    return payload, predictions, result.output


def examples_of(examples: Path, task: str, split: str = "test", limit: int | None = LIMIT) -> pl.DataFrame:
    frame = pl.read_parquet(examples / task / f"{split}.parquet")
    return frame.head(limit) if limit else frame


def seen_before(data: Path, frame: pl.DataFrame) -> list[set[int]]:
    interactions = pl.read_parquet(data / "interactions.parquet")
    return [
        set(interactions.filter((pl.col("user_idx") == u) & (pl.col("pos") < p))["item_idx"].to_list())
        for u, p in zip(frame["user_idx"], frame["target_pos"])
    ]


def test_ranking_end_to_end_with_scores_recomputed_by_hand(run, synthetic_data, synthetic_examples, tmp_path):
    for task in ("recommendation", "search"):
        payload, predictions, _ = evaluate(
            run, synthetic_data, synthetic_examples, tmp_path, task, "--limit", str(LIMIT)
        )
        assert payload["method"] == f"UniMP-tiny+first_{LIMIT}" and payload["n_examples"] == LIMIT
        assert payload["provenance"]["config"]["eval"]["seen_items"] == "exclude"  # the default, recorded
        assert payload["provenance"]["checkpoint"].endswith("export")
        # ranks by hand from the exact counts: rank = greater + ties / 2 (expected tie rule)
        rank = predictions["greater"].to_numpy() + predictions["ties"].to_numpy() / 2
        hits = rank < 10
        assert payload["scores"]["HR@10"] == pytest.approx(hits.mean())
        assert payload["scores"]["MRR@10"] == pytest.approx(np.where(hits, 1 / (rank + 1), 0).mean())
        # the counts agree with the shown top-10: a target listed at index i has i items above it
        frame = examples_of(synthetic_examples, task)
        for target, shown, greater in zip(
            frame["target_item"], predictions["ranked"].to_list(), predictions["greater"]
        ):
            assert len(shown) == 10 and len(set(shown)) == 10
            if target in shown:
                assert shown.index(target) == greater


def test_exact_ranking_and_constrained_beam_search_agree_on_the_top10(
    run, synthetic_data, synthetic_examples, tmp_path
):
    for seen in ("keep", "exclude"):
        exact, exact_predictions, _ = evaluate(
            run,
            synthetic_data,
            synthetic_examples,
            tmp_path,
            "recommendation",
            "--limit",
            "12",
            "--seen-items",
            seen,
        )
        beam, beam_predictions, _ = evaluate(
            run, synthetic_data, synthetic_examples, tmp_path, "recommendation", "--limit", "12",
            "--seen-items", seen, "--ranking", "beam",
        )  # fmt: skip
        assert beam["method"] == exact["method"].replace("UniMP-tiny", "UniMP-tiny+beam")
        assert exact["method"] == "UniMP-tiny" + ("+keep_seen" if seen == "keep" else "") + "+first_12"
        assert beam_predictions["ranked"].to_list() == exact_predictions["ranked"].to_list()
        assert beam["scores"]["invalid_id_rate"] == 0 and beam["scores"]["duplicate_rate"] == 0
        for metric in ("HR@3", "HR@10", "NDCG@10", "MRR@10"):
            assert beam["scores"][metric] == pytest.approx(exact["scores"][metric])


def test_excluded_seen_items_are_never_ranked_and_the_choice_is_recorded(
    run, synthetic_data, synthetic_examples, tmp_path
):
    payload, predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path, "recommendation", "--limit", str(LIMIT)
    )
    keep, keep_predictions, _ = evaluate(
        run,
        synthetic_data,
        synthetic_examples,
        tmp_path,
        "recommendation",
        "--limit",
        str(LIMIT),
        "--seen-items",
        "keep",
    )
    assert payload["method"] == f"UniMP-tiny+first_{LIMIT}"  # exclusion is the protocol: no tag
    assert keep["method"] == f"UniMP-tiny+keep_seen+first_{LIMIT}"
    assert payload["provenance"]["config"]["eval"]["seen_items"] == "exclude"
    assert keep["provenance"]["config"]["eval"]["seen_items"] == "keep"
    seen = seen_before(synthetic_data, examples_of(synthetic_examples, "recommendation"))
    assert any(set(shown) & s for shown, s in zip(keep_predictions["ranked"].to_list(), seen))  # kept
    for shown, s in zip(predictions["ranked"].to_list(), seen):
        assert not set(shown) & s
    # leaving items out can only move targets up
    assert (predictions["greater"].to_numpy() <= keep_predictions["greater"].to_numpy()).all()
    assert payload["scores"]["HR@10"] >= keep["scores"]["HR@10"]


def test_a_random_model_reports_its_invalid_id_rate(run, synthetic_data, synthetic_examples, tmp_path):
    """Unconstrained beams of an untrained model are mostly not item ids: the rate is reported, and it
    is what the saved predictions say."""
    random_export(run, synthetic_data, synthetic_examples, tmp_path / "random", seed=5)
    payload, predictions, _ = evaluate(
        tmp_path / "random", synthetic_data, synthetic_examples, tmp_path / "out", "search",
        "--limit", "8", "--ranking", "unconstrained", "--beams", "5",
    )  # fmt: skip
    assert payload["method"] == "UniMP+unconstrained+first_8"
    rate = predictions["invalid"].sum() / predictions["beams"].sum()
    assert predictions["beams"].to_list() == [5] * 8
    assert payload["scores"]["invalid_id_rate"] == pytest.approx(rate) and rate > 0.5
    assert payload["scores"]["duplicate_rate"] == pytest.approx(predictions["duplicates"].sum() / 40)
    for ranked, generated in zip(predictions["ranked"].to_list(), predictions["generated"].to_list()):
        assert len(ranked) <= 5 and all(f"<item_{i}>" in generated for i in ranked)


def test_preference_predicts_by_argmax_and_by_expected_value(
    run, synthetic_data, synthetic_examples, tmp_path
):
    payload, predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path, "preference", "--limit", str(LIMIT)
    )
    truth = examples_of(synthetic_examples, "preference")["rating"].to_numpy()
    probabilities = np.array(predictions["rating_probabilities"].to_list())
    assert probabilities.shape == (LIMIT, 5) and np.allclose(probabilities.sum(axis=1), 1)
    argmax = probabilities.argmax(axis=1) + 1
    expected = probabilities @ np.arange(1, 6)
    assert predictions["rating"].to_list() == argmax.tolist()
    assert np.allclose(predictions["rating_expected"], expected)
    assert payload["scores"]["MAE"] == pytest.approx(np.abs(argmax - truth).mean())
    assert payload["scores"]["RMSE"] == pytest.approx(np.sqrt(((argmax - truth) ** 2).mean()))
    assert payload["scores"]["MAE-expected"] == pytest.approx(np.abs(expected - truth).mean())
    assert payload["scores"]["RMSE-expected"] == pytest.approx(np.sqrt(((expected - truth) ** 2).mean()))


def test_selection_decodes_distinct_candidates_and_scores_by_hand(
    run, synthetic_data, synthetic_examples, tmp_path
):
    payload, predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path, "selection", "--limit", str(LIMIT)
    )
    frame = examples_of(synthetic_examples, "selection")
    precision, recall = [], []
    for selected, candidates, positives in zip(
        predictions["selected"].to_list(), frame["candidates"].to_list(), frame["positives"].to_list()
    ):
        assert selected and len(set(selected)) == len(selected) and set(selected) <= set(candidates)
        hits = len(set(selected) & set(positives))
        precision.append(hits / len(selected))
        recall.append(hits / len(positives))
    assert payload["scores"]["Precision"] == pytest.approx(np.mean(precision))
    assert payload["scores"]["Recall"] == pytest.approx(np.mean(recall))


def test_explanations_respect_the_length_cap_and_rescore_identically(
    run, synthetic_data, synthetic_examples, tmp_path
):
    payload, predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path, "explanation", "--limit", "6",
        "--max-new-tokens", "5", "--text-decoding", "beam", "--text-beams", "2",
    )  # fmt: skip
    assert payload["method"] == "UniMP-tiny+beam2+first_6"
    assert max(predictions["generated_tokens"]) <= 5
    assert not any("<item_" in text or "[IMG]" in text for text in predictions["text"])
    # the scorer `unimp-bench score` uses reproduces every metric from the saved predictions
    examples = examples_of(synthetic_examples, "explanation", limit=6)
    from unimp_bench.evaluation.run import score_predictions
    from unimp_bench.evaluation.scoring import ScoringSettings
    from unimp_bench.tasks import registry

    scores, used, _ = score_predictions(
        registry().get("explanation"), examples, predictions.select("example_id", "text"), ScoringSettings()
    )
    for name, value in scores.items():
        assert payload["scores"][name] == pytest.approx(value, abs=1e-6)
    assert payload["provenance"]["metric_settings"]["bertscore_model"] == used["bertscore_model"]


def test_generalization_splits_use_the_same_path(run, synthetic_data, synthetic_examples, tmp_path):
    payload, predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path, "recommendation", "--split", "new_user"
    )
    assert payload["split"] == "new_user"
    assert payload["n_examples"] == len(
        examples_of(synthetic_examples, "recommendation", "new_user", limit=None)
    )
    assert predictions["example_id"].str.starts_with("recommendation:new_user:").all()


def test_zero_shot_new_domain_is_scored_from_content_and_finetune_needs_a_fine_tuned_model(
    run, synthetic_data, synthetic_examples, tmp_path
):
    """The tiny preset's content item rows rank the held-out domain's items, which no training example
    held (the ID-only model's n/a is in test_item_content.py); new_domain_finetune refuses a model
    that was not fine-tuned."""
    args = ["eval", "--task", "recommendation", "--checkpoint", str(run), "--data", str(synthetic_data)]
    args += ["--examples", str(synthetic_examples), "--out", str(tmp_path)]
    zero_shot = CliRunner().invoke(app, [*args, "--split", "new_domain"])
    assert zero_shot.exit_code == 0, zero_shot.output
    payload = json.loads(Path(zero_shot.output.split("-> ")[-1].split()[0]).read_text())
    assert payload["split"] == "new_domain" and "not_applicable" not in payload["provenance"]
    assert payload["n_examples"] == len(
        examples_of(synthetic_examples, "recommendation", "new_domain", limit=None)
    )
    refused = CliRunner().invoke(app, [*args, "--split", "new_domain_finetune"])
    assert refused.exit_code == 1 and "was not fine-tuned on the held-out domain" in refused.output


def test_robustness_changes_exactly_the_requested_fraction(synthetic_data, synthetic_examples):
    from unimp_bench.data.contract import open_dataset
    from unimp_bench.evaluation.checkpoint import item_text_and_images
    from unimp_bench.examples import open_examples
    from unimp_bench.robustness import Perturbation, perturb

    example_set = open_examples(synthetic_examples)
    attributes, has_image = item_text_and_images(open_dataset(synthetic_data), example_set)
    frame = examples_of(synthetic_examples, "preference", limit=None)
    changed, report = perturb(frame, attributes, has_image, Perturbation(0.2, 0.3, seed=1))
    again, _ = perturb(frame, attributes, has_image, Perturbation(0.2, 0.3, seed=1))
    assert changed.equals(again)  # seeded

    # text: every chunk keeps a subsequence of its attributes; exactly round(0.2 x slots) are gone
    slots = sum(len(attributes[i]) for items in frame["image_items"] for i in items)
    assert report["attribute_slots"] == slots and report["dropped_attributes"] == round(0.2 * slots)
    remaining = 0
    for prompt, items in zip(changed["prompt"], frame["image_items"]):
        chunks = CHUNK.findall(prompt)
        assert [int(item) for _, item in chunks] == list(items)
        for (body, _), original in zip(chunks, items):
            remaining += kept_attributes(body, attributes[original])
    assert slots - remaining == report["dropped_attributes"]
    # the history spans still cover exactly the (shortened) history chunks
    for prompt, spans, history in zip(changed["prompt"], changed["history_spans"], frame["history"]):
        assert [prompt[s:e].split()[-2] for s, e in spans] == [f"<item_{i}>" for i in history]

    # images: only history markers move, to another product that has an image
    history_slots = sum(int(has_image[i]) for h in frame["history"] for i in h)
    swapped = 0
    for before, after, history in zip(frame["image_items"], changed["image_items"], frame["history"]):
        for position, (a, b) in enumerate(zip(before, after)):
            if a != b:
                swapped += 1
                assert position < len(history) and has_image[b]
    assert swapped == report["swapped_images"] == round(0.3 * history_slots)


def test_robustness_options_are_recorded_in_the_result(run, synthetic_data, synthetic_examples, tmp_path):
    payload, _, output = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path, "recommendation", "--limit", "8",
        "--drop-text-attrs", "0.2", "--mismatch-images", "0.2", "--perturbation-seed", "3",
    )  # fmt: skip
    assert payload["method"] == "UniMP-tiny+drop_text_0.2+mismatch_images_0.2+first_8"
    robustness = payload["provenance"]["config"]["robustness"]
    assert robustness["seed"] == 3 and robustness["drop_text_attrs"] == 0.2
    assert robustness["dropped_attributes"] == round(0.2 * robustness["attribute_slots"])
    assert "history images swapped" in output


def test_an_interrupted_evaluation_resumes_from_its_shards(
    run, synthetic_data, synthetic_examples, tmp_path, monkeypatch
):
    from unimp_bench.models import predictor as evaluation

    options = ("--limit", "20", "--shard-size", "8")
    straight, straight_predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path / "a", "preference", *options
    )

    calls = {"n": 0}
    original = evaluation.UniMPPredictor.predict

    def failing(self, task, examples):
        calls["n"] += 1
        if calls["n"] == 2:
            raise UnimpError("interrupted")
        return original(self, task, examples)

    monkeypatch.setattr(evaluation.UniMPPredictor, "predict", failing)
    args = ["eval", "--task", "preference", "--checkpoint", str(run), "--data", str(synthetic_data)]
    args += ["--examples", str(synthetic_examples), "--out", str(tmp_path / "b"), *options]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1 and "interrupted" in first.output
    monkeypatch.setattr(evaluation.UniMPPredictor, "predict", original)
    # a second interrupted run whose saved shard is then damaged: it is recomputed, not fatal
    monkeypatch.setattr(evaluation.UniMPPredictor, "predict", failing)
    calls["n"] = 0
    args_c = [arg if arg != str(tmp_path / "b") else str(tmp_path / "c") for arg in args]
    assert CliRunner().invoke(app, args_c).exit_code == 1
    [saved] = (tmp_path / "c" / "predictions" / ".partial").rglob("shard_00000.parquet")
    saved.write_bytes(b"PAR1 damaged")
    monkeypatch.setattr(evaluation.UniMPPredictor, "predict", original)
    repaired, repaired_predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path / "c", "preference", *options
    )
    assert repaired_predictions.equals(straight_predictions) and repaired["scores"] == straight["scores"]

    resumed, resumed_predictions, output = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path / "b", "preference", *options
    )
    assert "resumed: 1 shard(s)" in output
    assert resumed_predictions.equals(straight_predictions)
    assert resumed["scores"] == straight["scores"]
    assert not (tmp_path / "b" / "predictions" / ".partial").exists() or not any(
        (tmp_path / "b" / "predictions" / ".partial").iterdir()
    )


def test_eval_errors_are_one_sentence(run, synthetic_data, synthetic_examples, tmp_path):
    base = ["--data", str(synthetic_data), "--examples", str(synthetic_examples), "--out", str(tmp_path)]
    cases = [
        (["--task", "search", "--checkpoint", str(tmp_path / "nothing")], "does not exist"),
        (["--task", "search", "--checkpoint", str(tmp_path)], "neither a training run"),
        (["--task", "image_generation", "--checkpoint", str(run)], "not trained on image_generation"),
        (["--task", "search", "--checkpoint", str(run), "--ranking", "sampled"], "--ranking must be one of"),
        (["--task", "search", "--checkpoint", str(run), "--split", "train"], "--split must be one of"),
        (["--task", "search", "--checkpoint", str(run), "--drop-text-attrs", "1.5"], "between 0 and 1"),
    ]
    for options, message in cases:
        result = CliRunner().invoke(app, ["eval", *options, *base])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output


def test_a_checkpoint_of_another_dataset_is_refused(run, tmp_path):
    from unimp_bench.data.api import prepare_synthetic_dataset

    other = tmp_path / "other"
    prepare_synthetic_dataset(other, users=300, items=120, seed=9)
    result = CliRunner().invoke(
        app, ["eval", "--task", "search", "--checkpoint", str(run), "--data", str(other)]
    )
    assert result.exit_code == 1 and "trained on another dataset" in result.output


def test_one_checkpoint_folder_of_a_run_can_be_evaluated(run, synthetic_data, synthetic_examples, tmp_path):
    checkpoint = run / "checkpoints" / "step_00000025"
    args = [
        "eval",
        "--task",
        "recommendation",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(synthetic_data),
    ]
    args += ["--examples", str(synthetic_examples), "--out", str(tmp_path), "--limit", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "UniMP-tiny@step_00000025+first_4 recommendation/test (4 examples)" in result.output
    payload = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert payload["provenance"]["checkpoint"] == str((checkpoint / "export").resolve())
    assert payload["provenance"]["config"]["model"]["step"] == 25


@pytest.mark.slow
def test_the_demo_puts_unimp_next_to_the_baselines_and_resumes(tmp_path):
    """`demo` trains and evaluates the tiny UniMP on every task and split beside the baselines, with
    intervals, a report; run again it skips every stage; --quick drops the model's rows."""
    demo = ["demo", "--out", str(tmp_path / "demo"), "--model-steps", "3", "--finetune-steps", "2"]
    result = CliRunner().invoke(app, demo)
    assert result.exit_code == 0, result.output
    board = pl.read_csv(tmp_path / "demo" / "leaderboard.csv")
    unimp = board.filter(pl.col("method") == "UniMP-tiny")
    tasks = ["explanation", "preference", "recommendation", "search", "selection"]
    assert sorted(unimp["task"].unique()) == tasks
    assert sorted(unimp.filter(pl.col("task") == "recommendation")["split"]) == [
        "new_domain",
        "new_user",
        "test",
    ]
    finetuned = board.filter(pl.col("method") == "UniMP-tiny+finetune")
    assert finetuned["split"].to_list() == ["new_domain_finetune"] and finetuned["HR@10"].is_not_null().all()
    methods = set(board["method"])
    assert {"pop", "uniform", "SASRec", "BPR", "vbpr-thumbnail", "content-knn", "bm25"} <= methods
    assert {"user-mean", "item-mean", "review-retrieval", "pop+finetune"} <= methods
    assert unimp["HR@10 low"].is_not_null().any()  # intervals reach the leaderboard
    # zero-shot: pop's held-out-domain row is n/a (with the reason); the tiny UniMP's content item
    # rows rank that domain's items, which no training example held
    zero_shot = board.filter(pl.col("split") == "new_domain", pl.col("task") == "recommendation")
    pop = zero_shot.filter(pl.col("method") == "pop")
    assert pop["HR@10"].is_null().all() and pop["note"].str.contains("zero-shot").all()
    assert zero_shot.filter(pl.col("method") == "UniMP-tiny")["HR@10"].is_not_null().all()
    assert "n/a" in result.output and (tmp_path / "demo" / "leaderboard.png").exists()
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "<svg" in report and "paper interactions" in report and "run-finetune" in report
    # the summary names every method, task and split whole (tab-separated in a pipe)
    assert "\npop+finetune\trecommendation\tnew_domain_finetune\t" in result.output

    again = CliRunner().invoke(app, demo)
    assert again.exit_code == 0 and again.output.count("up to date, skipped") == 5, again.output
    quick = CliRunner().invoke(app, [*demo, "--quick"])  # no model stage; the rest is up to date
    assert quick.exit_code == 0 and "training" not in quick.output
    assert quick.output.count("up to date, skipped") == 3 and "4/4 writing the leaderboard" in quick.output
    elsewhere = tmp_path / "mine"
    (elsewhere / "notes.txt").parent.mkdir()
    (elsewhere / "notes.txt").write_text("keep")
    refused = CliRunner().invoke(app, ["demo", "--out", str(elsewhere), "--quick"])
    assert refused.exit_code == 1 and "is not a demo folder" in refused.output


@pytest.mark.parametrize("fusion", ["early", "inline", "late"])
def test_constrained_beams_match_exact_ranking_for_every_fusion(
    fusion, run, synthetic_data, synthetic_examples, tmp_path
):
    """early/inline fusion decode without a KV cache, late fusion with one: all give the exact top-10."""
    random_export(run, synthetic_data, synthetic_examples, tmp_path / fusion, seed=2, fusion=fusion)
    rankings = []
    for mode in ("exact", "beam"):
        _, predictions, _ = evaluate(
            tmp_path / fusion, synthetic_data, synthetic_examples, tmp_path / "out", "search",
            "--limit", "6", "--ranking", mode,
        )  # fmt: skip
        rankings.append(predictions["ranked"].to_list())
    assert rankings[0] == rankings[1]


def test_a_chosen_method_name_keeps_the_option_tags(run, synthetic_data, synthetic_examples, tmp_path):
    """--method names the model; a perturbed or partial run still never takes the plain run's file."""
    args = ["eval", "--task", "recommendation", "--checkpoint", str(run), "--data", str(synthetic_data)]
    args += ["--examples", str(synthetic_examples), "--out", str(tmp_path), "--method", "mine"]
    for extra in ([], ["--mismatch-images", "0.5", "--limit", "3"]):
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
    names = sorted(path.name.split("__")[0] for path in tmp_path.glob("*.json"))
    assert names == ["mine", "mine-mismatch_images_0.5-first_3"]  # (file names: + becomes -)


@pytest.mark.parametrize("task", ["recommendation", "explanation"])
def test_two_cpu_processes_give_the_predictions_and_scores_of_one(
    task, run, synthetic_data, synthetic_examples, tmp_path, monkeypatch
):
    """--processes 2: rank r predicts shards r, r+2, ...; the merged file is byte for byte the
    one-process file. The launching process predicts nothing itself (it would fail here)."""
    from unimp_bench.models import predictor as evaluation

    options = ("--limit", "20", "--shard-size", "6")  # 4 shards: 0 and 2 on rank 0, 1 and 3 on rank 1
    one, one_predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path / "one", task, *options
    )

    def refused(self, task, examples):
        raise UnimpError("the launching process predicted a shard itself")

    monkeypatch.setattr(evaluation.UniMPPredictor, "predict", refused)
    two, two_predictions, _ = evaluate(
        run, synthetic_data, synthetic_examples, tmp_path / "two", task, *options, "--processes", "2"
    )
    files = [out / "predictions" / payload["provenance"]["predictions"]["file"] for out, payload in
             ((tmp_path / "one", one), (tmp_path / "two", two))]  # fmt: skip
    assert files[0].read_bytes() == files[1].read_bytes()
    assert two_predictions.equals(one_predictions) and len(two_predictions) == 20
    assert two["scores"] == one["scores"] and two["method"] == one["method"]
    assert not any((tmp_path / "two" / "predictions" / ".partial").glob("*/shard_*"))


def test_parallel_evaluation_options_are_checked(run, synthetic_data, synthetic_examples, tmp_path):
    args = ["eval", "--task", "recommendation", "--checkpoint", str(run), "--data", str(synthetic_data)]
    args += ["--examples", str(synthetic_examples), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--processes", "2", "--gpus", "1"])
    assert result.exit_code == 1 and "--processes splits a CPU evaluation" in result.output
    result = CliRunner().invoke(app, [*args, "--hostfile", str(tmp_path / "hosts")])
    assert result.exit_code == 1 and "hostfile" in result.output and "does not exist" in result.output
