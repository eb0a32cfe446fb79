"""BERT4Rec trained on the published rows (train_rows: sequences): one cloze-masked row per user."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import ONE_NEGATIVE, TINY_SASREC, learns_the_cycle, refused
from unimp_bench.baselines.recbole.params import RecBoleParams
from unimp_bench.baselines.recbole.predictor import RecBolePredictor
from unimp_bench.baselines.recbole_objectives import LATEST_ONLY_SHARE, cloze_positions
from unimp_bench.data.contract import open_dataset

TINY_BERT4REC = TINY_SASREC | {"mask_ratio": 0.6}


def _bert4rec(data, **recbole) -> RecBolePredictor:
    settings = RecBoleParams(
        model="BERT4Rec", epochs=1, train_rows="sequences", recbole=TINY_BERT4REC | recbole
    )
    return RecBolePredictor("BERT4Rec", settings, open_dataset(data))


def test_cloze_positions_mask_the_published_count_of_real_items():
    """round(length * ratio) positions per row, at least one, at most `most`, never padding."""
    rng = np.random.default_rng(0)
    lengths = np.asarray([1, 2, 5, 7, 10, 10])
    masked = cloze_positions(rng, lengths, 10, 0.6, most=5)
    assert masked.sum(axis=1).tolist() == [1, 1, 3, 4, 5, 5]  # round(1.2)=1, round(3.0)=3, round(4.2)=4
    assert not masked[np.arange(10)[None, :] >= lengths[:, None]].any()
    # every real position gets masked sometimes: the choice is uniform, not the first ones
    hits = sum(cloze_positions(rng, np.asarray([7]), 7, 0.3, most=7)[0] for _ in range(400))
    assert hits.min() > 60 and hits.max() < 180  # 400 draws x 2 of 7 positions: about 114 each


def test_each_user_is_one_row_per_epoch_and_only_masked_items_are_targets(synthetic_data):
    predictor = _bert4rec(synthetic_data)
    model = predictor.model
    sequences = {tuple(items[-model.max_seq_length :]) for items in predictor.train_sequences}
    rows, latest_only = 0, 0
    for epoch in range(1, 4):
        users = set()
        for parts in predictor.batches.sequence_batches(size=32, epoch=epoch):
            assert sum(weight for _, weight in parts) == pytest.approx(1.0)
            for part, _ in parts:
                inputs = part["item_id_list"].numpy()
                targets = part["target_item_list"].numpy()
                negatives = part["negative_item_list"].numpy()
                masked = targets > 0
                assert (inputs[masked] == model.mask_token).all()
                assert not (inputs[~masked] == model.mask_token).any()
                for row in range(len(inputs)):
                    real = inputs[row] > 0
                    items = tuple(np.where(masked[row], targets[row], inputs[row])[real].tolist())
                    assert items in sequences  # the user's own latest training items, in order
                    assert real[: real.sum()].all()  # padded on the right
                    count = int(masked[row].sum())
                    last_only = count == 1 and masked[row][real.sum() - 1]
                    latest_only += int(last_only)
                    if not last_only:
                        assert count == max(1, round(len(items) * model.mask_ratio))
                    assert not set(negatives[row][masked[row]]) & set(items)
                    users.add(items)
                rows += len(inputs)
        assert len(users) == len(sequences)
    # rows that mask only the latest item: about one in eleven (plus cloze rows that happen to)
    assert LATEST_ONLY_SHARE * 0.6 < latest_only / rows < LATEST_ONLY_SHARE * 2.5


def test_batch_split_by_length_has_the_loss_of_the_whole_batch(synthetic_data):
    from recbole.data.interaction import Interaction

    for loss_type, sampler in (
        ("CE", {}),
        ("BPR", {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}),
    ):
        predictor = _bert4rec(synthetic_data, loss_type=loss_type, **sampler)
        model = predictor.model.eval()
        rng = np.random.default_rng(5)
        lengths = np.asarray([len(s) for s in predictor.train_sequences])
        rows = np.concatenate(
            [np.flatnonzero(lengths == lengths.max())[:1], rng.permutation(len(lengths))[:40]]
        )
        batch = predictor.batches.sequence_batch(rng, rows)
        parts = predictor.batches.parts_by_width(batch)
        assert len(parts) > 1
        with torch.no_grad():
            whole = model.calculate_loss(Interaction({k: torch.as_tensor(v) for k, v in batch.items()}))
            split = sum(weight * model.calculate_loss(part) for part, weight in parts)
        torch.testing.assert_close(split, whole)


def test_prediction_asks_for_the_item_after_the_whole_history(synthetic_data):
    """The mask follows every history item (RecBole's reconstruct_test_data drops the oldest one):
    changing the oldest item of a short history changes the scores, padding width does not, and only
    a history that fills the widest row loses its oldest item."""
    from recbole.data.interaction import Interaction

    model = _bert4rec(synthetic_data).model.eval()
    width = model.max_seq_length

    def scores(histories, columns):
        rows = torch.zeros((len(histories), columns), dtype=torch.long)
        for row, items in enumerate(histories):
            rows[row, : len(items)] = torch.tensor(items)
        lengths = torch.tensor([len(items) for items in histories])
        with torch.no_grad():
            return model.full_sort_predict(Interaction({"item_id_list": rows, "item_length": lengths}))

    short = [[3, 5, 7], [2]]
    full = scores(short, width)
    torch.testing.assert_close(full, scores(short, 3))  # cut to the longest history: same scores
    changed = scores([[4, 5, 7], [2]], width)
    assert not torch.allclose(full[0], changed[0])  # the oldest item is read
    torch.testing.assert_close(full[1], changed[1])
    rows, index = model.masked_history(torch.tensor([[3, 5, 7, 0]]), torch.tensor([3]))
    assert rows.tolist() == [[3, 5, 7, model.mask_token, 0]] and index.tolist() == [3]
    long = list(range(1, width + 1))  # fills the widest row: its oldest item makes room for the mask
    rows, index = model.masked_history(torch.tensor([long]), torch.tensor([width]))
    assert rows.tolist() == [long[1:] + [model.mask_token]] and index.tolist() == [width - 1]


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_bert4rec_on_published_rows_learns_a_known_ranking(cyclic_data, tmp_path, loss_type):
    sampler = {} if loss_type == "CE" else ONE_NEGATIVE
    result = learns_the_cycle(
        "BERT4Rec",
        cyclic_data,
        tmp_path,
        epochs=80,
        stopping_step=80,
        train_rows="sequences",
        recbole=TINY_BERT4REC | {"loss_type": loss_type, "train_batch_size": 16} | sampler,
    )
    assert result.provenance["config"]["params"]["train_rows"] == "sequences"


def test_only_sasrec_and_bert4rec_have_published_rows(synthetic_data, tmp_path):
    message = "train_rows sequences is available for SASRec and BERT4Rec only, not GRU4Rec"
    refused("GRU4Rec", synthetic_data, tmp_path, message, train_rows="sequences")
    message = "position_origin latest is available for SASRec only, not BERT4Rec"
    refused("BERT4Rec", synthetic_data, tmp_path, message, train_rows="sequences", position_origin="latest")
