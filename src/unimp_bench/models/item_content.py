"""Content-grounded item rows, the catalog side: every item's chunk tokens, the batches of fresh
chunks a training step encodes with gradient, the (re)computation of the cached catalog content, and
the items a training run saw. The model side is models/item_rows.py.

An item's chunk is its history chunk without the item token: `[IMG] category c title t price p brand b
[EOC]`, cut to `model.item_chunk_tokens` tokens (the words are cut, the [EOC] stays last).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from unimp_bench.prompts import END_OF_CHUNK_TOKEN, IMAGE_TOKEN, PromptSettings, item_attributes

_ITEM_TOKEN = re.compile(r"<item_(\d+)>")


def chunk_text(item: dict, settings: PromptSettings = PromptSettings(), dropped: Collection[int] = ()) -> str:
    """What the model reads of an item: its history chunk without the item's own token (less the
    attributes whose indices are `dropped`, a robustness perturbation)."""
    words = [IMAGE_TOKEN]
    for index, (key, value) in enumerate(item_attributes(item, settings)):
        if index not in dropped:
            words += [key, value]
    return " ".join([*words, END_OF_CHUNK_TOKEN])


@dataclass(frozen=True)
class CatalogChunks:
    ids: torch.Tensor  # [N, C] right-padded chunk token ids of every catalog item, by item_idx
    lengths: torch.Tensor  # [N]

    def select(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """items [M] -> ids [M, C'] and mask [M, C'] (C' the longest of these chunks)."""
        lengths = self.lengths[items.cpu()]
        width = int(lengths.max())
        ids = self.ids[items.cpu(), :width]
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return ids, mask


def catalog_chunks(
    dataset, tokenizer, max_tokens: int, dropped: list[set[int]] | None = None
) -> CatalogChunks:
    """Every item's chunk, tokenized in one batch (tokenizer: a PromptTokenizer; dropped[i]: the
    attribute indices item i's chunk loses, robustness.dropped_catalog_attributes)."""
    rows = dataset.scan("items").sort("item_idx").collect().iter_rows(named=True)
    texts = [chunk_text(row, dropped=dropped[i] if dropped else ()) for i, row in enumerate(rows)]
    encoded = tokenizer.encode_batch(texts)
    end = tokenizer.vocabulary.end_of_chunk_id
    cut = [e.ids if len(e.ids) <= max_tokens else [*e.ids[: max_tokens - 1], end] for e in encoded]
    width = max((len(c) for c in cut), default=1)
    ids = torch.full((len(cut), width), tokenizer.pad_id, dtype=torch.long)
    for row, chunk in enumerate(cut):
        ids[row, : len(chunk)] = torch.tensor(chunk)
    return CatalogChunks(ids, torch.tensor([len(c) for c in cut], dtype=torch.long))


def item_chunks(chunks: CatalogChunks, store, items: torch.Tensor, device, image_of=None):
    """The ItemChunks of `items` [M] (store: the ImageFeatureStore of the catalog's images;
    image_of [N]: which item's image each item is read with, a robustness perturbation)."""
    from unimp_bench.models.item_rows import ItemChunks

    ids, mask = chunks.select(items)
    pictured = items if image_of is None else image_of[items.cpu()]
    features, present = store.lookup(pictured[:, None].to(device))  # [M, 1, P, Dv], [M, 1]
    return ItemChunks(items.to(device), ids.to(device), mask.to(device), features, present)


@torch.no_grad()
def refresh_item_content(
    model, chunks: CatalogChunks, store, step: int, batch_size: int = 256, image_of=None
) -> None:
    """Recompute the cached content vector of every catalog item with the current weights."""
    was_training = model.training
    model.eval()
    device = model.added_output.device
    vectors = []
    # similar lengths together: less padding to compute
    order = torch.argsort(chunks.lengths, stable=True)
    for start in range(0, len(order), batch_size):
        items = order[start : start + batch_size]
        vectors.append(model.encode_items(item_chunks(chunks, store, items, device, image_of)))
    content = torch.cat(vectors)
    model.items.content[order.to(device)] = content.to(model.items.content.dtype)
    model.items.content_step = step
    model.train(was_training)
    if was_training:
        model.vision.eval()  # frozen: stays in evaluation mode whatever the rest does


def catalog_texts_and_images(dataset) -> tuple[list[int], np.ndarray]:
    """How many attributes each item's chunk shows, and whether the item has an image, by item_idx."""
    items = dataset.scan("items").sort("item_idx").collect()
    counts = [len(item_attributes(row)) for row in items.iter_rows(named=True)]
    return counts, items["image_path"].is_not_null().to_numpy()


def encode_catalog(model, dataset, tokenizer, store, step: int = 0, perturbation=None) -> None:
    """Before a model with content rows reads prompts: encode every catalog item (no-op for ID rows).
    perturbation (a robustness.Perturbation, optional): the catalog's share of dropped attributes and
    mismatched images, as `eval --drop-text-attrs / --mismatch-images` ask."""
    if model.items is None:
        return
    dropped = image_of = None
    if perturbation is not None and perturbation.active:
        from unimp_bench.robustness import dropped_catalog_attributes, mismatched_catalog_images

        counts, has_image = catalog_texts_and_images(dataset)
        dropped = dropped_catalog_attributes(counts, perturbation)
        image_of = mismatched_catalog_images(has_image, perturbation)
    chunks = catalog_chunks(dataset, tokenizer, model.config.item_chunk_tokens, dropped)
    image_of = None if image_of is None else torch.as_tensor(image_of, dtype=torch.long)
    refresh_item_content(model, chunks, store, step, image_of=image_of)


def fresh_items(input_ids: torch.Tensor, item_start: int, limit: int) -> torch.Tensor:
    """The distinct items whose tokens occur in a batch [M], at most `limit` of them (a random subset,
    from torch's seeded generator, when there are more)."""
    items = torch.unique(input_ids[input_ids >= item_start]) - item_start
    if len(items) > limit:
        items = items[torch.randperm(len(items))[:limit].to(items.device)].sort().values
    return items


def seen_items(image_items: Iterable[Iterable[int]], targets: Iterable[str], num_items: int) -> torch.Tensor:
    """[num_items] bool: the items a training run reads (every item chunk of a prompt has an image
    slot, so image_items lists them) or predicts (item tokens of the targets)."""
    seen = torch.zeros(num_items, dtype=torch.bool)
    listed = [item for items in image_items for item in items]
    if listed:
        seen[torch.tensor(listed, dtype=torch.long)] = True
    named = [int(match) for target in targets for match in _ITEM_TOKEN.findall(target)]
    if named:
        seen[torch.tensor(named, dtype=torch.long)] = True
    return seen
