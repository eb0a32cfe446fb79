"""Item metadata: find each item's meta line, then parse and normalize only the items that survive.

Pass A (`index_meta`) finds the top-level item id of every line exactly as a full parse of the line
would: for the JSON releases (2018 `asin`, 2023 `parent_asin`) polars reads only that key natively,
with json_lines' exactness rules (escapes decoded, nested keys ignored, a non-string id is
`wrong_type`, a malformed line is counted and never indexed); for the Python-literal 2014 lines a
byte search finds the lines that may hold a wanted id, and those lines (and any line where the search
finds no id at all, or an id written with escapes) are parsed with ast.literal_eval (never eval), so
a nested `'asin'`, a malformed earlier line or an escaped id cannot misplace an item. (One case is
left to the search: a 2014 line whose top-level key itself is written with escapes and that also
holds a nested `'asin'` of an item nobody reviewed.) The first valid line of an item wins; later ones
are `duplicate_meta_row`. Pass B (`read_meta`) parses the chosen lines and normalizes the release
differences: image key variants, price strings, category shapes and HTML entities.
"""

from __future__ import annotations

import ast
import html
import math
import re
from collections.abc import Callable

import numpy as np
import polars as pl

from unimp_bench.data.json_lines import loads_object, parse_in_halves, read_native
from unimp_bench.data.raw_files import (
    RawFile,
    StreamInfo,
    iter_line_chunks,
    iter_selected_lines,
    line_offsets,
    split_lines,
)
from unimp_bench.data.rejects import RejectLog

ITEM_SCHEMA = {
    "asin": pl.String,
    "title": pl.String,
    "brand": pl.String,
    "price": pl.Float64,
    "categories": pl.List(pl.String),
    "description": pl.String,
    "image_url": pl.String,
}

ID_KEY = {"2014": "asin", "2018": "asin", "2023": "parent_asin"}
# a 2014 (Python-literal) `'asin': '...'` or `"asin": "..."` anywhere on a line, escapes allowed
_ID_2014 = re.compile(rb"""['"]asin['"]\s*:\s*(?:'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)")""")
_TAG = re.compile(r"<[^>]*>")
_PRICE = re.compile(r"^\$?\s*(\d[\d,]*(?:\.\d+)?)(?:\s*-\s*\$?\s*\d[\d,]*(?:\.\d+)?)?$")


def _parse_record(line: bytes, release: str) -> dict:
    text = line.decode("utf-8")
    try:
        record = ast.literal_eval(text) if release == "2014" else loads_object(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except TypeError as exc:
        raise ValueError(f"a meta line holds a {exc}, not an object") from None
    if not isinstance(record, dict):
        raise ValueError(f"a meta line holds a {type(record).__name__}, not an object")
    return record


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class _Index:
    """The first valid line of each wanted item, with every other line counted by what it is."""

    def __init__(self, raw: RawFile, wanted: set[str], rejects: RejectLog):
        self.raw, self.wanted, self.rejects = raw, wanted, rejects
        self.key = ID_KEY[raw.release]
        self.first_line_of: dict[str, int] = {}

    def found(self, line: int, item) -> None:
        """A line whose record parsed: index its top-level id, or count why it has none."""
        if item is None or item == "":
            self.rejects.add("meta_without_item_id", self.raw.path.name, line)
        elif not isinstance(item, str):
            self.rejects.add(f"wrong_type:{self.key}", self.raw.path.name, line, repr(item)[:80])
        elif item in self.wanted:
            if item in self.first_line_of:
                self.rejects.add("duplicate_meta_row", self.raw.path.name, line, item)
            else:
                self.first_line_of[item] = line

    def parse(self, line: int, text: bytes) -> None:
        """A line parsed in full here (Python, not polars)."""
        if not text.strip():
            return
        try:
            record = _parse_record(text, self.raw.release)
        except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError) as exc:
            self.rejects.add("malformed_meta_line", self.raw.path.name, line, _reason(exc))
            return
        self.found(line, record.get(self.key))

    def json_chunk(self, chunk: bytes, first_line: int) -> None:
        schema = {self.key: pl.String}

        def native(span: bytes, first: int) -> pl.DataFrame | None:
            parsed = read_native(span, schema, (self.key,))
            if parsed is None:
                return None
            # a set lookup a line: polars' is_in would hash every wanted id again for each span
            wanted = self.wanted
            for line, item in enumerate(parsed.get_column(self.key).to_list(), start=first):
                if item is None or item in wanted:
                    self.found(line, item)
            return parsed.head(0)

        def by_line(span: bytes, first: int) -> pl.DataFrame:
            for offset, text in enumerate(split_lines(span)):
                self.parse(first + offset, text)
            return pl.DataFrame()

        parse_in_halves(chunk, first_line, native, by_line)

    def literal_chunk(self, chunk: bytes, first_line: int) -> None:
        """2014: parse the lines the byte search ties to a wanted id, or to no plain id at all."""
        starts = line_offsets(chunk)
        chosen: set[int] = set()
        matched = np.zeros(len(starts) - 1, dtype=bool)
        for match in _ID_2014.finditer(chunk):
            offset = int(np.searchsorted(starts, match.start(), side="right")) - 1
            matched[offset] = True
            value = match.group(1) if match.group(1) is not None else match.group(2)
            if b"\\" in value or value.decode("utf-8", "replace") in self.wanted:
                chosen.add(offset)
        chosen.update(np.flatnonzero(~matched).tolist())
        for offset in sorted(chosen):
            self.parse(first_line + offset, chunk[starts[offset] : starts[offset + 1] - 1])


