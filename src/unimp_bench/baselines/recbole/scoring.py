"""A trained RecBole model's scores over the whole catalog for each (user, history before a position),
mapped back to our item ids and turned into exact (greater, ties) counts, so RecBole's metric code is
never involved."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unimp_bench.baselines.recbole.params import RecBoleParams
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import target_rank_counts
from unimp_bench.ranking import earlier_items, leave_out


@dataclass(frozen=True)
class ItemIndex:
    """Our item ids <-> RecBole's internal ids (0 is RecBole's padding)."""

    item_of_internal: np.ndarray  # [RecBole ids] -> our id (-1 for padding)
    internal_of_item: np.ndarray  # [catalog] -> RecBole id

    @classmethod
    def of(cls, rb_dataset, catalog_size: int) -> ItemIndex:
        tokens = rb_dataset.field2id_token["item_id"]
        if len(tokens) - 1 != catalog_size:
            raise UnimpError(f"RecBole kept {len(tokens) - 1} of the {catalog_size} catalog items")
        item_of_internal = np.full(len(tokens), -1, dtype=np.int64)
        item_of_internal[1:] = np.asarray(tokens[1:], dtype=np.int64)
        internal_of_item = np.zeros(catalog_size, dtype=np.int64)
        internal_of_item[item_of_internal[1:]] = np.arange(1, len(tokens))
        return cls(item_of_internal, internal_of_item)


def internal_users(rb_dataset, name: str, users: np.ndarray) -> np.ndarray:
    """RecBole's ids of our users; an error names a user the model has no vector for."""
    tokens = [str(u) for u in users.tolist()]
    try:
        return np.asarray(rb_dataset.token2id("user_id", tokens), dtype=np.int64).reshape(-1)
    except ValueError:
        raise UnimpError(f"{name} has no vector for a user it did not train on") from None


class CatalogScorer:
    """Scores of `model` over the catalog. An example's history is every item before its target
    position (the last `sequence_width` of them); `history_items`, when given, keeps only the items it
    marks (a model trained on the held-out domain alone reads that domain's items only)."""

    def __init__(
        self,
        name: str,
        params: RecBoleParams,
        model,
        rb_dataset,
        index: ItemIndex,
        histories: dict[int, np.ndarray],
        sequence_width: int,
        device,
        history_items: np.ndarray | None = None,
    ):
        self.name, self.params, self.model, self.rb_dataset = name, params, model, rb_dataset
        self.index, self.histories, self.sequence_width = index, histories, sequence_width
        self.device, self.history_items = device, history_items
        self.uses_user_ids = hasattr(model, "user_embedding")
        self.catalog_size = len(index.internal_of_item)

    def catalog_scores(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Scores [len(users), catalog] of the model for each (user, history before position)."""
        from recbole.data.interaction import Interaction

        model = self.model
        length = self.sequence_width
        sequences = np.zeros((len(users), length), dtype=np.int64)
        lengths = np.zeros(len(users), dtype=np.int64)
        for row, (user, position) in enumerate(zip(users.tolist(), positions.tolist())):
            history = self.histories[user][:position]
            if self.history_items is not None:
                history = history[self.history_items[history]]
            history = self.index.internal_of_item[history[-length:]]
            sequences[row, : len(history)] = history  # RecBole pads sequences on the right
            lengths[row] = len(history)
        fields = {}
        # models without user vectors still read the user field for the batch size: padding ids
        if self.uses_user_ids:
            user_ids = internal_users(self.rb_dataset, self.name, users)
        else:
            user_ids = np.zeros(len(users), dtype=np.int64)
        fields[model.USER_ID] = torch.as_tensor(user_ids)
        if hasattr(model, "ITEM_SEQ"):
            if (lengths == 0).any():
                raise UnimpError(f"{self.name} needs at least one earlier item for every example")
            if self.params.width_invariant:  # the same outputs without the all-padding columns
                sequences = sequences[:, : max(1, int(lengths.max()))]
            fields[model.ITEM_SEQ] = torch.as_tensor(sequences)
            fields[model.ITEM_SEQ_LEN] = torch.as_tensor(lengths)
        model.eval()
        with torch.no_grad():
            internal = model.full_sort_predict(Interaction(fields).to(self.device))
        internal = internal.view(len(users), -1).float().cpu().numpy()
        item_of_internal = self.index.item_of_internal
        scores = np.empty((len(users), self.catalog_size), dtype=np.float64)
        scores[:, item_of_internal[1:]] = internal[:, 1 : len(item_of_internal)]
        return scores

    def rank(
        self, users, positions, targets, shown: int, outside: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """(greater, ties) of each example's target over the catalog less `outside` (items outside the
        split's candidates), and its top `shown` items.

        For a model whose outputs do not depend on the padded width (`width_invariant`) the examples
        go through in order of history length, so each batch is cut to a width close to its rows'
        (most users have short histories; one long one in a batch would otherwise pad all of it), and
        the results come back in the examples' order."""
        order = np.arange(len(users))
        if self.params.width_invariant:
            order = np.argsort(np.minimum(positions, self.sequence_width), kind="stable")
        greater = np.empty(len(users), dtype=np.float64)
        ties = np.empty(len(users), dtype=np.float64)
        tops: list[list[int]] = [[] for _ in range(len(users))] if shown else []
        size = self.params.eval_batch_size
        for start in range(0, len(users), size):
            part = order[start : start + size]
            scores = self.catalog_scores(users[part], positions[part])
            seen = None
            if self.params.exclude_seen:
                seen = earlier_items(self.histories, users[part], positions[part])
            leave_out(scores, seen, targets[part], outside)
            greater[part], ties[part] = target_rank_counts(scores, targets[part])
            if shown:
                top = np.argsort(-scores, axis=1, kind="stable")[:, :shown]
                for row, example in enumerate(part.tolist()):
                    tops[example] = top[row].tolist()
        return greater, ties, tops

    def candidate_scores(self, users, positions, candidates: list[list[int]]) -> list[np.ndarray]:
        """Each example's candidates' probabilities under a softmax over the catalog: comparable across
        users, so one threshold can serve them all."""
        out = []
        size = self.params.eval_batch_size
        for start in range(0, len(users), size):
            scores = self.catalog_scores(users[start : start + size], positions[start : start + size])
            scores -= scores.max(axis=1, keepdims=True)
            weights = np.exp(scores)
            probabilities = weights / weights.sum(axis=1, keepdims=True)
            for row, items in enumerate(candidates[start : start + size]):
                out.append(probabilities[row, np.asarray(items, dtype=np.int64)])
        return out
