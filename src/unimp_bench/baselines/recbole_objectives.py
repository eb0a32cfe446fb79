"""Training objectives RecBole's models lack, composed onto its classes by subclassing (no patching).

SASRec as published (Kang & McAuley 2018, and the S3-Rec repository whose full-ranking numbers are our
reference) is trained with binary cross-entropy on the true next item and one sampled negative:
-log sigmoid(s_pos) - log(1 - sigmoid(s_neg)). RecBole's SASRec offers only a pairwise BPR loss on the
same pair (-log sigmoid(s_pos - s_neg)) and a softmax over the catalog. BPR only sees the difference
of the two scores, binary cross-entropy anchors each score on its own, and the two train measurably
different models. `loss_type: BCE` in a SASRec baseline's `recbole:` options selects the class here.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from unimp_bench.baselines.recbole_compat import prepare_recbole
from unimp_bench.errors import UnimpError

BINARY_CROSS_ENTROPY = "BCE"


def binary_cross_entropy_with_one_negative(
    positive_scores: torch.Tensor, negative_scores: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of -log sigmoid(pos) - log(1 - sigmoid(neg)), both [B] logits.

    softplus(-x) = -log sigmoid(x) and softplus(x) = -log(1 - sigmoid(x)), without the overflow of
    taking the log of a sigmoid that rounded to 0 or 1."""
    return (F.softplus(-positive_scores) + F.softplus(negative_scores)).mean()


@functools.cache
def binary_cross_entropy_class(model: str):
    """RecBole's `model` trained with binary cross-entropy on one sampled negative."""
    if model != "SASRec":
        raise UnimpError(f"loss_type {BINARY_CROSS_ENTROPY} is available for SASRec only, not {model}")
    prepare_recbole()
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import InputType

    class SASRecBinaryCrossEntropy(SASRec):
        """SASRec with the published objective; everything but calculate_loss is RecBole's."""

        # one sampled negative per target, delivered by RecBole's sampler as for BPR
        input_type = InputType.PAIRWISE

        def __init__(self, config, dataset):
            # RecBole's SASRec refuses loss types it does not know; it builds its BPR loss here,
            # which calculate_loss below never calls
            config["loss_type"] = "BPR"
            try:
                super().__init__(config, dataset)
            finally:
                config["loss_type"] = BINARY_CROSS_ENTROPY
            self.loss_type = BINARY_CROSS_ENTROPY

        def calculate_loss(self, interaction):
            item_seq = interaction[self.ITEM_SEQ]  # [B L] the history, 0-padded
            item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
            seq_output = self.forward(item_seq, item_seq_len)  # [B H] state after the last item
            positive = self.item_embedding(interaction[self.POS_ITEM_ID])  # [B H] the true next item
            negative = self.item_embedding(interaction[self.NEG_ITEM_ID])  # [B H] one uniform sample
            return binary_cross_entropy_with_one_negative(
                (seq_output * positive).sum(-1), (seq_output * negative).sum(-1)
            )

    return SASRecBinaryCrossEntropy
