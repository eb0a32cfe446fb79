"""SASRec and BERT4Rec as published, composed onto RecBole's classes by subclassing (no patching).

RecBole's SASRec differs from the published one (Kang & McAuley 2018, and the S3-Rec repository whose
full-ranking numbers are our reference) in three ways, each selectable here:

- objective (`loss_type: BCE` in the baseline's `recbole:` options): the published model is trained with
  binary cross-entropy on the true next item and one sampled negative,
  -log sigmoid(s_pos) - log(1 - sigmoid(s_neg)). RecBole offers only a pairwise BPR loss on the same
  pair (-log sigmoid(s_pos - s_neg)) and a softmax over the catalog;
- training rows (`train_rows: sequences`): the published model reads each user's training sequence
  once per epoch and every position predicts the item after it, with its own sampled negative.
  RecBole trains on one pre-augmented row per position and supervises only its last position, so an
  epoch holds the same (position, target) pairs cut into about six times as many smaller steps;
- position origin (`position_origin: latest`): the published code pads histories on the left, so the
  latest item always sits at the last position embedding and positions count back from it. RecBole
  pads on the right and position 0 is the oldest item of the window.

`sasrec_class` builds the subclass for a combination (cached, one class per combination).

BERT4Rec (Sun et al. 2019, the authors' gen_data_fin.py) trains on one row per user: the user's
training items with a fixed share of them (`mask_ratio`, 0.6 for Beauty in the published scripts)
replaced by a mask token, the model recovering each; besides those rows the published data holds one
row per user that masks only its latest item (one in eleven rows with the published ten masked copies),
which is how BERT4Rec is asked at test time. RecBole instead masks each of its one-row-per-position
prefix rows, six times as many rows on Beauty. `train_rows: sequences` selects the published rows
(`bert4rec_class`); the loss is RecBole's (a softmax over the catalog, or BPR on one sampled negative).

HGN keeps RecBole's class with one fix (`hgn_class`): RecBole's pairwise loss scores the sampled
negative with the input item table while the positive, and every ranking, use the prediction table,
so training never lowers a negative's score where it counts. The published code (allenjack/HGN)
scores both with its prediction table (W2).

Caser and HGN as published (graytowne/caser_pytorch, allenjack/HGN) train on sliding windows of each
user's training items (`train_rows: windows`): L = max_history items predict the T = window_targets
items after them, each row with window_negatives sampled items the user never had; a user with fewer
than L + T items gives one window padded on the left (padding targets are skipped). Caser's loss is
the binary cross-entropy of the targets against the negatives (`loss_type: BCE`), HGN's a pairwise
BPR loss (every target against every negative of its row; the published code pairs them one to one).

Each subclass builds its own training rows (`training_batch`): the engine draws the users of a batch
and the model lays out their rows.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from unimp_bench.baselines.recbole_compat import prepare_recbole
from unimp_bench.errors import UnimpError

BINARY_CROSS_ENTROPY = "BCE"
PositionOrigin = Literal["first", "latest"]
TrainRows = Literal["prefixes", "sequences", "windows"]
# what each model offers beyond RecBole's own training: the settings above that are not RecBole's
OFFERS = {
    "SASRec": {"loss_type": {"BCE"}, "train_rows": {"sequences"}, "position_origin": {"latest"}},
    "BERT4Rec": {"train_rows": {"sequences"}},
    "Caser": {"loss_type": {"BCE"}, "train_rows": {"windows"}},
    "HGN": {"loss_type": {"BCE"}, "train_rows": {"windows"}},
}
WINDOW_MODELS = ("Caser", "HGN")
# fields of a sequence batch (train_rows: sequences), beside RecBole's item_id_list
TARGET_SEQUENCE = "target_item_list"  # [B W] the item after each position; 0 where there is none
NEGATIVE_SEQUENCE = "negative_item_list"  # [B W] one sampled negative per position
# BERT4Rec's rows that mask only the latest item: one per user per ten cloze-masked copies, as the
# published data generation writes them (dupe_factor 10 plus mask_last)
LATEST_ONLY_SHARE = 1 / 11


def binary_cross_entropy_with_one_negative(
    positive_scores: torch.Tensor, negative_scores: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of -log sigmoid(pos) - log(1 - sigmoid(neg)), both [B] logits.

    softplus(-x) = -log sigmoid(x) and softplus(x) = -log(1 - sigmoid(x)), without the overflow of
    taking the log of a sigmoid that rounded to 0 or 1."""
    return (F.softplus(-positive_scores) + F.softplus(negative_scores)).mean()


