"""Content-grounded item rows (`model.items: content | content+id`), the model side.

With `model.items: id` (the paper's item tokens) an item's input and output rows are free parameters
(the item slice of UniMP's added rows), learned from co-occurrence alone: an item never met in training
keeps its random initial rows. With content rows, an item's rows are computed from what the item IS:

    content_i = UniMP's own last hidden state at the [EOC] of the item's chunk
                `[IMG] category c title t price p brand b [EOC]` (no item token), which cross-attends to
                the item's image like any history item does                                   [H]
    input row  = to_input(content_i)  (+ keep_i * id_input_i   for content+id)                    [H]
    output row = to_output(content_i) (+ keep_i * id_output_i  for content+id)                    [H]

The ID residual (the item slice of the added rows, started at 0) is dropped per item with probability
`model.item_id_dropout` during training, so the content path must carry signal on its own; at
evaluation keep_i is 1 for items seen in training and 0 for every other item (a held-out domain's
catalog, cold items), which are ranked from their content alone.

Encoding the whole catalog at every step would cost a catalog-sized forward pass, so the content
vectors live in a cache (`content`, filled by models/item_content.py and refreshed on a schedule by
the trainer); a training forward pass encodes the items its batch holds afresh, and those encodings
carry the gradient while every row keeps its cached value (all rows are equally old, so a row's
freshness never tells the target apart). Ranking stays one forward pass plus a matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ItemChunks:
    """Items to encode with gradient in one forward pass, with their chunk tokens and image."""

    items: torch.Tensor  # [M] item indices
    ids: torch.Tensor  # [M, C] right-padded chunk token ids
    mask: torch.Tensor  # [M, C] 1 for real tokens
    features: torch.Tensor  # [M, 1, P, Dv] the frozen tower's patch tokens of each item's image
    present: torch.Tensor  # [M, 1] bool: the item has an image


@dataclass(frozen=True)
class ItemView:
    """The item rows' ingredients for one forward pass."""

    content: torch.Tensor  # [N, H] cached content vectors, the batch's items freshly encoded
    keep: torch.Tensor  # [N] weight of each item's ID residual (0 = content only)


class ContentItems(nn.Module):
    """The projections from content vectors to item rows, which items were seen in training, and the
    cache of the catalog's content vectors."""

    def __init__(
        self,
        hidden: int,
        num_items: int,
        uses_id: bool,
        id_dropout: float,
        input_std: float,
        output_std: float,
    ):
        super().__init__()
        self.uses_id = uses_id
        self.id_dropout = id_dropout
        self.to_input = nn.Linear(hidden, hidden, bias=False)
        self.to_output = nn.Linear(hidden, hidden, bias=False)
        # a content vector is a final hidden state (about unit scale per feature): start its rows at
        # the scale of the LM's own input and output rows
        nn.init.normal_(self.to_input.weight, std=input_std / math.sqrt(hidden))
        nn.init.normal_(self.to_output.weight, std=output_std / math.sqrt(hidden))
        # which items met a training example: written by the trainer, exported with the weights
        self.register_buffer("seen", torch.zeros(num_items, dtype=torch.bool))
        # the catalog's content vectors: computed from the weights, so never saved
        self.register_buffer("content", torch.zeros(num_items, hidden), persistent=False)
        self.content_step: int | None = None  # the training step the cache was computed at

    def view(self, fresh: tuple[torch.Tensor, torch.Tensor] | None) -> ItemView:
        """fresh: (items [M], content [M, H]) that replace the cached rows (and carry the gradient)."""
        if self.content_step is None:
            raise RuntimeError("the catalog's item content was never computed (refresh_item_content)")
        content = self.content
        if fresh is not None:
            # the VALUE of every row stays the cached one and only the gradient goes through the fresh
            # encoding (straight-through): were the batch's items (the target always among them) fresh
            # and the rest stale, the model could learn to tell a target by its freshness, and at
            # evaluation, where every row is fresh, that cue would point at every item at once
            items, vectors = fresh
            content = content.to(vectors.dtype)
            cached = content[items]
            content = content.index_copy(0, items, cached + (vectors - vectors.detach()))
        if not self.uses_id:
            keep = content.new_zeros(content.shape[0])
        elif self.training and self.id_dropout > 0:
            kept = torch.rand(content.shape[0], device=content.device) >= self.id_dropout
            keep = kept.to(content.dtype) / (1.0 - self.id_dropout)
        else:
            keep = self.seen.to(content.dtype)
        return ItemView(content, keep)

    def input_rows(self, view: ItemView, items: torch.Tensor, id_rows: torch.Tensor) -> torch.Tensor:
        """items [K] -> their input rows [K, H]; id_rows [N, H] the ID residuals."""
        rows = self.to_input(view.content[items].to(self.to_input.weight.dtype))
        return rows + view.keep[items, None].to(rows.dtype) * id_rows[items].to(rows.dtype)

    def logits(self, view: ItemView, hidden: torch.Tensor, id_rows: torch.Tensor) -> torch.Tensor:
        """hidden [S, H] -> item logits [S, N]. Output row i is W c_i (+ keep_i * id_i), so
        h . row_i = (h W) . c_i: the catalog is never projected, the hidden states are."""
        projected = hidden @ self.to_output.weight.to(hidden.dtype)  # [S, H]
        content_part = projected @ view.content.to(hidden.dtype).T  # [S, N]
        id_part = (hidden @ id_rows.to(hidden.dtype).T) * view.keep.to(hidden.dtype)
        return content_part + id_part
