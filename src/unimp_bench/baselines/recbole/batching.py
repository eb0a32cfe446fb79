"""The optimizer steps of one training epoch of a RecBole model.

A step is RecBole's own batch, or a list of (part, weight): the batch's rows grouped by history length,
each part cut to its longest history, the weights (each part's share of the batch's loss terms) making
the parts' gradients add up to the whole batch's. Our batches are random and seeded by (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from unimp_bench.baselines.recbole.params import RecBoleParams
from unimp_bench.baselines.recbole_objectives import TARGET_SEQUENCE

Step = Any  # a RecBole Interaction, or a list of (Interaction, weight)


def shuffled_batches(rng: np.random.Generator, rows: int, size: int) -> list[np.ndarray]:
    """Row indices 0..rows-1 in a random order, cut into batches of `size`."""
    order = rng.permutation(rows)
    return [order[i : i + size] for i in range(0, rows, size)]


def length_parts(lengths: np.ndarray) -> list[np.ndarray]:
    """The rows of a batch grouped by history length (within a power of two), so each part can be
    cut to its own longest history. Weighted by its share of the batch's loss terms, the parts'
    mean losses add up to the batch's mean loss: the gradient of the whole batch (random, as
    RecBole and the published code draw them) for a fraction of the compute, since a few long
    histories would otherwise pad every row of a batch. Only for models whose outputs do not
    depend on the padded width."""
    classes = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    return [np.flatnonzero(classes == length_class) for length_class in np.unique(classes)]


class TrainBatches:
    """The steps of each epoch for one model: RecBole's loader as it is, its rows in length parts
    (`length_buckets`), or rows we lay out ourselves (`train_rows: sequences` or `windows`, through
    the model's `training_batch`, recbole_objectives)."""

    def __init__(
        self,
        params: RecBoleParams,
        model,
        train_data,
        rb_config,
        users: np.ndarray | None = None,
        sequences: list[np.ndarray] | None = None,
        windows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ):
        self.params = params
        self.model = model
        self.train_data = train_data  # RecBole's loader: its rows, sampler and collate
        self.rb_config = rb_config
        self.users = users  # RecBole ids of the training users with sequence rows
        self.sequences = sequences  # their train items in RecBole ids, chronological
        self.windows = windows  # (inputs, targets, owner row) of window rows

    def epoch(self, epoch: int) -> Iterator[Step]:
        size = self.train_data.step
        if self.params.train_rows == "sequences":
            yield from self.sequence_batches(size, epoch)
        elif self.params.train_rows == "windows":
            yield from self.window_batches(size, epoch)
        elif self.params.length_buckets:
            yield from self.prefix_batches_in_parts(epoch)
        else:
            yield from self.train_data

    def prefix_batches_in_parts(self, epoch: int) -> Iterator[Step]:
        """RecBole's own rows (negatives included) in random batches, each computed in length parts."""
        length_field = self.rb_config["ITEM_LIST_LENGTH_FIELD"]
        sequence_field = self.rb_config["ITEM_ID_FIELD"] + self.rb_config["LIST_SUFFIX"]
        lengths = self.train_data._dataset.inter_feat[length_field].numpy()
        rng = np.random.default_rng([self.params.seed, epoch])
        for rows in shuffled_batches(rng, len(lengths), self.train_data.step):
            batch = self.train_data.collate_fn(rows.tolist())
            row_lengths = batch[length_field].numpy()
            parts = []
            for members in length_parts(row_lengths):
                part = batch[members]
                part[sequence_field] = part[sequence_field][:, : int(row_lengths[members].max())]
                parts.append((part, len(members) / len(row_lengths)))  # RecBole's losses: means over rows
            yield parts

    def sequence_batches(self, size: int, epoch: int) -> Iterator[Step]:
        """One step per random batch of users, seeded by (seed, epoch), in length parts."""
        rng = np.random.default_rng([self.params.seed, epoch])
        for rows in shuffled_batches(rng, len(self.sequences), size):
            yield self.parts_by_width(self.sequence_batch(rng, rows))

    def window_batches(self, size: int, epoch: int) -> Iterator[Step]:
        """One step per random batch of windows (recbole_objectives.sliding_windows), seeded by (seed,
        epoch)."""
        from recbole.data.interaction import Interaction

        inputs, targets, owners = self.windows
        rng = np.random.default_rng([self.params.seed, epoch])
        for rows in shuffled_batches(rng, len(owners), size):
            batch = self.model.training_batch(
                rng,
                [self.sequences[o] for o in owners[rows].tolist()],
                inputs[rows],
                targets[rows],
                self.users[owners[rows]],
                self.params.window_negatives,
            )
            yield [(Interaction({k: torch.as_tensor(v) for k, v in batch.items()}), 1.0)]

    def sequence_batch(self, rng: np.random.Generator, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The users `rows` as one training row each, laid out by the model (recbole_objectives)."""
        return self.model.training_batch(
            rng, [self.sequences[u] for u in rows.tolist()], self.params.max_history
        )

    def parts_by_width(self, batch: dict[str, np.ndarray]) -> list[tuple[Any, float]]:
        """A batch of sequence rows as `length_parts` of their input lengths, each part weighted by its
        share of the batch's target positions (the loss is a mean over positions)."""
        from recbole.data.interaction import Interaction

        lengths = (batch[self.model.ITEM_SEQ] > 0).sum(axis=1)
        counts = (batch[TARGET_SEQUENCE] > 0).sum(axis=1)
        width = batch[TARGET_SEQUENCE].shape[1]
        parts = []
        for members in length_parts(lengths):
            cut = int(lengths[members].max())
            columns = slice(width - cut, width) if self.model.latest_last else slice(0, cut)
            part = Interaction({k: torch.as_tensor(v[members][:, columns]) for k, v in batch.items()})
            parts.append((part, float(counts[members].sum() / counts.sum())))
        return parts