def right_aligned(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """Right-padded rows [B W] (RecBole's layout) moved to the right end: [0 0 a b c] for [a b c 0 0]."""
    width = item_seq.size(1)
    source = torch.arange(width, device=item_seq.device)[None, :] - (width - item_seq_len)[:, None]  # [B W]
    moved = item_seq.gather(1, source.clamp(min=0))
    return torch.where(source >= 0, moved, torch.zeros_like(moved))


def uniform_negatives(rng, sequences: list[np.ndarray], real: np.ndarray, n_items: int) -> np.ndarray:
    """[B W] uniform items among RecBole's ids 1..n_items-1, none of them among its row's training
    items (all of them, also those older than the window), 0 where `real` is false."""
    # (row, item) pairs as one key each, so membership is one vectorized lookup
    seen = np.concatenate([row * n_items + items for row, items in enumerate(sequences)])
    rows = np.arange(len(sequences))[:, None]
    negatives = np.zeros(real.shape, dtype=np.int64)
    pending = real.copy()
    while pending.any():
        negatives[pending] = rng.integers(1, n_items, size=int(pending.sum()))
        pending &= np.isin(rows * n_items + negatives, seen)
    return negatives


def cloze_positions(rng, lengths: np.ndarray, width: int, ratio: float, most: int) -> np.ndarray:
    """[B W] which positions of right-padded rows of `lengths` items get masked: in each row
    round(length * ratio) of its positions, at least one and at most `most`, chosen uniformly
    (the published data generation's rule)."""
    real = np.arange(width)[None, :] < lengths[:, None]  # [B W]
    wanted = np.clip(np.rint(lengths * ratio), 1, most).astype(np.int64)  # [B]
    keys = np.where(real, rng.random(real.shape), np.inf)  # padding sorts last
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)  # each position's place in a random order
    return real & (rank < wanted[:, None])


def model_class(
    model: str, loss_type: str | None, train_rows: str, position_origin: str, caser_output: str = "recbole"
):
    """The subclass that trains `model` with these settings, or None for RecBole's own class; settings
    a model does not offer are refused in one sentence."""
    asked = {
        key: value
        for key, value, default in (
            ("loss_type", loss_type, None),
            ("train_rows", train_rows, "prefixes"),
            ("position_origin", position_origin, "first"),
        )
        if value != default and (key != "loss_type" or value == BINARY_CROSS_ENTROPY)
    }
    for key, value in asked.items():
        serving = [name for name, offers in OFFERS.items() if value in offers.get(key, ())]
        if model not in serving:
            names = serving[0] if len(serving) == 1 else f"{', '.join(serving[:-1])} and {serving[-1]}"
            raise UnimpError(f"{key} {value} is available for {names} only, not {model}")
    if caser_output != "recbole" and (model != "Caser" or train_rows != "windows"):
        raise UnimpError(f"caser_output {caser_output} is for Caser with train_rows windows, not {model}")
    if model in WINDOW_MODELS and loss_type == BINARY_CROSS_ENTROPY and train_rows != "windows":
        raise UnimpError(f"loss_type BCE for {model} needs train_rows windows")
    if model == "SASRec" and asked:
        return sasrec_class(position_origin)
    if model == "BERT4Rec" and asked:
        return bert4rec_class()
    if model in WINDOW_MODELS and (asked or model == "HGN"):  # HGN: RecBole's loss needs a fix
        return caser_class(caser_output) if model == "Caser" else hgn_class()
    return None


