"""SASRec as published, composed onto RecBole's SASRec class by subclassing (no patching).

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
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from unimp_bench.baselines.recbole_compat import prepare_recbole

BINARY_CROSS_ENTROPY = "BCE"
POSITION_ORIGINS = ("first", "latest")
TRAIN_ROWS = ("prefixes", "sequences")
# fields of a sequence batch (train_rows: sequences), beside RecBole's item_id_list
TARGET_SEQUENCE = "target_item_list"  # [B W] the item after each position; 0 where there is none
NEGATIVE_SEQUENCE = "negative_item_list"  # [B W] one sampled negative per position


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


@functools.cache
def sasrec_class(position_origin: str = "first"):
    """RecBole's SASRec with the published objective, sequence rows and position origin available
    (the options are checked by the engine's RecBoleParams)."""
    prepare_recbole()
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import InputType

    class PublishedSASRec(SASRec):
        """RecBole's SASRec layers; the loss, the sequence rows and the positions as published."""

        # one sampled negative per target, delivered by RecBole's sampler as for BPR (prefix rows;
        # the engine turns the sampler off for CE)
        input_type = InputType.PAIRWISE
        latest_last = position_origin == "latest"

        def __init__(self, config, dataset):
            # RecBole's SASRec refuses loss types it does not know; it builds its BPR loss for BCE,
            # which the binary cross-entropy branches below never call
            loss_type = config["loss_type"]
            if loss_type == BINARY_CROSS_ENTROPY:
                config["loss_type"] = "BPR"
            try:
                super().__init__(config, dataset)
            finally:
                config["loss_type"] = loss_type
            self.loss_type = loss_type

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
