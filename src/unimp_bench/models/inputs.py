"""Task examples -> model inputs: token ids with loss masks, padded batches and item image features.

Label convention: the logits at position t predict token t+1. `task_mask[t]` marks positions whose
next token belongs to the target (plus the end-of-sequence token); `context_mask[t]` marks positions
whose next token lies inside a history item's span (its attributes and item token; the [IMG] marker
itself is not predicted). Over-long inputs lose tokens from the left, and the images whose [IMG]
markers fell off go with them, so the n-th marker still belongs to the n-th image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unimp_bench.errors import UnimpError
from unimp_bench.models.tokenization import PromptTokenizer


@dataclass(frozen=True)
class EncodedExample:
    ids: list[int]
    task_positions: list[int]  # t such that token t+1 is a target token
    context_positions: list[int]  # t such that token t+1 is a history-item token
    image_items: list[int]  # item of each remaining [IMG] marker, in order
    truncated: bool


def encode_examples(
    tokenizer: PromptTokenizer,
    prompts: Sequence[str],
    image_items: Sequence[Sequence[int]],
    history_spans: Sequence[Sequence[Sequence[int]]],
    targets: Sequence[str] | None,
    max_length: int,
) -> list[EncodedExample]:
    """Encode prompts (and targets followed by EOS, when given) within max_length tokens."""
    encoded_prompts = tokenizer.encode_batch(prompts)
    encoded_targets = tokenizer.encode_batch([f" {t}" for t in targets]) if targets is not None else None
    image_id = tokenizer.vocabulary.image_id
    out = []
    for index, prompt in enumerate(encoded_prompts):
        ids = list(prompt.ids)
        context = np.zeros(len(ids), dtype=bool)  # is token t a history-item token?
        starts = np.asarray(prompt.starts, dtype=np.int64)
        for start, end in history_spans[index]:
            context |= (starts >= start) & (starts < end)
        context &= np.asarray(ids) != image_id
        target_ids: list[int] = []
        if encoded_targets is not None:
            target_ids = encoded_targets[index].ids[: max_length - 2] + [tokenizer.eos_id]
        overflow = len(ids) + len(target_ids) - max_length
        items = list(image_items[index])
        if overflow > 0:
            dropped_markers = sum(1 for token in ids[:overflow] if token == image_id)
            ids, context, items = ids[overflow:], context[overflow:], items[dropped_markers:]
        prompt_length = len(ids)
        ids = ids + target_ids
        task_positions = list(range(prompt_length - 1, len(ids) - 1)) if target_ids else []
        context_positions = (np.flatnonzero(context[1:])).tolist()  # token t+1 in a span -> position t
        out.append(EncodedExample(ids, task_positions, context_positions, items, overflow > 0))
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] long, right-padded
    attention_mask: torch.Tensor  # [B, T] long
    image_items: torch.Tensor  # [B, N] long, -1 for padding
    task_mask: torch.Tensor  # [B, T] bool
    context_mask: torch.Tensor  # [B, T] bool
    next_tokens: torch.Tensor  # [B, T] long: token t+1 (pad at the end)
    last_prompt: torch.Tensor  # [B] long: index of the last prompt token (predicts the first target)
    truncated: int

    def to(self, device) -> Batch:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return Batch(**moved)

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(examples: Sequence[EncodedExample], pad_id: int) -> Batch:
    batch = len(examples)
    length = max(len(e.ids) for e in examples)
    images = max((len(e.image_items) for e in examples), default=0)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    image_items = torch.full((batch, images), -1, dtype=torch.long)
    task_mask = torch.zeros((batch, length), dtype=torch.bool)
    context_mask = torch.zeros((batch, length), dtype=torch.bool)
    last_prompt = torch.zeros(batch, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.ids)
        input_ids[row, :n] = torch.tensor(example.ids)
        attention_mask[row, :n] = 1
        if example.image_items:
            image_items[row, : len(example.image_items)] = torch.tensor(example.image_items)
        task_mask[row, example.task_positions] = True
        context_mask[row, example.context_positions] = True
        last_prompt[row] = example.task_positions[0] if example.task_positions else n - 1
    next_tokens = torch.cat([input_ids[:, 1:], torch.full((batch, 1), pad_id, dtype=torch.long)], dim=1)
    return Batch(
        input_ids,
        attention_mask,
        image_items,
        task_mask,
        context_mask,
        next_tokens,
        last_prompt,
        sum(e.truncated for e in examples),
    )


def catalog_image_paths(dataset) -> list[str | None]:
    """Each item's image path (relative to the dataset folder, None without one), by item_idx."""
    items = dataset.scan("items").select("item_idx", "image_path").sort("item_idx").collect()
    return items["image_path"].to_list()


class ItemImages:
    """Reads and preprocesses catalog images (dataset-relative paths; None = the item has no image)."""

    def __init__(self, root: Path, image_paths: Sequence[str | None], image_size: int):
        from open_clip.transform import image_transform

        self.root = root
        self.paths = list(image_paths)
        self.transform = image_transform(image_size, is_train=False)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def has_image(self) -> torch.Tensor:
        return torch.tensor([p is not None for p in self.paths], dtype=torch.bool)

    def pixels(self, items: Sequence[int]) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        tensors = []
        for item in items:
            relative = self.paths[item]
            if relative is None:
                tensors.append(torch.zeros(3, self.image_size, self.image_size))
                continue
            path = self.root / relative
            try:
                with Image.open(path) as image:
                    tensors.append(self.transform(image.convert("RGB")))
            except (OSError, UnidentifiedImageError):
                raise UnimpError(f"image {path} of item {item} cannot be read") from None
        return torch.stack(tensors)


class ImageFeatureStore:
    """The frozen vision tower's patch tokens per item: precomputed once when they fit the budget,
    otherwise computed for the items of each batch."""

    def __init__(self, model, images: ItemImages, cache_gb: float, batch_size: int = 64, progress=None):
        self.model = model
        self.images = images
        self.present = images.has_image()
        device = next(model.vision.parameters()).device
        with torch.no_grad():
            probe = model.encode_images(images.pixels([0]).to(device))
        self.tokens_shape = tuple(probe.shape[1:])
        size_gb = len(images) * probe[0].numel() * probe.element_size() / 2**30
        self.cached: torch.Tensor | None = None
        if size_gb <= cache_gb:
            self.cached = self._encode(range(len(images)), batch_size, progress)

    def _encode(self, items, batch_size: int, progress=None) -> torch.Tensor:
        device = next(self.model.vision.parameters()).device
        items = list(items)
        chunks = []
        task = progress.add("image features", len(items)) if progress else None
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            chunks.append(self.model.encode_images(self.images.pixels(chunk).to(device)))
            if progress:
                progress.advance(task, len(chunk))
        return torch.cat(chunks)

    def lookup(self, image_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_items [B, N] (-1 = padding) -> features [B, N, P, Dv] and present [B, N]."""
        flat = image_items.reshape(-1).cpu()
        valid = flat >= 0
        safe = flat.clamp(min=0)
        present = (valid & self.present[safe]).view(image_items.shape)
        if self.cached is not None:
            features = self.cached[safe.to(self.cached.device)]
        else:
            unique, inverse = torch.unique(safe, return_inverse=True)
            features = self._encode(unique.tolist(), len(unique))[inverse.to(self.model.added_input.device)]
        return features.view(*image_items.shape, *self.tokens_shape), present.to(features.device)