def sliding_windows(
    sequences: list[np.ndarray], history: int, targets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sequence's windows of history + targets items, newest first, one step apart; a sequence
    shorter than that gives one window padded on the left. Returns the inputs [R history] (right-padded,
    as RecBole lays histories out), the targets [R targets] (0 where padding) and each row's sequence."""
    span = history + targets
    inputs, outputs, owners = [], [], []
    for owner, items in enumerate(sequences):
        if len(items) < span:
            windows = np.pad(items, (span - len(items), 0))[None, :]
        else:
            windows = np.lib.stride_tricks.sliding_window_view(items, span)[::-1]
        inputs.append(windows[:, :history])
        outputs.append(windows[:, history:])
        owners.append(np.full(len(windows), owner))
    left = np.concatenate(inputs)
    # move each input's real items to the left: [0 0 a b c] -> [a b c 0 0]
    order = np.argsort(left == 0, axis=1, kind="stable")
    return np.take_along_axis(left, order, axis=1), np.concatenate(outputs), np.concatenate(owners)


class BinaryCrossEntropyAccepted:
    """Lets a RecBole model that refuses loss types it does not know be built with BCE: it is built
    with BPR (whose loss the BCE branches never call) and keeps BCE as its loss_type."""

    def __init__(self, config, dataset):
        loss_type = config["loss_type"]
        if loss_type == BINARY_CROSS_ENTROPY:
            config["loss_type"] = "BPR"
        try:
            super().__init__(config, dataset)
        finally:
            config["loss_type"] = loss_type
        self.loss_type = loss_type


class WindowLoss(BinaryCrossEntropyAccepted):
    """The published Caser/HGN loss on window rows; RecBole's own on its prefix rows. A model class
    using it provides `state(interaction)` [B H], `output_table` and `regularization(...)`."""

    def window_loss(self, interaction) -> torch.Tensor:
        state = self.state(interaction)  # [B H]
        table = self.output_table
        targets = interaction[TARGET_SEQUENCE]  # [B T], 0 where padding
        real = targets > 0
        if self.loss_type == "CE":  # a softmax over the catalog for every target
            rows = real.nonzero()[:, 0]
            loss = F.cross_entropy(self.catalog_scores(state[rows]), targets[real])
        else:
            positive = self.item_scores(state, targets)  # [B T]
            negative = self.item_scores(state, interaction[NEGATIVE_SEQUENCE])  # [B N]
            if self.loss_type == BINARY_CROSS_ENTROPY:
                loss = F.softplus(-positive[real]).mean() + F.softplus(negative).mean()
            else:  # BPR: every real target against every negative of its row
                loss = -F.logsigmoid(positive[:, :, None] - negative[:, None, :])[real].mean()
        return loss + self.regularization(interaction, table(targets[real]))

    def item_scores(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B K] scores of each row's items [B K] from its state [B H]."""
        return (state[:, None, :] * self.output_table(items)).sum(-1)

    def catalog_scores(self, state: torch.Tensor) -> torch.Tensor:
        """[B N] scores of every item."""
        return state @ self.output_table.weight.T

    def training_batch(self, rng, sequences, inputs, targets, users, negatives: int) -> dict[str, np.ndarray]:
        """Window rows [B L] with their targets [B T], users [B] (RecBole's ids) and `negatives`
        uniform items per row that its user never had in training."""
        wanted = np.ones((len(inputs), negatives), dtype=bool)
        sampled = uniform_negatives(rng, sequences, wanted, self.n_items)
        return {
            self.ITEM_SEQ: inputs,
            self.ITEM_SEQ_LEN: np.maximum((inputs > 0).sum(axis=1), 1),
            self.USER_ID: users,
            TARGET_SEQUENCE: targets,
            NEGATIVE_SEQUENCE: sampled,
        }


CaserOutput = Literal["recbole", "published"]


@functools.cache
def caser_class(output: str = "recbole"):
    """RecBole's Caser, trainable on the published window rows. `output: published` scores items as
    the published Caser does: the 2d-dimensional [z, user] against a separate output table with an
    item bias (W2, b2), where RecBole maps [z, user] back to d dimensions through a ReLU layer and
    scores it against the input item table."""
    prepare_recbole()
    from recbole.model.sequential_recommender import Caser as RecBoleCaser

    class Caser(WindowLoss, RecBoleCaser):  # RecBole finds its options by this class name
        """RecBole's Caser layers and prediction, or the published output (see caser_class)."""

        published_output = output == "published"

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            if self.published_output:  # built here, never in forward()
                if not (self.n_v and self.n_h):
                    raise UnimpError("the published Caser output needs nv and nh above 0")
                width = 2 * self.embedding_size  # [z, user]
                self.output_items = torch.nn.Embedding(self.n_items, width)
                self.output_bias = torch.nn.Embedding(self.n_items, 1)
                torch.nn.init.normal_(self.output_items.weight, 0, 1.0 / width)
                torch.nn.init.zeros_(self.output_bias.weight)

        def state(self, interaction) -> torch.Tensor:
            if self.published_output:
                return self.features(interaction[self.USER_ID], interaction[self.ITEM_SEQ])
            return self.forward(interaction[self.USER_ID], interaction[self.ITEM_SEQ])

        def features(self, user: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
            """[B 2d]: [z, user], z from the vertical and horizontal convolutions over the window."""
            embedded = self.item_embedding(item_seq).unsqueeze(1)  # [B 1 L d]
            vertical = self.conv_v(embedded).view(-1, self.fc1_dim_v)  # [B nv*d]
            horizontal = []
            for conv in self.conv_h:  # one filter height per window length
                activated = self.ac_conv(conv(embedded).squeeze(3))  # [B nh L-h+1]
                horizontal.append(F.max_pool1d(activated, activated.size(2)).squeeze(2))  # [B nh]
            z = self.ac_fc(self.fc1(self.dropout(torch.cat([vertical, *horizontal], 1))))  # [B d]
            return torch.cat([z, self.user_embedding(user)], 1)

        @property
        def output_table(self) -> torch.nn.Embedding:
            return self.output_items if self.published_output else self.item_embedding

        def item_scores(self, state, items):
            scores = super().item_scores(state, items)
            return scores + self.output_bias(items).squeeze(-1) if self.published_output else scores

        def catalog_scores(self, state):
            scores = super().catalog_scores(state)
            return scores + self.output_bias.weight.T if self.published_output else scores

        def regularization(self, interaction, positive: torch.Tensor) -> torch.Tensor:
            """RecBole's Caser terms: L2 of the embeddings and layers, and of the horizontal filters
            (the published output's table in place of the unused fc2)."""
            weights = [self.user_embedding.weight, self.item_embedding.weight, self.conv_v.weight]
            last = self.output_table if self.published_output else self.fc2
            weights += [self.fc1.weight, last.weight]
            return self.reg_weight * self.reg_loss(weights) + self.reg_loss_conv_h()

        def calculate_loss(self, interaction):
            if TARGET_SEQUENCE in interaction:
                return self.window_loss(interaction)
            if self.published_output:
                raise UnimpError("the published Caser output trains on train_rows windows")
            return super().calculate_loss(interaction)

        def predict(self, interaction):
            if not self.published_output:
                return super().predict(interaction)
            state = self.state(interaction)
            return self.item_scores(state, interaction[self.ITEM_ID][:, None])[:, 0]

        def full_sort_predict(self, interaction):
            if not self.published_output:
                return super().full_sort_predict(interaction)
            return self.catalog_scores(self.state(interaction))

    return Caser


@functools.cache
def sasrec_class(position_origin: str = "first"):
    """RecBole's SASRec with the published objective, sequence rows and position origin available
    (the options are checked by the engine's RecBoleParams)."""
    prepare_recbole()
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import InputType

    class PublishedSASRec(BinaryCrossEntropyAccepted, SASRec):
        """RecBole's SASRec layers; the loss, the sequence rows and the positions as published."""

        # one sampled negative per target, delivered by RecBole's sampler as for BPR (prefix rows;
        # the engine turns the sampler off for CE)
        input_type = InputType.PAIRWISE
        latest_last = position_origin == "latest"

        def sequence_output(self, item_seq: torch.Tensor) -> torch.Tensor:
            """The state after every position [B W H] of rows [B W] laid out as this model pads them
            (on the left when the latest item comes last, else on the right)."""
            width = item_seq.size(1)
            positions = torch.arange(width, device=item_seq.device)
            if self.latest_last:  # the latest item always gets the last position embedding
                positions = positions + (self.max_seq_length - width)
            hidden = self.item_embedding(item_seq) + self.position_embedding(positions)[None]  # [B W H]
            hidden = self.dropout(self.LayerNorm(hidden))
            # causal and padding mask; a padded query on the left sees only padding, which is harmless
            # (its output is never read) and keeps every softmax row finite
            mask = self.get_attention_mask(item_seq)  # [B 1 W W]
            return self.trm_encoder(hidden, mask, output_all_encoded_layers=True)[-1]

        def forward(self, item_seq, item_seq_len):
            """State after the last item [B H] of right-padded rows [B W], RecBole's contract."""
            if self.latest_last:
                return self.sequence_output(right_aligned(item_seq, item_seq_len))[:, -1]
            return self.gather_indexes(self.sequence_output(item_seq), item_seq_len - 1)

        def calculate_loss(self, interaction):
            if TARGET_SEQUENCE in interaction:
                return self._sequence_loss(interaction)
            if self.loss_type != BINARY_CROSS_ENTROPY:  # RecBole's BPR and CE on the last position
                return super().calculate_loss(interaction)
            seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B H]
            positive = self.item_embedding(interaction[self.POS_ITEM_ID])  # [B H] the true next item
            negative = self.item_embedding(interaction[self.NEG_ITEM_ID])  # [B H] one uniform sample
            return binary_cross_entropy_with_one_negative(
                (seq_output * positive).sum(-1), (seq_output * negative).sum(-1)
            )

        def training_batch(self, rng, sequences: list[np.ndarray], window: int) -> dict[str, np.ndarray]:
            """Users' training items (RecBole's ids) as one row each [B W], W their longest input: the
            last `window` + 1 items give the input items, the item after each position and one uniform
            negative per position among the items the user never had in training, padded as this
            model reads them (on the left when its latest item comes last)."""
            cut = [items[-(window + 1) :] for items in sequences]
            width = max(len(items) for items in cut) - 1
            inputs = np.zeros((len(cut), width), dtype=np.int64)
            targets = np.zeros((len(cut), width), dtype=np.int64)
            for row, items in enumerate(cut):
                span = slice(width - len(items) + 1, width) if self.latest_last else slice(0, len(items) - 1)
                inputs[row, span] = items[:-1]
                targets[row, span] = items[1:]
            negatives = uniform_negatives(rng, sequences, targets > 0, self.n_items)
            return {self.ITEM_SEQ: inputs, TARGET_SEQUENCE: targets, NEGATIVE_SEQUENCE: negatives}

        def _sequence_loss(self, interaction):
            """Every position of each user's sequence predicts the item after it."""
            targets = interaction[TARGET_SEQUENCE]  # [B W]
            real = targets > 0  # padding positions have no target
            output = self.sequence_output(interaction[self.ITEM_SEQ])[real]  # [T H], T real positions
            if self.loss_type == "CE":  # softmax over the catalog at every position
                return F.cross_entropy(output @ self.item_embedding.weight.T, targets[real])
            positive = (output * self.item_embedding(targets[real])).sum(-1)  # [T]
            negative = (output * self.item_embedding(interaction[NEGATIVE_SEQUENCE][real])).sum(-1)  # [T]
            if self.loss_type == BINARY_CROSS_ENTROPY:
                return binary_cross_entropy_with_one_negative(positive, negative)
            return self.loss_fct(positive, negative)  # RecBole's BPR loss

    return PublishedSASRec


@functools.cache
def bert4rec_class():
    """RecBole's BERT4Rec trained on the published rows: one cloze-masked row per user."""
    prepare_recbole()
    from recbole.model.sequential_recommender import BERT4Rec

    class PublishedBERT4Rec(BERT4Rec):
        """RecBole's BERT4Rec layers and prediction; the training rows as published."""

        latest_last = False  # rows padded on the right, positions counted from the oldest item

        def training_batch(self, rng, sequences: list[np.ndarray], window: int) -> dict[str, np.ndarray]:
            """Users' training items (RecBole's ids) as one row each [B W]: their last `window` items
            (W the longest), padded on the right. `mask_ratio` of each row's items are replaced by the
            mask token (at least one); with probability LATEST_ONLY_SHARE a row masks only its latest
            item instead. TARGET_SEQUENCE holds the masked items where masked, 0 elsewhere."""
            # the position embedding has max_seq_length entries, and a prediction appends its mask
            # after the history: rows longer than that are never asked for
            cut = [items[-min(window, self.max_seq_length) :] for items in sequences]
            lengths = np.asarray([len(items) for items in cut])
            width = int(lengths.max())
            items = np.zeros((len(cut), width), dtype=np.int64)
            for row, chosen in enumerate(cut):
                items[row, : len(chosen)] = chosen
            masked = cloze_positions(rng, lengths, width, self.mask_ratio, max(1, self.mask_item_length))
            latest_only = rng.random(len(cut)) < LATEST_ONLY_SHARE
            masked[latest_only] = False
            masked[np.flatnonzero(latest_only), lengths[latest_only] - 1] = True
            negatives = uniform_negatives(rng, sequences, masked, self.n_items)
            return {
                self.ITEM_SEQ: np.where(masked, self.mask_token, items),
                TARGET_SEQUENCE: np.where(masked, items, 0),
                NEGATIVE_SEQUENCE: negatives,
            }

        def calculate_loss(self, interaction):
            if TARGET_SEQUENCE not in interaction:  # RecBole's own masked prefix rows
                return super().calculate_loss(interaction)
            targets = interaction[TARGET_SEQUENCE]  # [B W] the masked items, 0 elsewhere
            masked = targets > 0
            output = self.forward(interaction[self.ITEM_SEQ])[masked]  # [T H], T masked positions
            if self.loss_type == "CE":  # softmax over the catalog (and padding id 0, as RecBole)
                logits = output @ self.item_embedding.weight[: self.n_items].T + self.output_bias  # [T N]
                return F.cross_entropy(logits, targets[masked])
            positive, negative = targets[masked], interaction[NEGATIVE_SEQUENCE][masked]  # [T]
            positive_scores = (output * self.item_embedding(positive)).sum(-1) + self.output_bias[positive]
            negative_scores = (output * self.item_embedding(negative)).sum(-1) + self.output_bias[negative]
            return -F.logsigmoid(positive_scores - negative_scores).mean()

        def masked_history(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor):
            """Right-padded histories [B W] with the mask token right after each, as the published test
            rows ask (RecBole's reconstruct_test_data drops every history's oldest item): rows [B W']
            and the mask's index [B]. Only a history that fills a row of the widest the position
            embedding allows loses its oldest item."""
            batch = torch.arange(item_seq.size(0), device=item_seq.device)
            rows = F.pad(item_seq, (0, 1))  # [B W+1]
            rows[batch, item_seq_len] = self.mask_token
            if rows.size(1) <= self.max_seq_length:
                return rows, item_seq_len
            full = item_seq_len >= item_seq.size(1)  # [B] histories that fill the row
            rows[full] = torch.roll(rows[full], -1, dims=1)
            return rows[:, :-1], torch.where(full, item_seq_len - 1, item_seq_len)

        def _mask_output(self, interaction) -> torch.Tensor:
            rows, index = self.masked_history(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            return self.forward(rows)[torch.arange(rows.size(0), device=rows.device), index]  # [B H]

        def predict(self, interaction):
            items = interaction[self.ITEM_ID]  # [B]
            scores = (self._mask_output(interaction) * self.item_embedding(items)).sum(-1)
            return scores + self.output_bias[items]

        def full_sort_predict(self, interaction):
            output = self._mask_output(interaction)  # [B H]
            return output @ self.item_embedding.weight[: self.n_items].T + self.output_bias  # [B N]

    return PublishedBERT4Rec


@functools.cache
def hgn_class():
    """RecBole's HGN whose pairwise loss scores the negative with the table it ranks by, trainable on
    the published window rows."""
    prepare_recbole()
    from recbole.model.sequential_recommender.hgn import HGN as RecBoleHGN

    class HGN(WindowLoss, RecBoleHGN):  # RecBole finds its options by this class name
        """RecBole's HGN; with loss_type BPR, both items scored with item_embedding_for_prediction."""

        def state(self, interaction) -> torch.Tensor:
            return self.forward(interaction[self.ITEM_SEQ], interaction[self.USER_ID])

        @property
        def output_table(self) -> torch.nn.Embedding:
            return self.item_embedding_for_prediction

        def regularization(self, interaction, positive: torch.Tensor) -> torch.Tensor:
            """RecBole's HGN terms (its reg_weight, zero by default)."""
            user = self.user_embedding(interaction[self.USER_ID])
            return self.reg_loss(user, positive, self.item_embedding(interaction[self.ITEM_SEQ]))

        def calculate_loss(self, interaction):
            if TARGET_SEQUENCE in interaction:
                return self.window_loss(interaction)
            if self.loss_type != "BPR":  # the softmax already scores every item with that table
                return super().calculate_loss(interaction)
            state = self.state(interaction)  # [B H]
            positive = self.output_table(interaction[self.POS_ITEM_ID])  # [B H]
            negative = self.output_table(interaction[self.NEG_ITEM_ID])  # [B H]
            loss = self.loss_fct((state * positive).sum(-1), (state * negative).sum(-1))
            return loss + self.regularization(interaction, positive)

    return HGN
