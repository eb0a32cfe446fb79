"""Item metadata: find each item's meta line cheaply, then parse and normalize only the items that survive.

Pass A (`index_meta`) reads only the item id of every line with a byte search, so a meta file of millions
of products costs no JSON parsing; pass B (`read_meta`) parses the chosen lines (json for 2018/2023,
ast.literal_eval for the Python-literal 2014 lines; never eval) and normalizes the release differences:
image key variants, price strings, category shapes and HTML entities.
"""

from __future__ import annotations

import ast
import html
import json
import math
import re
from collections.abc import Callable

import numpy as np
import polars as pl

from unimp_bench.data.raw_files import (
    RawFile,
    StreamInfo,
    iter_line_chunks,
    iter_selected_lines,
    line_offsets,
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

_ID_PATTERNS = {
    "2014": re.compile(rb"""['"]asin['"]\s*:\s*['"]([^'"]*)['"]"""),
    "2018": re.compile(rb""""asin"\s*:\s*"([^"]*)\""""),
    "2023": re.compile(rb""""parent_asin"\s*:\s*"([^"]*)\""""),
}
_TAG = re.compile(r"<[^>]*>")
_PRICE = re.compile(r"^\$?\s*(\d[\d,]*(?:\.\d+)?)(?:\s*-\s*\$?\s*\d[\d,]*(?:\.\d+)?)?$")


def _item_ids(chunk: bytes, starts: np.ndarray, release: str) -> tuple[np.ndarray, list[str]]:
    """(line index, item id) of the first id key on each line of a chunk, found by one regex scan."""
    positions, ids = [], []
    for match in _ID_PATTERNS[release].finditer(chunk):
        positions.append(match.start())
        ids.append(match.group(1).decode("utf-8", errors="replace"))
    lines = np.searchsorted(starts, np.asarray(positions, dtype=np.int64), side="right") - 1
    first = np.unique(lines, return_index=True)[1] if len(lines) else np.zeros(0, dtype=np.int64)
    return lines[first], [ids[i] for i in first.tolist()]


def index_meta(
    raw: RawFile, wanted: set[str], rejects: RejectLog, on_bytes: Callable[[int], None] | None = None
) -> tuple[dict[str, int], StreamInfo]:
    """Pass A: line number of the first meta line of each wanted item id."""
    info = StreamInfo(on_bytes=on_bytes)
    first_line_of: dict[str, int] = {}
    for first_line, chunk in iter_line_chunks(raw.path, info):
        starts = line_offsets(chunk)
        lines, ids = _item_ids(chunk, starts, raw.release)
        for line, item in zip((lines + first_line).tolist(), ids):
            if item in wanted:
                if item in first_line_of:
                    rejects.add("duplicate_meta_row", raw.path.name, line, item)
                else:
                    first_line_of[item] = line
        without_id = np.ones(len(starts) - 1, dtype=bool)
        without_id[lines] = False
        for offset in np.flatnonzero(without_id).tolist():
            text = chunk[starts[offset] : starts[offset + 1] - 1]
            if text.strip():
                rejects.add(
                    "meta_without_item_id",
                    raw.path.name,
                    first_line + offset,
                    text[:80].decode("utf-8", "replace"),
                )
    info.record_damage(rejects, raw.path.name)
    return first_line_of, info


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


def _parse_record(line: bytes, release: str) -> dict:
    text = line.decode("utf-8")
    record = ast.literal_eval(text) if release == "2014" else json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"a meta line holds a {type(record).__name__}, not an object")
    return record


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
            except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                rejects.add("malformed_meta_line", raw.path.name, line_no, reason)
                continue
            columns["asin"].append(item_at[line_no])
            for name, value in normalize_meta(record, raw.release).items():
                columns[name].append(value)
    return pl.DataFrame(columns, schema=ITEM_SCHEMA)
