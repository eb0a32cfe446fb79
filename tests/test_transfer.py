"""The held-out domain's two protocols (issue 16, part 2): zero-shot new_domain and new_domain_finetune.

Checked by perturbation: what a regime trains on never includes a held-out-domain valid or test
interaction (changing those leaves the training rows as they were), the candidate set is the
held-out domain's catalog, and a scratch model does not read other domains' items."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import polars as pl
import pytest
import yaml

from helpers import link_raw
from unimp_bench.baselines.history import valid_interactions
from unimp_bench.baselines.recbole_export import export_recbole, read_atomic
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.data.contract import open_dataset
from unimp_bench.data.transfer import CONTEXT, FinetuneSettings, finetune_view, transfer_gain
from unimp_bench.errors import UnimpError


def _labelled(view) -> pl.DataFrame:
    domain = view.held_out_domain
    return (
        view.scan("interactions")
        .join(view.scan("users"), on="user_idx")
        .join(
            view.scan("items").select("item_idx", (pl.col("domain") == domain).alias("in_domain")),
            on="item_idx",
        )
        .join(
            open_dataset(view.root).scan("users").select("user_idx", pl.col("group").alias("base_group")),
            on="user_idx",
        )
        .sort("user_idx", "pos")
        .collect()
    )


def check_view(dataset, settings: FinetuneSettings) -> pl.DataFrame:
    """The rules of data/transfer.py, row by row, on any prepared dataset with a held-out domain."""
    view = finetune_view(dataset, settings)
    rows = _labelled(view)
    held = rows.filter(pl.col("base_group") == "new_domain")
    for _, user in held.group_by("user_idx"):
        in_domain = user.filter(pl.col("in_domain"))
        # leave-last-out inside the held-out domain
        assert in_domain["split"][-1] == "test"
        if in_domain.height >= 2:
            assert in_domain["split"][-2] == "valid"
        assert set(in_domain["split"][:-2]) <= {"train"}
        valid_pos = in_domain["pos"][-2] if in_domain.height >= 2 else -1
        others = user.filter(~pl.col("in_domain"))
        trained_others = others.filter(pl.col("split") == "train")
        if settings.regime == "target":
            assert trained_others.is_empty()
        else:
            assert (trained_others["pos"] < valid_pos).all()
            assert (
                others.filter(pl.col("pos") < valid_pos)["split"].to_list()
                == ["train"] * others.filter(pl.col("pos") < valid_pos).height
            )
    source = rows.filter(pl.col("base_group") == "train")
    if settings.regime == "target":
        assert set(source["split"]) <= {CONTEXT} and set(source["group"]) == {"source"}
    else:
        base = (
            open_dataset(dataset.root)
            .scan("interactions")
            .select("user_idx", "pos", pl.col("split").alias("base"))
        )
        joined = source.join(base.collect(), on=["user_idx", "pos"])
        assert (joined.filter(pl.col("base") == "train")["split"] == "train").all()
        assert set(joined.filter(pl.col("base") != "train")["split"]) <= {CONTEXT}
    # training never holds a held-out-domain valid or test interaction, valid only the held-out domain's
    trained = view.training_interactions(["user_idx", "pos"])
    targets = held.filter(pl.col("split").is_in(["valid", "test"])).select("user_idx", "pos")
    assert trained.join(targets, on=["user_idx", "pos"]).is_empty()
    valid = valid_interactions(view, ["user_idx", "item_idx"])
    assert set(valid["user_idx"]) <= set(held["user_idx"])
    return rows


@pytest.mark.parametrize("regime", ["source+target", "target"])
def test_finetune_views_follow_the_protocol_on_the_synthetic_corpus(synthetic_data, regime):
    dataset = open_dataset(synthetic_data)
    rows = check_view(dataset, FinetuneSettings(regime=regime))
    chosen = rows.filter(pl.col("group") == "train", pl.col("base_group") == "new_domain")[
        "user_idx"
    ].unique()
    held = rows.filter(pl.col("base_group") == "new_domain")["user_idx"].unique()
    assert len(chosen) == len(held)  # share 1.0: every held-out user
    # nothing dropped or renumbered: example positions stay valid
    assert rows.height == dataset.scan("interactions").select(pl.len()).collect().item()


def test_target_share_is_seeded_and_only_chosen_users_train(synthetic_data):
    dataset = open_dataset(synthetic_data)
    held = dataset.scan("users").filter(pl.col("group") == "new_domain").collect()["user_idx"]

    def chosen(share, seed):
        view = finetune_view(dataset, FinetuneSettings(target_share=share, seed=seed))
        users = view.scan("users").collect()
        trained = set(view.training_interactions(["user_idx"])["user_idx"]) & set(held)
        picked = set(users.filter(pl.col("group") == "train")["user_idx"]) & set(held)
        assert trained <= picked
        return picked

    half = chosen(0.5, 0)
    assert len(half) == round(0.5 * len(held))
    assert chosen(0.5, 0) == half and chosen(0.5, 1) != half
    assert chosen(0.25, 0) != half
    with pytest.raises(UnimpError, match="target share"):
        FinetuneSettings(target_share=0.0)
    with pytest.raises(UnimpError, match="regime"):
        FinetuneSettings(regime="both")


def _swap_held_out_targets(data, out, which: int) -> None:
    """A copy of `data` where each held-out user's held-out-domain interaction `which` from the end
    (0: test, 1: valid) names another item of that domain."""
    shutil.copytree(data, out)
    dataset = open_dataset(out)
    domain = dataset.held_out_domain
    items = dataset.scan("items").filter(pl.col("domain") == domain).collect()["item_idx"].sort()
    frame = pl.read_parquet(out / "interactions.parquet")
    held = set(dataset.scan("users").filter(pl.col("group") == "new_domain").collect()["user_idx"])
    in_domain = set(items.to_list())
    rows = frame.with_row_index("row").filter(
        pl.col("user_idx").is_in(list(held)), pl.col("item_idx").is_in(list(in_domain))
    )
    picked = rows.group_by("user_idx").agg(
        pl.col("row").sort_by("pos").reverse().get(which, null_on_oob=True)
    )
    targets = set(picked["row"].drop_nulls().to_list())
    replacement = {a: b for a, b in zip(items.to_list(), np.roll(items.to_numpy(), 1).tolist())}
    swapped = [replacement[i] if r in targets else i for r, i in enumerate(frame["item_idx"].to_list())]
    frame.with_columns(pl.Series("item_idx", swapped, pl.Int32)).write_parquet(out / "interactions.parquet")


def test_training_rows_ignore_the_held_out_test_and_valid_targets(synthetic_data, tmp_path):
    """Perturbation: swapping the held-out users' test items leaves every regime's training rows and
    valid targets as they were; swapping their valid items changes the valid targets only."""
    base = open_dataset(synthetic_data)
    _swap_held_out_targets(synthetic_data, tmp_path / "test_swapped", which=0)
    _swap_held_out_targets(synthetic_data, tmp_path / "valid_swapped", which=1)
    for regime in ("source+target", "target"):
        settings = FinetuneSettings(regime=regime)
        original = finetune_view(base, settings)
        test_swapped = finetune_view(open_dataset(tmp_path / "test_swapped"), settings)
        valid_swapped = finetune_view(open_dataset(tmp_path / "valid_swapped"), settings)
        columns = ["user_idx", "pos", "item_idx"]
        assert test_swapped.training_interactions(columns).equals(original.training_interactions(columns))
        assert valid_interactions(test_swapped, columns).equals(valid_interactions(original, columns))
        assert valid_swapped.training_interactions(columns).equals(original.training_interactions(columns))
        assert not valid_interactions(valid_swapped, columns).equals(valid_interactions(original, columns))


def test_the_recbole_export_of_a_view_holds_no_context_row(synthetic_data, tmp_path):
    for regime in ("source+target", "target"):
        view = finetune_view(open_dataset(synthetic_data), FinetuneSettings(regime=regime))
        exported = export_recbole(view, tmp_path / regime, "sequential", max_history=50)
        rows = _labelled(view)
        context = set(rows.filter(pl.col("split") == CONTEXT)["item_idx"].to_list())
        in_domain = set(rows.filter(pl.col("in_domain"))["item_idx"].to_list())
        train = read_atomic(exported.files["train"])
        if regime == "target":  # only the held-out domain, as inputs and as targets
            assert set(train["item_id"]) <= in_domain
            assert {i for h in train["item_id_list"] for i in h} <= in_domain
            assert context - in_domain  # there were other domains' rows to leave out
        # a held-out user's valid and test items are never a training target
        held_targets = rows.filter(
            pl.col("base_group") == "new_domain", pl.col("split").is_in(["valid", "test"])
        )
        keys = set(zip(held_targets["user_idx"].to_list(), held_targets["item_idx"].to_list()))
        assert not keys & set(zip(train["user_id"].to_list(), train["item_id"].to_list()))


def test_zero_shot_is_not_applicable_for_id_methods_and_rankings_stay_in_the_domain(synthetic_data, tmp_path):
    runs = run_baseline(
        "pop", "recommendation", synthetic_data, tmp_path, ["test", "new_domain", "new_domain_finetune"]
    )
    by_split = {r.split: r for r, _ in runs}
    assert "zero-shot" in by_split["new_domain"].provenance["not_applicable"]
    assert all(np.isnan(v) for v in by_split["new_domain"].scores.values())
    tuned = by_split["new_domain_finetune"]
    assert tuned.method == "pop+finetune" and tuned.scores["HR@10"] > 0
    dataset = open_dataset(synthetic_data)
    domain = dataset.held_out_domain
    office = set(dataset.scan("items").filter(pl.col("domain") == domain).collect()["item_idx"])
    config = tuned.provenance["config"]
    assert config["candidates"] == f"the {domain} catalog" and config["n_candidates"] == len(office)
    assert config["finetune"]["regime"] == "source+target"
    shown = pl.read_parquet(tmp_path / "predictions" / tuned.provenance["predictions"]["file"])["ranked"]
    assert {i for row in shown.to_list() for i in row} <= office
    assert by_split["test"].provenance["config"]["candidates"] == "the whole catalog"

    # the whole catalog stays an option, under its own name
    every = run_baseline(
        "pop", "recommendation", synthetic_data, tmp_path / "all", ["new_domain_finetune"], candidates="all"
    )[0][0]
    assert every.method == "pop+finetune+all_candidates"
    assert every.provenance["config"]["n_candidates"] == dataset.catalog_size
    assert every.scores["HR@10"] < tuned.scores["HR@10"]  # other domains' popular items crowd in


def test_bm25_needs_no_training_so_both_splits_agree(synthetic_data, tmp_path):
    runs = run_baseline("bm25", "search", synthetic_data, tmp_path, ["new_domain", "new_domain_finetune"])
    zero_shot, tuned = (r for r, _ in runs)
    assert zero_shot.scores == tuned.scores and zero_shot.scores["HR@10"] > 0
    assert zero_shot.n_examples == tuned.n_examples


def _quick_config(tmp_path, model: str, epochs: int = 2):
    spec = yaml.safe_load(open_spec(model))
    spec["params"] |= {"epochs": epochs} | ({"valid_every_steps": 1} if model == "SASRec" else {})
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def open_spec(name: str) -> str:
    from unimp_bench.baselines.registry import available_baselines

    return available_baselines()[name.lower()].read_text(encoding="utf-8")


def test_sasrec_scratch_reads_only_held_out_domain_histories(synthetic_data, tmp_path):
    """Perturbation on one trained model per regime: replacing the other domains' items in the held-out
    users' histories leaves the scratch model's scores as they were and moves the source+target ones."""
    from unimp_bench.baselines.registry import load_baseline, make_predictor

    spec = load_baseline("SASRec", _quick_config(tmp_path, "SASRec"))
    dataset = open_dataset(synthetic_data)
    domain = dataset.held_out_domain
    items = dataset.scan("items").sort("item_idx").collect()
    in_domain = (items["domain"] == domain).to_numpy()
    tests = (
        finetune_view(dataset, FinetuneSettings())
        .scan("interactions")
        .filter(pl.col("split") == "test")
        .join(dataset.scan("users").filter(pl.col("group") == "new_domain"), on="user_idx")
        .collect()
    )
    users, positions = tests["user_idx"].to_numpy().astype(np.int64), tests["pos"].to_numpy().astype(np.int64)
    moved = {}
    for regime in ("target", "source+target"):
        predictor = make_predictor(spec, finetune_view(dataset, FinetuneSettings(regime=regime)))
        before = predictor.scorer.catalog_scores(users, positions)
        other = np.flatnonzero(~in_domain)
        for user in users.tolist():
            history = predictor.histories[user].copy()
            outside = ~in_domain[history]
            history[outside] = other[(np.searchsorted(other, history[outside]) + 1) % len(other)]
            predictor.histories[user] = history
        moved[regime] = not np.allclose(before, predictor.scorer.catalog_scores(users, positions))
    assert moved == {"target": False, "source+target": True}


def test_sasrec_serves_both_regimes_and_is_not_applicable_zero_shot(synthetic_data, tmp_path):
    config = _quick_config(tmp_path, "SASRec")
    results = {}
    for regime in ("source+target", "target"):
        runs = run_baseline(
            "SASRec",
            "recommendation",
            synthetic_data,
            tmp_path / regime,
            ["new_domain", "new_domain_finetune"],
            config=config,
            finetune=FinetuneSettings(regime=regime),
        )
        zero_shot, tuned = (r for r, _ in runs)
        assert "not_applicable" in zero_shot.provenance
        assert 0 < tuned.scores["HR@10"] <= 1
        results[regime] = tuned
    assert results["target"].method == "SASRec+scratch"
    assert results["source+target"].method == "SASRec+finetune"
    assert results["target"].provenance["config"]["finetune"]["trained_on"].startswith("the chosen")
    gain = transfer_gain(list(results.values()))
    tuned, scratch = results["source+target"].scores, results["target"].scores
    assert gain["NDCG@10"] == pytest.approx(tuned["NDCG@10"] - scratch["NDCG@10"])
    assert transfer_gain([results["target"]]) is None  # one regime alone has no gain


def test_finetune_options_from_the_cli(synthetic_data, tmp_path):
    from typer.testing import CliRunner

    from unimp_bench.cli import app

    runner = CliRunner()
    ran = runner.invoke(
        app,
        [
            "baselines", "run", str(synthetic_data), "--model", "pop", "--task", "recommendation",
            "--splits", "new_domain_finetune", "--finetune", "target", "--target-share", "0.5",
            "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "pop+scratch+share0.5 recommendation/new_domain_finetune" in ran.output
    payload = json.loads(next(tmp_path.glob("pop*share0.5*.json")).read_text())
    assert payload["provenance"]["config"]["finetune"]["target_share"] == 0.5
    bad = runner.invoke(
        app,
        [
            "baselines", "run", str(synthetic_data), "--model", "pop", "--task", "recommendation",
            "--splits", "new_domain_finetune", "--finetune", "neither", "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert bad.exit_code == 1 and "--finetune must be one of source+target, target or both" in bad.output
    assert "Traceback" not in bad.output
    # both regimes in one run: two results and the transfer gain between them
    both = runner.invoke(
        app,
        [
            "baselines", "run", str(synthetic_data), "--model", "pop", "--task", "recommendation",
            "--splits", "test,new_domain_finetune", "--finetune", "both", "--out", str(tmp_path / "both"),
        ],
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    assert "pop+finetune recommendation/new_domain_finetune" in both.output
    assert "pop+scratch recommendation/new_domain_finetune" in both.output
    # pop ranks the held-out domain by that domain's counts in both regimes: no gain, exactly
    assert "transfer gain on new_domain_finetune (source+target minus scratch): HR@10 +0.0000" in both.output


def test_a_dataset_without_held_out_domain_says_so(synthetic_data, tmp_path):
    shutil.copytree(synthetic_data, tmp_path / "data")
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    manifest["new_domain"] = {"domain": None, "present": False}
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnimpError, match="no held-out domain"):
        finetune_view(open_dataset(tmp_path / "data"), FinetuneSettings())


def test_real_gift_cards_held_out_next_to_beauty_and_fashion(shared_raw, tmp_path):
    """The real 2018 files, Gift_Cards held out: the views follow the rules, pop gives numbers on
    new_domain_finetune ranked inside Gift_Cards, and n/a zero-shot."""
    raw = link_raw(
        tmp_path,
        shared_raw / "ncloud50__giftcard/Gift_Cards_5.json.gz",
        shared_raw / "OoEthanoO__LSTMSentimentModel/All_Beauty_5.json",
        shared_raw / "OoEthanoO__LSTMSentimentModel/AMAZON_FASHION_5.json",
    )
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=2, new_domain="Gift_Cards")
    assert manifest["new_domain"]["present"]
    dataset = open_dataset(tmp_path / "data")
    for regime in ("source+target", "target"):
        check_view(dataset, FinetuneSettings(regime=regime))
    runs = run_baseline(
        "pop",
        "recommendation",
        tmp_path / "data",
        tmp_path / "results",
        ["new_domain", "new_domain_finetune"],
    )
    zero_shot, tuned = (r for r, _ in runs)
    assert "not_applicable" in zero_shot.provenance
    gift_cards = (
        dataset.scan("items").filter(pl.col("domain") == "Gift_Cards").select(pl.len()).collect().item()
    )
    assert tuned.provenance["config"]["n_candidates"] == gift_cards
    assert (
        tuned.n_examples
        == dataset.scan("users").filter(pl.col("group") == "new_domain").select(pl.len()).collect().item()
    )
    assert 0 < tuned.scores["HR@10"] < 1
    # SASRec in both regimes (k=2 leaves users whose valid interaction is their first: early
    # stopping must skip those rather than fail)
    for regime in ("source+target", "target"):
        sasrec = run_baseline(
            "SASRec",
            "recommendation",
            tmp_path / "data",
            tmp_path / "results",
            ["test", "new_domain_finetune"],
            config=_quick_config(tmp_path, "SASRec"),
            finetune=FinetuneSettings(regime=regime),
        )
        assert all(0 <= r.scores["HR@10"] <= 1 for r, _ in sasrec)


def test_replace_keeps_the_candidate_choice_checked(synthetic_data):
    with pytest.raises(UnimpError, match="--candidates must be one of domain, all, got .office."):
        dataclasses.replace(open_dataset(synthetic_data), candidates="office")


def test_item_mean_is_not_applicable_zero_shot_while_user_and_global_means_serve(synthetic_data, tmp_path):
    results = {
        model: run_baseline(model, "preference", synthetic_data, tmp_path / model, ["new_domain"])[0][0]
        for model in ("item-mean", "user-mean", "global-mean")
    }
    assert "zero-shot" in results["item-mean"].provenance["not_applicable"]
    for model in ("user-mean", "global-mean"):
        assert "not_applicable" not in results[model].provenance and results[model].scores["MAE"] > 0


def test_user_vector_models_serve_the_finetune_split_only_when_every_held_out_user_trained(
    synthetic_data, tmp_path
):
    config = _quick_config(tmp_path, "BPR")
    full, partial = (
        run_baseline(
            "BPR",
            "recommendation",
            synthetic_data,
            tmp_path / str(share),
            ["new_domain", "new_domain_finetune"],
            config=config,
            finetune=FinetuneSettings(target_share=share),
        )
        for share in (1.0, 0.5)
    )
    zero_shot, tuned = (r for r, _ in full)
    assert "not_applicable" in zero_shot.provenance  # never a vector for a held-out user zero-shot
    assert "not_applicable" not in tuned.provenance and 0 <= tuned.scores["HR@10"] <= 1
    assert "left out of the target share" in partial[1][0].provenance["not_applicable"]


def test_vbpr_ranks_only_the_held_out_domain_on_the_finetune_split(synthetic_data, tmp_path):
    """VBPR serves new_domain_finetune at share 1; its rankings, like every other's, stay inside the
    held-out domain's catalog (the config says so, and the shown items agree)."""
    result = run_baseline(
        "vbpr-thumbnail",
        "recommendation",
        synthetic_data,
        tmp_path,
        ["new_domain_finetune"],
        config=_quick_config(tmp_path, "vbpr-thumbnail"),
    )[0][0]
    assert "not_applicable" not in result.provenance
    dataset = open_dataset(synthetic_data)
    domain = dataset.held_out_domain
    office = set(dataset.scan("items").filter(pl.col("domain") == domain).collect()["item_idx"])
    assert result.provenance["config"]["n_candidates"] == len(office)
    shown = pl.read_parquet(tmp_path / "predictions" / result.provenance["predictions"]["file"])["ranked"]
    assert {i for row in shown.to_list() for i in row} <= office


@pytest.mark.parametrize(("model", "task"), [("bm25-personal", "search"), ("SASRec", "selection")])
def test_a_baseline_that_tunes_on_valid_is_refused_the_finetune_split_before_training(
    synthetic_data, tmp_path, monkeypatch, model, task
):
    """The held-out domain has no valid examples yet: said at once, not after a training run."""
    import unimp_bench.baselines.runner as runner

    def trained(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(runner, "make_predictor", trained)
    with pytest.raises(UnimpError, match=f"{model} tunes on valid examples, which new_domain_finetune"):
        run_baseline(model, task, synthetic_data, tmp_path, ["test", "new_domain_finetune"])
