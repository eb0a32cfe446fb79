"""Input perturbations of the robustness study (paper Table 6), applied to built examples.

- `drop_text_attrs` f: of all attribute slots (one key/value pair of one item chunk of one prompt;
  history, the item in question and candidates alike) exactly round(f x slots) are removed.
- `mismatch_images` f: of all history image slots (a history item that has an image) exactly
  round(f x slots) show another product's image instead: a different item with an image, drawn
  uniformly. Only the image moves; the item's text stays.

A model with content item rows also reads every item's chunk and image where it computes the item's
rows (the catalog, not a prompt); there the same fractions apply to the catalog: exactly round(f x s)
of the s attribute slots of all items' chunks are removed (`dropped_catalog_attributes`), and exactly
round(f x n) of the n items with an image are encoded from another product's image
(`mismatched_catalog_images`). `catalog_report` counts both.

The slots are drawn over the whole evaluated example set with a generator seeded by `seed`, so the
same examples and seed always give the same perturbed inputs. Items are found in a prompt by their
exact flattened chunk (`[IMG] ... <item_N> [EOC]`), which holds the item's unique token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from unimp_bench.errors import UnimpError
from unimp_bench.prompts import flatten_item


@dataclass(frozen=True)
class Perturbation:
    drop_text_attrs: float = 0.0
    mismatch_images: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_text_attrs", "mismatch_images"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UnimpError(
                    f"--{name.replace('_', '-')} must be a fraction between 0 and 1, got {value}"
                )

    @property
    def active(self) -> bool:
        return self.drop_text_attrs > 0 or self.mismatch_images > 0

    def tag(self) -> str:
        """Suffix for method names, e.g. '+drop_text_0.2+mismatch_images_0.2' ('' when inactive)."""
        parts = []
        if self.drop_text_attrs > 0:
            parts.append(f"+drop_text_{self.drop_text_attrs:g}")
        if self.mismatch_images > 0:
            parts.append(f"+mismatch_images_{self.mismatch_images:g}")
        return "".join(parts)


@dataclass
class _Chunk:
    row: int
    item: int
    start: int  # character span of the chunk in the original prompt
    end: int
    in_history: bool
    marker: int  # index of its [IMG] marker in the example's image_items


def _locate_chunks(
    prompts: list[str], image_items: list[list[int]], spans: list[list[list[int]]], flat: list[str]
) -> list[list[_Chunk]]:
    """Each example's item chunks in prompt order (the order of its image_items)."""
    located = []
    for row, (prompt, items) in enumerate(zip(prompts, image_items)):
        cursor, chunks = 0, []
        history = {(int(s), int(e)) for s, e in spans[row]}
        for marker, item in enumerate(items):
            start = prompt.find(flat[item], cursor)
            if start < 0:
                raise UnimpError(
                    f"example {row}: the text of item {item} is not in its prompt; were the examples "
                    "built with other prompt settings than this dataset's?"
                )
            end = start + len(flat[item])
            chunks.append(_Chunk(row, item, start, end, (start, end) in history, marker))
            cursor = end
        located.append(chunks)
    return located


def perturb(
    examples: pl.DataFrame,
    attributes: list[list[tuple[str, str]]],
    has_image: np.ndarray,
    settings: Perturbation,
) -> tuple[pl.DataFrame, dict]:
    """The examples with perturbed `prompt`, `history_spans` and `image_items`, and what was changed.

    attributes[i]: item i's (key, value) pairs as its chunk shows them; has_image[i]: item i has an image.
    """
    report = {"seed": settings.seed, "drop_text_attrs": settings.drop_text_attrs}
    report["mismatch_images"] = settings.mismatch_images
    if not settings.active:
        return examples, report
    flat = [flatten_item(item, pairs) for item, pairs in enumerate(attributes)]
    prompts = examples["prompt"].to_list()
    image_items = [list(items) for items in examples["image_items"].to_list()]
    spans = examples["history_spans"].to_list()
    chunks = _locate_chunks(prompts, image_items, spans, flat)

    # text: choose exactly round(f x slots) (chunk, attribute) slots over all examples
    slots = [
        (row, c, a)
        for row, row_chunks in enumerate(chunks)
        for c, chunk in enumerate(row_chunks)
        for a in range(len(attributes[chunk.item]))
    ]
    drop = _choose(len(slots), settings.drop_text_attrs, np.random.default_rng([settings.seed, 1]))
    report |= {"attribute_slots": len(slots), "dropped_attributes": len(drop)}
    dropped: dict[tuple[int, int], set[int]] = {}
    for index in drop:
        row, c, a = slots[index]
        dropped.setdefault((row, c), set()).add(a)
    changed_rows = sorted({row for row, _ in dropped})
    for row in changed_rows:
        prompts[row], spans[row] = _rewrite(prompts[row], chunks[row], attributes, dropped, row)

    # images: choose exactly round(f x slots) history markers whose item has an image
    image_slots = [
        (row, chunk.marker)
        for row, row_chunks in enumerate(chunks)
        for chunk in row_chunks
        if chunk.in_history and has_image[chunk.item]
    ]
    rng = np.random.default_rng([settings.seed, 2])
    swap = _choose(len(image_slots), settings.mismatch_images, rng)
    with_image = _images_to_swap_with(has_image, swap)
    for index in swap:
        row, marker = image_slots[index]
        image_items[row][marker] = _another_image(image_items[row][marker], with_image, rng)
    report |= {"history_image_slots": len(image_slots), "swapped_images": len(swap)}
    perturbed = examples.with_columns(
        pl.Series("prompt", prompts, dtype=pl.String),
        pl.Series("image_items", image_items, dtype=examples.schema["image_items"]),
        pl.Series("history_spans", spans, dtype=examples.schema["history_spans"]),
    )
    return perturbed, report


