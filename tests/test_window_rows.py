"""Caser and HGN trained on the published window rows (train_rows: windows)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import learns_the_cycle, refused
from unimp_bench.baselines.recbole.params import RecBoleParams
from unimp_bench.baselines.recbole.predictor import RecBolePredictor
from unimp_bench.baselines.recbole_objectives import sliding_windows
from unimp_bench.data.contract import open_dataset


def test_sliding_windows_by_hand():
    """Windows of L + T items one step apart, newest first; a short sequence gives one window padded
    on the left, its inputs laid out from the left as RecBole reads histories."""
    inputs, targets, owners = sliding_windows(
        [np.arange(1, 8), np.asarray([8, 9]), np.asarray([1, 2, 3])], history=3, targets=2
    )
    assert inputs.tolist() == [[3, 4, 5], [2, 3, 4], [1, 2, 3], [0, 0, 0], [1, 0, 0]]
    assert targets.tolist() == [[6, 7], [5, 6], [4, 5], [8, 9], [2, 3]]
    assert owners.tolist() == [0, 0, 0, 1, 2]
    _, padded, _ = sliding_windows([np.asarray([4, 5])], history=2, targets=3)
    assert padded.tolist() == [[0, 4, 5]]  # a padding target, skipped by the loss


@pytest.mark.parametrize(("model", "loss_type"), [("Caser", "BCE"), ("HGN", "BPR")])
def test_window_batches_hold_each_window_once_with_its_user_and_unseen_negatives(
    synthetic_data, model, loss_type
):
    settings = RecBoleParams(
        model=model,
        epochs=1,
        max_history=3,
        train_rows="windows",
        window_targets=2,
        window_negatives=4,
        recbole={"loss_type": loss_type, "train_neg_sample_args": None},
    )
    predictor = RecBolePredictor(model, settings, open_dataset(synthetic_data))
    by_user = dict(zip(predictor.train_users.tolist(), predictor.train_sequences))
    expected = sum(max(1, len(s) - 4) for s in predictor.train_sequences)  # windows of 3 + 2 items
    rows = 0
    for [(batch, weight)] in predictor.batches.epoch(1):
        assert weight == 1.0
        assert batch["item_id_list"].shape[1] == predictor.model.max_seq_length == 3
        assert batch["target_item_list"].shape[1] == 2 and batch["negative_item_list"].shape[1] == 4
        for row in range(len(batch)):
            items = by_user[int(batch["user_id"][row])]
            history = [i for i in batch["item_id_list"][row].tolist() if i > 0]
            window = history + [i for i in batch["target_item_list"][row].tolist() if i > 0]
            text = " ".join(map(str, items.tolist()))
            assert " ".join(map(str, window)) in text  # a run of the user's own training items
            assert not set(batch["negative_item_list"][row].tolist()) & set(items.tolist())
        rows += len(batch)
    assert rows == expected


# windows of the last 2 items predicting the next one, trained long enough to learn the cycle
CYCLE_WINDOWS = {
    "epochs": 60,
    "stopping_step": 60,
    "max_history": 2,
    "train_rows": "windows",
    "window_targets": 1,
}


@pytest.mark.parametrize(("model", "loss_type"), [("Caser", "BCE"), ("HGN", "BPR"), ("Caser", "CE")])
def test_window_rows_learn_a_known_ranking(cyclic_data, tmp_path, model, loss_type):
    result = learns_the_cycle(
        model,
        cyclic_data,
        tmp_path,
        **CYCLE_WINDOWS,
        recbole={"loss_type": loss_type, "train_neg_sample_args": None, "train_batch_size": 32}
        | ({"learning_rate": 0.01} if model == "HGN" else {}),
    )
    assert result.provenance["config"]["params"]["train_rows"] == "windows"


def test_window_options_are_checked(synthetic_data, tmp_path):
    message = "train_rows windows is available for Caser and HGN only, not GRU4Rec"
    refused("GRU4Rec", synthetic_data, tmp_path, message, train_rows="windows")
    message = "loss_type BCE for Caser needs train_rows windows"
    prefix_bce = {"loss_type": "BCE", "train_neg_sample_args": None}
    refused("Caser", synthetic_data, tmp_path, message, recbole=prefix_bce)
    message = "window_targets and window_negatives must be >= 1"
    refused("HGN", synthetic_data, tmp_path, message, train_rows="windows", window_targets=0)


def test_published_caser_output_learns_a_known_ranking_and_reads_its_own_table(cyclic_data, tmp_path):
    """caser_output: published scores [z, user] against a separate output table plus an item bias:
    changing that table (and only it) changes the scores, and it learns the cycle."""
    import torch
    from recbole.data.interaction import Interaction

    result = learns_the_cycle(
        "Caser",
        cyclic_data,
        tmp_path,
        **CYCLE_WINDOWS,
        caser_output="published",
        recbole={"loss_type": "BCE", "train_neg_sample_args": None, "train_batch_size": 32},
    )
    assert result.provenance["config"]["params"]["caser_output"] == "published"
    settings = RecBoleParams(
        model="Caser",
        epochs=1,
        max_history=2,
        train_rows="windows",
        caser_output="published",
        recbole={"loss_type": "BCE", "train_neg_sample_args": None},
    )
    model = RecBolePredictor("Caser", settings, open_dataset(cyclic_data)).model.eval()
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id_list": torch.tensor([[3, 4], [5, 0]])})
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        assert before.shape == (2, model.n_items)
        torch.testing.assert_close(
            model.predict(Interaction(dict(batch.interaction) | {"item_id": torch.tensor([6, 7])})),
            before[[0, 1], [6, 7]],
        )
        model.item_embedding.weight[7] += 1.0  # an input row the histories do not read
        torch.testing.assert_close(model.full_sort_predict(batch), before)
        model.output_bias.weight[7] += 1.0
        after = model.full_sort_predict(batch)
    assert torch.allclose(after[:, 7], before[:, 7] + 1.0) and torch.equal(after[:, :7], before[:, :7])


def test_published_caser_output_needs_window_rows(synthetic_data, tmp_path):
    message = "caser_output published is for Caser with train_rows windows, not HGN"
    refused("HGN", synthetic_data, tmp_path, message, train_rows="windows", caser_output="published")
    message = "caser_output must be one of recbole, published"
    refused("Caser", synthetic_data, tmp_path, message, caser_output="paper")
