"""RecBole baselines on our split: the export, the runner, not-applicable results, threshold tuning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
import yaml

from helpers import ONE_NEGATIVE, TINY_SASREC, learns_the_cycle, quick_config
from unimp_bench.baselines.recbole.params import RecBoleParams
from unimp_bench.baselines.recbole.predictor import RecBolePredictor
from unimp_bench.baselines.recbole_export import export_recbole, read_atomic
from unimp_bench.baselines.registry import available_baselines, load_baseline
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.data.contract import open_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.results import read_result

RECBOLE_BASELINES = sorted(name for name in available_baselines() if load_baseline(name).engine == "recbole")


def training_sequences(data: Path) -> dict[int, list[tuple[int, str]]]:
    interactions = pl.read_parquet(data / "interactions.parquet").sort("user_idx", "pos")
    users = pl.read_parquet(data / "users.parquet").filter(pl.col("group") == "train")
    kept = interactions.join(users.select("user_idx"), on="user_idx")
    sequences: dict[int, list[tuple[int, str]]] = {}
    for user, item, split in kept.select("user_idx", "item_idx", "split").iter_rows():
        sequences.setdefault(user, []).append((item, split))
    return sequences


def test_general_export_puts_every_interaction_in_the_file_of_its_split(synthetic_data, tmp_path):
    exported = export_recbole(open_dataset(synthetic_data), tmp_path / "general", "general")
    expected = {
        (user, item, split)
        for user, rows in training_sequences(synthetic_data).items()
        for item, split in rows
    }
    written = set()
    for part in ("train", "valid", "test"):
        frame = read_atomic(exported.files[part])
        written |= {(u, i, part) for u, i in frame.select("user_id", "item_id").iter_rows()}
        assert frame.height == len({r for r in expected if r[2] == part})
    assert written == expected
    # held-out users never reach a training file
    held_out = pl.read_parquet(synthetic_data / "users.parquet").filter(pl.col("group") != "train")
    assert not set(held_out["user_idx"].to_list()) & {u for u, _, _ in written}


def test_sequential_export_rows_are_the_prefixes_of_each_split(synthetic_data, tmp_path):
    exported = export_recbole(open_dataset(synthetic_data), tmp_path / "seq", "sequential", max_history=4)
    expected = {part: set() for part in ("train", "valid", "test")}
    for user, rows in training_sequences(synthetic_data).items():
        items = [item for item, _ in rows]
        for p in range(1, len(rows)):
            expected[rows[p][1]].add((user, tuple(items[max(0, p - 4) : p]), items[p]))
    for part, rows in expected.items():
        frame = read_atomic(exported.files[part])
        got = {(u, tuple(h), i) for u, h, i in frame.select("user_id", "item_id_list", "item_id").iter_rows()}
        assert got == rows and frame.height == len(rows)
    assert exported.longest_history == 4
    # every catalog item is listed with its categories as whitespace-free tokens
    items = read_atomic(exported.files["item"])
    catalog = pl.read_parquet(synthetic_data / "items.parquet").sort("item_idx")
    assert sorted(items["item_id"].to_list()) == catalog["item_idx"].to_list()
    first = catalog.row(0, named=True)
    listed = items.filter(pl.col("item_id") == first["item_idx"])["categories"][0].to_list()
    assert listed == [c.replace(" ", "_") for c in first["categories"]]


def test_export_refuses_an_unsafe_name_and_an_unknown_layout(synthetic_data, tmp_path):
    dataset = open_dataset(synthetic_data)
    with pytest.raises(UnimpError, match="letters, digits"):
        export_recbole(dataset, tmp_path / "x", "general", name="../evil")
    with pytest.raises(UnimpError, match="unknown RecBole layout"):
        export_recbole(dataset, tmp_path / "x", "graph")


def test_recbole_pop_ranks_exactly_like_the_native_popularity(synthetic_data, synthetic_examples, tmp_path):
    """RecBole counts popularity from the exported train file; identical rank counts to our own
    popularity prove it trained on exactly our train split and its ids map back to ours."""
    out = tmp_path / "results"
    run_baseline(
        "recbole-pop", "recommendation", synthetic_data, out, ["test"], examples_dir=synthetic_examples
    )
    run_baseline("pop", "recommendation", synthetic_data, out, ["test"], examples_dir=synthetic_examples)
    ours = pl.read_parquet(out / "predictions" / "pop__recommendation__test.parquet")
    theirs = pl.read_parquet(out / "predictions" / "recbole-pop__recommendation__test.parquet")
    assert theirs["greater"].to_list() == ours["greater"].to_list()
    assert theirs["ties"].to_list() == ours["ties"].to_list()


def test_a_sequence_model_learns_a_known_ranking(cyclic_data, tmp_path):
    config = quick_config(
        tmp_path,
        "GRU4Rec",
        epochs=40,
        stopping_step=40,
        recbole={
            "learning_rate": 0.01,
            "train_batch_size": 64,
            "embedding_size": 16,
            "hidden_size": 16,
            "dropout_prob": 0.0,
        },
    )
    [(result, _)] = run_baseline(
        "GRU4Rec", "recommendation", cyclic_data, tmp_path / "r", ["test"], config=config
    )
    assert result.scores["HR@3"] == 1.0 and result.scores["MRR@3"] > 0.9
    assert result.provenance["config"]["training"]["best_valid_NDCG@10"] > 0.9


def test_binary_cross_entropy_objective_matches_torchs_reference():
    from unimp_bench.baselines.recbole_objectives import binary_cross_entropy_with_one_negative

    positive = torch.tensor([2.0, -1.0, 40.0, 0.0])
    negative = torch.tensor([-3.0, 0.5, -40.0, 90.0])
    reference = F.binary_cross_entropy_with_logits(
        positive, torch.ones(4), reduction="none"
    ) + F.binary_cross_entropy_with_logits(negative, torch.zeros(4), reduction="none")
    loss = binary_cross_entropy_with_one_negative(positive, negative)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference.mean().item(), rel=1e-6)
    # hand-computed first pair: log(1 + e^-2) + log(1 + e^-3)
    first = binary_cross_entropy_with_one_negative(positive[:1], negative[:1]).item()
    assert first == pytest.approx(math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-3.0)), rel=1e-6)


def test_sasrec_with_binary_cross_entropy_learns_a_known_ranking(cyclic_data, tmp_path):
    """RecBole's prefix rows trained with the published objective."""
    config = quick_config(
        tmp_path,
        "SASRec",
        epochs=30,
        stopping_step=30,
        train_rows="prefixes",
        position_origin="first",
        recbole=TINY_SASREC
        | {"loss_type": "BCE", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
    )
    [(result, _)] = run_baseline(
        "SASRec", "recommendation", cyclic_data, tmp_path / "r", ["test"], config=config
    )
    assert result.scores["HR@3"] == 1.0 and result.scores["MRR@3"] > 0.9
    effective = result.provenance["config"]["recbole_options"]
    assert effective["loss_type"] == "BCE" and effective["hidden_size"] == 16
    # the random temporary folder of the exported files is recorded by role: a rerun records the same
    assert effective["data_path"] == "<temporary folder>/atomic/unimp"
    assert effective["checkpoint_dir"] == "<temporary folder>/atomic/saved"
    # the objective exists for SASRec only; another model asking for it is told so before training
    gru = quick_config(tmp_path, "GRU4Rec", recbole={"loss_type": "BCE"})
    with pytest.raises(
        UnimpError, match="loss_type BCE is available for SASRec, Caser and HGN only, not GRU4Rec"
    ):
        run_baseline("GRU4Rec", "recommendation", cyclic_data, tmp_path / "g", ["test"], config=gru)


@pytest.mark.parametrize(
    ("loss_type", "position_origin"), [("BCE", "latest"), ("BPR", "first"), ("CE", "latest")]
)
def test_sasrec_trained_on_whole_sequences_learns_a_known_ranking(
    cyclic_data, tmp_path, loss_type, position_origin
):
    """The published training (one row per user, every position predicts the next item) with each
    objective and position origin ranks the cycle's next item first."""
    result = learns_the_cycle(
        "SASRec",
        cyclic_data,
        tmp_path,
        epochs=60,
        stopping_step=60,
        train_rows="sequences",
        position_origin=position_origin,
        exclude_seen=True,  # negatives are never the user's own items, as published
        # a row is a whole user here: batches of 16 users give as many steps as the prefix rows
        recbole=TINY_SASREC
        | {"loss_type": loss_type, "train_batch_size": 16}
        | ({} if loss_type == "CE" else ONE_NEGATIVE),
    )
    params = result.provenance["config"]["params"]
    assert params["train_rows"] == "sequences" and params["position_origin"] == position_origin


def test_validation_waits_for_enough_steps_on_a_small_dataset(cyclic_data, tmp_path):
    """120 users in batches of 64 are 2 steps an epoch: validating every 5 steps means every third
    epoch (and the last), and patience counts validations."""
    config = quick_config(
        tmp_path,
        "SASRec",
        epochs=10,
        stopping_step=50,
        valid_every_steps=5,
        recbole=TINY_SASREC | {"loss_type": "BCE", "train_batch_size": 64},
    )
    [(result, _)] = run_baseline(
        "SASRec", "recommendation", cyclic_data, tmp_path / "r", ["test"], config=config
    )
    training = result.provenance["config"]["training"]
    assert training["validated_epochs"] == [3, 6, 9, 10]
    assert len(training["valid_curve"]) == 4 and training["best_epoch"] in (3, 6, 9, 10)


def _published_sasrec(synthetic_data, tmp_path, **params):

    settings = RecBoleParams(
        model="SASRec",
        epochs=1,
        length_buckets=True,
        recbole=TINY_SASREC | {"loss_type": "BCE", "hidden_dropout_prob": 0.3},
        **params,
    )
    return RecBolePredictor("SASRec", settings, open_dataset(synthetic_data))


def test_latest_position_origin_reads_right_padded_histories_as_left_padded(synthetic_data, tmp_path):
    """With the latest item at the last position, the state after a history does not depend on the
    padded width, and RecBole's right-padded rows give the same state as the rows padded on the left."""
    from unimp_bench.baselines.recbole_objectives import right_aligned

    predictor = _published_sasrec(synthetic_data, tmp_path, position_origin="latest")
    model = predictor.model.eval()
    histories = [[3, 5, 7], [2], [9, 4, 6, 8, 1]]
    width = predictor.sequence_width
    right = torch.zeros((3, width), dtype=torch.long)
    for row, items in enumerate(histories):
        right[row, : len(items)] = torch.tensor(items)
    lengths = torch.tensor([len(h) for h in histories])
    assert right_aligned(right, lengths)[0, -3:].tolist() == [3, 5, 7]
    assert right_aligned(right, lengths)[1].tolist() == [0] * (width - 1) + [2]
    with torch.no_grad():
        full = model.forward(right, lengths)  # [3 H]
        cut = model.forward(right[:, :5], lengths)  # the same rows cut to their longest history
        left = model.sequence_output(right_aligned(right, lengths))[:, -1]
    torch.testing.assert_close(full, cut)
    torch.testing.assert_close(full, left)


def test_sequence_batches_hold_each_users_train_pairs_once_with_unseen_negatives(synthetic_data, tmp_path):
    """One epoch of sequence rows holds exactly the (history, next item) pairs of the exported prefix
    rows, each user once, and every negative is outside that user's training items."""
    predictor = _published_sasrec(synthetic_data, tmp_path, train_rows="sequences", position_origin="latest")
    sequences = training_sequences(synthetic_data)
    train_items = {
        user: [predictor.internal_of_item[i] for i, split in rows if split == "train"]
        for user, rows in sequences.items()
    }
    expected = {
        (tuple(items[:p]), items[p])
        for items in train_items.values()
        for p in range(1, len(items))
        if len(items) >= 2
    }
    seen_rows, pairs, users = 0, set(), set()
    for parts in predictor.batches.sequence_batches(size=32, epoch=1):
        assert sum(weight for _, weight in parts) == pytest.approx(1.0)
        for batch, _ in parts:
            inputs = batch["item_id_list"].numpy()
            targets = batch["target_item_list"].numpy()
            negatives = batch["negative_item_list"].numpy()
            for row in range(len(inputs)):
                real = targets[row] > 0
                items = list(inputs[row][real]) + [targets[row][real][-1]]
                user = next(u for u, t in train_items.items() if list(t)[-len(items) :] == items)
                users.add(user)
                for p in np.flatnonzero(real):
                    history = tuple(x for x in inputs[row][: p + 1] if x > 0)
                    pairs.add((history, targets[row][p]))
                assert not set(negatives[row][real]) & set(train_items[user])
                assert (negatives[row][~real] == 0).all() and (inputs[row][~real] == 0).all()
                assert real[-1]  # padded on the left: the latest item sits in the last column
            seen_rows += len(inputs)
    assert pairs == expected
    assert seen_rows == len(users) == sum(len(t) >= 2 for t in train_items.values())


@pytest.mark.parametrize("position_origin", ["latest", "first"])
def test_a_batch_split_by_length_has_the_loss_of_the_whole_batch(synthetic_data, tmp_path, position_origin):
    """The parts of a random batch, weighted by their share of positions, give exactly the loss (and so
    the gradient) of the padded batch in one piece."""
    from recbole.data.interaction import Interaction

    predictor = _published_sasrec(
        synthetic_data, tmp_path, train_rows="sequences", position_origin=position_origin
    )
    model = predictor.model.eval()  # no dropout: the two computations must match exactly
    rng = np.random.default_rng(3)
    lengths = np.asarray([len(s) for s in predictor.train_sequences])
    rows = np.concatenate([np.flatnonzero(lengths == lengths.max())[:1], rng.permutation(len(lengths))[:40]])
    batch = predictor.batches.sequence_batch(rng, rows)
    parts = predictor.batches.parts_by_width(batch)
    assert (
        len(parts) > 1 and max(p["item_id_list"].shape[1] for p, _ in parts) == batch["item_id_list"].shape[1]
    )
    with torch.no_grad():
        whole = model.calculate_loss(Interaction({k: torch.as_tensor(v) for k, v in batch.items()}))
        split = sum(weight * model.calculate_loss(part) for part, weight in parts)
    torch.testing.assert_close(split, whole)


def test_length_buckets_compute_random_prefix_batches_in_parts_with_the_whole_batchs_loss(synthetic_data):
    """RecBole's prefix rows: each random batch is split by history length and cut, and the weighted
    parts give exactly the loss of the batch padded in one piece."""
    from recbole.data.interaction import Interaction

    settings = RecBoleParams(
        model="SASRec", epochs=1, length_buckets=True, recbole=TINY_SASREC | {"loss_type": "BPR"}
    )
    predictor = RecBolePredictor("SASRec", settings, open_dataset(synthetic_data))
    model = predictor.model.eval()
    parts = next(iter(predictor.batches.epoch(1)))
    assert len(parts) > 1 and sum(w for _, w in parts) == pytest.approx(1.0)
    widths = [part["item_id_list"].shape[1] for part, _ in parts]
    assert all(int(part["item_length"].max()) == w for (part, _), w in zip(parts, widths))
    # the whole batch: the parts' rows padded on the right to the widest part, together
    whole = {}
    for key in parts[0][0].interaction:
        columns = [part[key] for part, _ in parts]
        if key == "item_id_list":
            columns = [F.pad(c, (0, max(widths) - c.shape[1])) for c in columns]
        whole[key] = torch.cat(columns)
    with torch.no_grad():
        split = sum(weight * model.calculate_loss(part) for part, weight in parts)
        together = model.calculate_loss(Interaction(whole))
    torch.testing.assert_close(split, together)


def test_published_sasrec_options_are_checked(synthetic_data, tmp_path):
    gru = quick_config(tmp_path, "GRU4Rec", train_rows="sequences")
    with pytest.raises(UnimpError, match="train_rows sequences is available for SASRec and BERT4Rec only"):
        run_baseline("GRU4Rec", "recommendation", synthetic_data, tmp_path / "g", ["test"], config=gru)
    sampler = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
    sampled = quick_config(tmp_path, "SASRec", recbole={"loss_type": "CE"} | sampler)
    with pytest.raises(UnimpError, match="loss_type CE uses no sampled negatives"):
        run_baseline("SASRec", "recommendation", synthetic_data, tmp_path / "c", ["test"], config=sampled)
    odd = quick_config(tmp_path, "SASRec", position_origin="middle")
    with pytest.raises(UnimpError, match="position_origin must be one of first, latest"):
        run_baseline("SASRec", "recommendation", synthetic_data, tmp_path / "s", ["test"], config=odd)


def test_importing_recbole_leaves_torch_anomaly_mode_off():
    """RecBole's sine.py switches anomaly mode on at import, which made every SASRec step 2.4x slower."""
    import torch

    from unimp_bench.baselines.recbole_compat import prepare_recbole

    prepare_recbole()
    from recbole.utils import get_model

    get_model("SINE")
    assert not torch.is_anomaly_enabled()


@pytest.mark.parametrize("model", RECBOLE_BASELINES)
def test_every_recbole_baseline_runs_and_reports_unseen_users_honestly(
    model, synthetic_data, synthetic_examples, tmp_path
):
    config = quick_config(tmp_path, model)
    results = run_baseline(
        model,
        "recommendation",
        synthetic_data,
        tmp_path / "r",
        ["test", "new_user"],
        examples_dir=synthetic_examples,
        config=config,
    )
    by_split = {result.split: (result, path) for result, path in results}
    test, _ = by_split["test"]
    assert test.n_examples > 0 and all(np.isfinite(v) and 0 <= v <= 1 for v in test.scores.values())
    new_user, path = by_split["new_user"]
    payload = json.loads(path.read_text())
    if model in ("bpr", "caser", "lightgcn", "hgn"):  # one learned vector per training user
        assert "new_user" in payload["provenance"]["not_applicable"]
        assert all(v is None for v in payload["scores"].values())
        assert set(payload["scores"]) == set(test.scores)
    else:
        assert "not_applicable" not in payload["provenance"]
        assert all(np.isfinite(v) for v in new_user.scores.values())
    assert test.provenance["config"]["training"]["epochs_run"] == 1


def test_not_applicable_results_show_as_na_on_the_leaderboard(synthetic_data, synthetic_examples, tmp_path):
    from unimp_bench.leaderboard import long_table, markdown, wide_table

    out = tmp_path / "results"
    run_baseline(
        "BPR",
        "recommendation",
        synthetic_data,
        out,
        ["new_user"],
        examples_dir=synthetic_examples,
        config=quick_config(tmp_path, "BPR"),
    )
    run_baseline("pop", "recommendation", synthetic_data, out, ["new_user"], examples_dir=synthetic_examples)
    long = long_table(out)
    bpr = long.filter(pl.col("method") == "BPR")
    assert bpr["value"].null_count() == bpr.height and bpr["note"][0].startswith("not applicable")
    table = markdown(wide_table(long))
    bpr_line = next(line for line in table.splitlines() if "| BPR |" in line)
    assert "n/a" in bpr_line
    pop_line = next(line for line in table.splitlines() if "| pop |" in line)
    assert "n/a" not in pop_line
    # the plot leaves the n/a method without a bar (it used to fail on the null values) and names it
    from unimp_bench.leaderboard import plot

    plot(long, tmp_path / "board.png")
    assert (tmp_path / "board.png").read_bytes()[:4] == b"\x89PNG"
    plot(long.filter(pl.col("method") == "BPR"), tmp_path / "only_na.png")  # a panel of n/a only
    assert (tmp_path / "only_na.png").exists()


def test_recbole_options_are_checked_before_training(synthetic_data, tmp_path):
    spec = yaml.safe_load(available_baselines()["sasrec"].read_text())
    spec["params"]["recbole"]["hiden_size"] = 32
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(UnimpError, match="no option.*hiden_size"):
        run_baseline("SASRec", "recommendation", synthetic_data, tmp_path / "r", ["test"], config=bad)
    spec["params"]["recbole"] = {"epochs": 3}
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(UnimpError, match="set by unimp-bench"):
        run_baseline("SASRec", "recommendation", synthetic_data, tmp_path / "r", ["test"], config=bad)


def test_sasrec_selection_threshold_is_tuned_on_valid_and_never_reads_test(
    synthetic_data, synthetic_examples, tmp_path
):
    """Training is seeded, so two runs agree; scrambling every test label must not move the
    threshold or any test prediction."""
    import shutil

    from unimp_bench.fileio import file_sha256

    scrambled = tmp_path / "examples"
    shutil.copytree(synthetic_examples, scrambled)
    manifest = json.loads((scrambled / "manifest.json").read_text())
    entry = manifest["tasks"]["selection"]["splits"]["test"]
    path = scrambled / entry["file"]
    test = pl.read_parquet(path)
    test.with_columns(pl.col("candidates").list.reverse().list.head(2).alias("positives")).write_parquet(path)
    entry["sha256"] = file_sha256(path)
    (scrambled / "manifest.json").write_text(json.dumps(manifest))

    config = quick_config(tmp_path, "SASRec")
    runs = []
    for index, examples in enumerate((synthetic_examples, scrambled)):
        [(result, _)] = run_baseline(
            "SASRec",
            "selection",
            synthetic_data,
            tmp_path / f"r{index}",
            ["test"],
            examples_dir=examples,
            config=config,
        )
        predictions = pl.read_parquet(
            tmp_path / f"r{index}" / "predictions" / "SASRec__selection__test.parquet"
        )
        runs.append((result.provenance["config"]["selection_threshold"], predictions["selected"].to_list()))
    assert runs[0] == runs[1]
    assert runs[0][0] > 0 and result.provenance["config"]["threshold_tuned_on"] == "valid"


def test_cli_lists_exports_and_runs_recbole_baselines(synthetic_data, tmp_path):
    from typer.testing import CliRunner

    from unimp_bench.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["baselines", "list"])
    assert listed.exit_code == 0 and "SASRec" in listed.output and "recbole" in listed.output
    exported = runner.invoke(
        app,
        [
            "baselines",
            "export",
            str(synthetic_data),
            "--out",
            str(tmp_path / "atomic"),
            "--layout",
            "general",
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "atomic" / "unimp" / "unimp.test.inter").exists()
    ran = runner.invoke(
        app,
        [
            "baselines",
            "run",
            str(synthetic_data),
            "--model",
            "BPR",
            "--task",
            "recommendation",
            "--config",
            str(quick_config(tmp_path, "BPR")),
            "--splits",
            "test,new_domain",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert ran.exit_code == 0, ran.output
    assert "BPR recommendation/new_domain" in ran.output and "not applicable" in ran.output
    results = [read_result(p) for p in (tmp_path / "r").glob("*.json")]
    assert {r.split for r in results} == {"test", "new_domain"}


def test_hgn_pairwise_loss_lowers_the_negative_in_the_table_that_ranks(synthetic_data):
    """RecBole's HGN scores a BPR negative with its input item table, so the prediction table (which
    ranks) never learns from negatives; ours scores both items with the prediction table."""
    from recbole.model.sequential_recommender.hgn import HGN as RecBoleHGN

    sampler = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
    settings = RecBoleParams(model="HGN", epochs=1, recbole={"loss_type": "BPR"} | sampler)
    predictor = RecBolePredictor("HGN", settings, open_dataset(synthetic_data))
    batch = next(iter(predictor.train_data))
    negatives = batch["neg_item_id"].unique()
    positives = batch["item_id"].unique()
    only_negative = negatives[~torch.isin(negatives, positives)]
    assert len(only_negative) > 0

    def prediction_gradient(model) -> torch.Tensor:
        model.zero_grad()
        model.calculate_loss(batch).backward()
        return model.item_embedding_for_prediction.weight.grad[only_negative].abs().sum()

    ours = predictor.model
    assert type(ours).__name__ == "HGN" and type(ours) is not RecBoleHGN
    theirs = RecBoleHGN(predictor.rb_config, predictor.train_data.dataset)
    theirs.load_state_dict(ours.state_dict())
    assert prediction_gradient(ours) > 0
    assert prediction_gradient(theirs) == 0
    # the softmax branch is RecBole's own
    with torch.no_grad():
        ours.loss_type = theirs.loss_type = "CE"
        ours.loss_fct = theirs.loss_fct = torch.nn.CrossEntropyLoss()
        torch.testing.assert_close(ours.calculate_loss(batch), theirs.calculate_loss(batch))
