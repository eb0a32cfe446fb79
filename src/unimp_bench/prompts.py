"""The unified input format: items and user histories flattened into one text with special tokens.

An item becomes ``[IMG] category <c> title <t> price <p> brand <b> <item_N> [EOC]``: the image
placeholder (the model attends to the item's image there), the known attributes as key/value words,
the item's own token last, then the end-of-chunk marker. A missing attribute is left out, never
written as "None". A user becomes ``[CLS]`` followed by the flattened items of their last
`max_history` interactions before the target, oldest first.

Every history item's character span in the final prompt is returned too, so a trainer can put the
context-reconstruction loss on exactly those characters.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from unimp_bench.data.meta import clean_text as clean_field

IMAGE_TOKEN = "[IMG]"
END_OF_CHUNK_TOKEN = "[EOC]"
USER_TOKEN = "[CLS]"
ITEM_KEYS = ("category", "title", "price", "brand")


def item_token(item_idx: int) -> str:
    return f"<item_{item_idx}>"


def image_code_text(codes) -> str:
    """An image as the model writes it: its tokenizer's codes, row-major over the grid."""
    return " ".join(f"<code_{int(c)}>" for c in codes)


def rating_token(rating: float) -> str:
    return f"<rating_{int(round(rating))}>"


def clean_text(text: str | None, max_words: int | None = None) -> str:
    """The meta normalization of `prepare` (HTML entities decoded, tags removed, whitespace
    collapsed), "" for nothing, optionally capped at max_words."""
    cleaned = clean_field(text) or ""
    if max_words is not None:
        cleaned = " ".join(cleaned.split(" ")[:max_words])
    return cleaned


def most_specific_category(categories: Sequence[str] | None) -> str | None:
    """The last non-empty category of the path (paths run from the domain down to the leaf)."""
    for category in reversed(categories or ()):
        cleaned = clean_text(category)
        if cleaned:
            return cleaned
    return None


@dataclass(frozen=True)
class PromptSettings:
    max_value_words: int = 24  # attribute values (titles mostly) are capped so histories stay short


def item_attributes(item: Mapping, settings: PromptSettings = PromptSettings()) -> list[tuple[str, str]]:
    """The (key, value) pairs of an item row in ITEM_KEYS order; unknown values are left out."""
    values = {
        "category": most_specific_category(item.get("categories")),
        "title": clean_text(item.get("title"), settings.max_value_words),
        "price": f"{item['price']:.2f}" if item.get("price") is not None else None,
        "brand": clean_text(item.get("brand"), settings.max_value_words),
    }
    return [(key, values[key]) for key in ITEM_KEYS if values[key]]


def flatten_item(item_idx: int, attributes: Sequence[tuple[str, str]]) -> str:
    words = [IMAGE_TOKEN]
    for key, value in attributes:
        words += [key, value]
    words += [item_token(item_idx), END_OF_CHUNK_TOKEN]
    return " ".join(words)


def flatten_history(flat_items: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """`[CLS] item1 item2 ...` and each item's (start, end) character span within that text."""
    text = USER_TOKEN
    spans = []
    for flat in flat_items:
        start = len(text) + 1
        text = f"{text} {flat}"
        spans.append((start, len(text)))
    return text, spans


@dataclass(frozen=True)
class Segment:
    """Text filling one template placeholder, the items whose [IMG] markers it holds (in order) and,
    for the history, each item's character span within the text."""

    text: str
    image_items: tuple[int, ...] = ()
    spans: tuple[tuple[int, int], ...] = ()


def item_segment(flat_items: Mapping[int, str], items: Sequence[int]) -> Segment:
    return Segment(" ".join(flat_items[i] for i in items), tuple(items))


def history_segment(flat_items: Mapping[int, str], items: Sequence[int]) -> Segment:
    text, spans = flatten_history([flat_items[i] for i in items])
    return Segment(text, tuple(items), tuple(spans))


@dataclass(frozen=True)
class Prompt:
    text: str
    image_items: tuple[int, ...]  # item of each [IMG] marker, in the order the markers appear
    history_spans: tuple[tuple[int, int], ...]  # character span of each history item in `text`


@functools.cache
def template_parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """(literal text, placeholder or None) pairs of an instruction template, parsed once per template.
    Raises ValueError for a malformed template."""
    return tuple(
        (literal, field) for literal, field, _spec, _conversion in string.Formatter().parse(template)
    )


def render(template: str, segments: Mapping[str, Segment]) -> Prompt:
    """Fill an instruction template from its segments, tracking where the history items land."""
    pieces: list[str] = []
    image_items: list[int] = []
    history_spans: list[tuple[int, int]] = []
    length = 0
    for literal, field in template_parts(template):
        pieces.append(literal)
        length += len(literal)
        if field is None:
            continue
        segment = segments[field]
        if field == "history":
            history_spans += [(start + length, end + length) for start, end in segment.spans]
        image_items += segment.image_items
        pieces.append(segment.text)
        length += len(segment.text)
    return Prompt("".join(pieces), tuple(image_items), tuple(history_spans))