def mismatched_catalog_images(has_image: np.ndarray, settings: Perturbation) -> np.ndarray | None:
    """For models whose item rows are computed from the item's image (content rows): which item's
    image each catalog item is encoded with, exactly round(f x n) of the n items with an image showing
    another product's; None when images are not mismatched."""
    if settings.mismatch_images == 0:
        return None
    rng = np.random.default_rng([settings.seed, 3])
    image_of = np.arange(len(has_image))
    chosen = _choose(int(has_image.sum()), settings.mismatch_images, rng)
    with_image = _images_to_swap_with(has_image, chosen)
    for index in chosen:
        original = int(with_image[index])
        image_of[original] = _another_image(original, with_image, rng)
    return image_of


def dropped_catalog_attributes(attribute_counts: list[int], settings: Perturbation) -> list[set[int]] | None:
    """For models whose item rows are computed from the item's chunk (content rows): which attribute
    indices each catalog item's chunk loses, exactly round(f x s) of all s slots; None when no text is
    dropped. attribute_counts[i]: how many (key, value) pairs item i's chunk shows."""
    if settings.drop_text_attrs == 0:
        return None
    slots = [(item, a) for item, count in enumerate(attribute_counts) for a in range(count)]
    dropped: list[set[int]] = [set() for _ in attribute_counts]
    for index in _choose(len(slots), settings.drop_text_attrs, np.random.default_rng([settings.seed, 4])):
        item, a = slots[index]
        dropped[item].add(a)
    return dropped


def catalog_report(attribute_counts: list[int], has_image: np.ndarray, settings: Perturbation) -> dict:
    """What the two catalog perturbations change, as counts (empty when neither is active)."""
    report = {}
    if settings.drop_text_attrs > 0:
        slots = int(sum(attribute_counts))
        report["catalog_attribute_slots"] = slots
        report["catalog_attributes_dropped"] = int(round(settings.drop_text_attrs * slots))
    if settings.mismatch_images > 0:
        report["catalog_images_swapped"] = int(round(settings.mismatch_images * int(has_image.sum())))
    return report


def _images_to_swap_with(has_image: np.ndarray, swaps: list[int]) -> np.ndarray:
    """The items with an image (what a swapped slot may show instead); swapping needs two."""
    with_image = np.flatnonzero(has_image)
    if swaps and len(with_image) < 2:
        raise UnimpError("--mismatch-images needs at least two items with images")
    return with_image


def _another_image(original: int, with_image: np.ndarray, rng: np.random.Generator) -> int:
    """A uniformly drawn item with an image other than `original`."""
    replacement = original
    while replacement == original:
        replacement = int(with_image[rng.integers(len(with_image))])
    return replacement


def _choose(count: int, fraction: float, rng: np.random.Generator) -> list[int]:
    chosen = int(round(fraction * count))
    return sorted(rng.choice(count, size=chosen, replace=False).tolist()) if chosen else []


def _rewrite(prompt, row_chunks, attributes, dropped, row) -> tuple[str, list[list[int]]]:
    """The prompt with the dropped attributes removed from its chunks, and its new history spans."""
    pieces, cursor, spans = [], 0, []
    length = 0
    for c, chunk in enumerate(row_chunks):
        before = prompt[cursor : chunk.start]
        pieces.append(before)
        length += len(before)
        removed = dropped.get((row, c), set())
        kept = [pair for a, pair in enumerate(attributes[chunk.item]) if a not in removed]
        text = flatten_item(chunk.item, kept)
        if chunk.in_history:
            spans.append([length, length + len(text)])
        pieces.append(text)
        length += len(text)
        cursor = chunk.end
    pieces.append(prompt[cursor:])
    return "".join(pieces), spans