def index_meta(
    raw: RawFile, wanted: set[str], rejects: RejectLog, on_bytes: Callable[[int], None] | None = None
) -> tuple[dict[str, int], StreamInfo]:
    """Pass A: line number of the first valid meta line of each wanted item id."""
    info = StreamInfo(on_bytes=on_bytes)
    index = _Index(raw, wanted, rejects)
    for first_line, chunk in iter_line_chunks(raw.path, info):
        if raw.release == "2014":
            index.literal_chunk(chunk, first_line)
        else:
            index.json_chunk(chunk, first_line)
    info.record_damage(rejects, raw.path.name)
    return index.first_line_of, info


def clean_text(value) -> str | None:
    """Unescape HTML entities, drop tags, collapse whitespace; None for empty or non-text values."""
    if isinstance(value, list):
        value = " ".join(v for v in value if isinstance(v, str))
    if not isinstance(value, str):
        return None
    if "&" in value:
        value = html.unescape(value)
    if "<" in value:
        value = _TAG.sub(" ", value)
    return " ".join(value.split()) or None


def parse_price(value) -> float | None:
    """ "$12.99" -> 12.99; a range "$5.00 - $10.00" -> its lower bound 5.0; "", text or junk -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _PRICE.match(value.strip())
    return float(match.group(1).replace(",", "")) if match else None


def _categories(record: dict, release: str) -> list[str]:
    if release == "2014":
        paths = record.get("categories")
        raw = paths[0] if isinstance(paths, list) and paths and isinstance(paths[0], list) else []
    elif release == "2018":
        raw = record.get("category") or []
    else:
        raw = record.get("categories") or []
        if not raw and isinstance(record.get("main_category"), str):
            raw = [record["main_category"]]
    cleaned: list[str] = []
    for value in raw if isinstance(raw, list) else []:
        text = clean_text(value) if isinstance(value, str) and "<" not in value else None
        if text and text not in cleaned:
            cleaned.append(text)
    return cleaned


def _image_url(record: dict, release: str) -> str | None:
    if release == "2023":
        images = [im for im in record.get("images") or [] if isinstance(im, dict)]
        images.sort(key=lambda im: im.get("variant") != "MAIN")
        for image in images:
            for key in ("hi_res", "large", "thumb"):
                if isinstance(image.get(key), str) and image[key].startswith(("http://", "https://")):
                    return image[key]
        return None
    for key in ("imUrl", "imageURLHighRes", "imageURL", "image"):
        value = record.get(key)
        candidates = value if isinstance(value, list) else [value]
        for url in candidates:
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                return url
    return None


def _brand(record: dict, release: str) -> str | None:
    if release == "2023":
        details = record.get("details") if isinstance(record.get("details"), dict) else {}
        return clean_text(record.get("store")) or clean_text(details.get("Brand"))
    return clean_text(record.get("brand"))


def normalize_meta(record: dict, release: str) -> dict:
    return {
        "title": clean_text(record.get("title")),
        "brand": _brand(record, release),
        "price": parse_price(record.get("price")),
        "categories": _categories(record, release),
        "description": clean_text(record.get("description")),
        "image_url": _image_url(record, release),
    }


def read_meta(
    raw: RawFile, line_of: dict[str, int], rejects: RejectLog, on_bytes: Callable[[int], None] | None = None
) -> pl.DataFrame:
    """Pass B: normalized metadata of the items at the given line numbers."""
    item_at = {line: item for item, line in line_of.items()}
    columns: dict[str, list] = {name: [] for name in ITEM_SCHEMA}
    wanted = np.array(sorted(item_at), dtype=np.int64)
    for picked, selected in iter_selected_lines(raw.path, wanted, on_bytes):
        for line_no, line in zip(picked.tolist(), selected):
            try:
                record = _parse_record(line, raw.release)
            except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError) as exc:  # parsed in pass A
                rejects.add("malformed_meta_line", raw.path.name, line_no, _reason(exc))
                continue
            columns["asin"].append(item_at[line_no])
            for name, value in normalize_meta(record, raw.release).items():
                columns[name].append(value)
    return pl.DataFrame(columns, schema=ITEM_SCHEMA)
