"""Reading review files in two passes: keys for every line first, texts only for the lines that survive.

Pass 1 (`read_review_keys`) parses user, item, rating and time of every line; the k-core decides which
lines survive; pass 2 (`read_review_texts`) parses the review text and summary of those lines only, so
memory follows the surviving data, not the raw size. Chunks go through polars' native NDJSON reader;
a chunk it refuses (malformed JSON, wrong types, invalid UTF-8, blank lines) is halved until the bad
lines sit in small spans that are read line by line, so every bad line is counted by reason (with its
line number) and every good line still lands.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from unimp_bench.data.raw_files import (
    RawFile,
    StreamInfo,
    count_lines,
    iter_line_chunks,
    iter_selected_lines,
    split_lines,
)
from unimp_bench.data.rejects import RejectLog


@dataclass(frozen=True)
class ReviewFields:
    user: str
    item: str
    rating: str
    time: str
    text: str
    summary: str
    item_fallback: str | None = None  # 2023: parent_asin groups variants; asin when it is absent
    time_in_ms: bool = False


FIELDS = {
    "2014": ReviewFields("reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary"),
    "2018": ReviewFields("reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary"),
    "2023": ReviewFields("user_id", "parent_asin", "rating", "timestamp", "text", "title", "asin", True),
}

KEY_SCHEMA = {
    "user_id": pl.Categorical,
    "asin": pl.Categorical,
    "rating": pl.Float32,
    "ts_ms": pl.Int64,
    "line": pl.Int64,
}
_RAW_KEY_SCHEMA = {
    "user_id": pl.String,
    "asin": pl.String,
    "rating_raw": pl.Float64,
    "ts_ms": pl.Int64,
    "line": pl.Int64,
}
TEXT_SCHEMA = {"line": pl.Int64, "review_text": pl.String, "summary": pl.String}


def _key_read_schema(fields: ReviewFields) -> dict:
    schema = {
        fields.user: pl.String,
        fields.item: pl.String,
        fields.rating: pl.Float64,
        fields.time: pl.Int64,
    }
    if fields.item_fallback:
        schema[fields.item_fallback] = pl.String
    return schema


def _normalize_keys(frame: pl.DataFrame, fields: ReviewFields, first_line: int) -> pl.DataFrame:
    item = pl.col(fields.item)
    if fields.item_fallback:
        item = pl.coalesce(pl.col(fields.item).replace("", None), pl.col(fields.item_fallback))
    time = pl.col(fields.time) if fields.time_in_ms else pl.col(fields.time) * 1000
    return frame.select(
        pl.col(fields.user).alias("user_id"),
        item.alias("asin"),
        pl.col(fields.rating).alias("rating_raw"),
        time.alias("ts_ms"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_line).alias("line"),
    )


def _reason_expr(fields: ReviewFields) -> pl.Expr:
    """Why a normalized key row is rejected, or null when it is valid."""
    return (
        pl.when(pl.col("user_id").is_null())
        .then(pl.lit(f"missing_field:{fields.user}"))
        .when(pl.col("asin").is_null())
        .then(pl.lit(f"missing_field:{fields.item}"))
        .when(pl.col("rating_raw").is_null())
        .then(pl.lit(f"missing_field:{fields.rating}"))
        .when(pl.col("ts_ms").is_null())
        .then(pl.lit(f"missing_field:{fields.time}"))
        .when((pl.col("user_id").str.strip_chars() == "") | (pl.col("asin").str.strip_chars() == ""))
        .then(pl.lit("empty_id"))
        .when(~pl.col("rating_raw").is_between(1, 5) | pl.col("rating_raw").is_nan())
        .then(pl.lit("rating_out_of_range"))
        .otherwise(None)
    )


def _valid_keys(part: pl.DataFrame, fields: ReviewFields, rejects: RejectLog, file_name: str) -> pl.DataFrame:
    """The valid rows of a parsed span, ids as Categorical (4 bytes a row, as pass 1 holds every
    review's keys); the other rows are counted by reason with their line numbers. One query a span."""
    checked = part.select(
        pl.col("user_id", "asin").cast(pl.Categorical),
        pl.col("rating_raw").cast(pl.Float32).alias("rating"),
        "ts_ms",
        "line",
        _reason_expr(fields).alias("reason"),
    )
    reason = checked.get_column("reason")
    if reason.null_count() < checked.height:
        bad = checked.filter(reason.is_not_null())
        for why, lines in bad.group_by("reason", maintain_order=True).agg(pl.col("line")).iter_rows():
            rejects.add_lines(why, file_name, lines)
        checked = checked.filter(reason.is_null())
    return checked.drop("reason")


def _loads_line(raw: bytes, rejects: RejectLog, file_name: str, line_no: int) -> dict | None:
    if not raw.strip():
        rejects.add("blank_line", file_name, line_no)
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        rejects.add("invalid_utf8", file_name, line_no, f"byte {exc.start}")
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        rejects.add("malformed_json", file_name, line_no, exc.msg)
        return None
    if not isinstance(record, dict):
        rejects.add("not_an_object", file_name, line_no, type(record).__name__)
        return None
    return record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _keys_line_by_line(
    chunk: bytes, first_line: int, fields: ReviewFields, rejects: RejectLog, file_name: str
) -> pl.DataFrame:
    rows: dict[str, list] = {name: [] for name in ("user_id", "asin", "rating_raw", "ts_ms", "line")}
    for offset, raw in enumerate(split_lines(chunk)):
        line_no = first_line + offset
        record = _loads_line(raw, rejects, file_name, line_no)
        if record is None:
            continue
        item = record.get(fields.item)
        if fields.item_fallback and not item:
            item = record.get(fields.item_fallback)
        values = {
            fields.user: record.get(fields.user),
            fields.item: item,
            fields.rating: record.get(fields.rating),
            fields.time: record.get(fields.time),
        }
        wrong = [
            key
            for key, value, ok in (
                (fields.user, values[fields.user], isinstance(values[fields.user], (str, int))),
                (fields.item, item, isinstance(item, str)),
                (fields.rating, values[fields.rating], _is_number(values[fields.rating])),
                (fields.time, values[fields.time], _is_number(values[fields.time])),
            )
            if value is not None and not ok
        ]
        if wrong:
            rejects.add(f"wrong_type:{wrong[0]}", file_name, line_no, repr(values[wrong[0]])[:80])
            continue
        time = values[fields.time]
        if time is not None and (not math.isfinite(time) or time != int(time)):
            rejects.add(f"wrong_type:{fields.time}", file_name, line_no, repr(time)[:80])
            continue
        rows["user_id"].append(None if values[fields.user] is None else str(values[fields.user]))
        rows["asin"].append(item)
        rows["rating_raw"].append(None if values[fields.rating] is None else float(values[fields.rating]))
        rows["ts_ms"].append(None if time is None else int(time) * (1 if fields.time_in_ms else 1000))
        rows["line"].append(line_no)
    return pl.DataFrame(rows, schema=_RAW_KEY_SCHEMA)


SMALLEST_FAST_SPAN = 256  # below this many lines a refused span is read line by line


def _parse_keys(
    span: bytes, first_line: int, fields: ReviewFields, schema: dict, rejects: RejectLog, file_name: str
) -> list[pl.DataFrame]:
    """Parse a span of whole lines natively; if polars refuses it, halve it until the bad lines are
    isolated in small spans that go line by line, so one bad line costs little wherever it is."""
    n_lines = count_lines(span)
    if span.isascii() or _is_utf8(span):
        try:
            parsed = pl.read_ndjson(span, schema=schema)
        except Exception:  # polars raises ComputeError for any bad line
            parsed = None
        if parsed is not None and parsed.height == n_lines:  # fewer rows: it skipped blank lines
            return [_normalize_keys(parsed, fields, first_line)]
    middle = span.find(b"\n", len(span) // 2) + 1
    if middle in (0, len(span)):
        middle = span.rfind(b"\n", 0, len(span) // 2) + 1
    if n_lines <= SMALLEST_FAST_SPAN or middle in (0, len(span)):
        return [_keys_line_by_line(span, first_line, fields, rejects, file_name)]
    head, tail = span[:middle], span[middle:]
    head_lines = head.count(b"\n")
    return _parse_keys(head, first_line, fields, schema, rejects, file_name) + _parse_keys(
        tail, first_line + head_lines, fields, schema, rejects, file_name
    )


def read_review_keys(
    raw: RawFile, rejects: RejectLog, on_bytes: Callable[[int], None] | None = None
) -> tuple[pl.DataFrame, StreamInfo]:
    """Pass 1: user, item (both Categorical), rating, time (ms) and line number of every valid line."""
    fields = FIELDS[raw.release]
    schema = _key_read_schema(fields)
    info = StreamInfo(on_bytes=on_bytes)
    parts = []
    for first_line, chunk in iter_line_chunks(raw.path, info):
        for part in _parse_keys(chunk, first_line, fields, schema, rejects, raw.path.name):
            parts.append(_valid_keys(part, fields, rejects, raw.path.name))
    info.record_damage(rejects, raw.path.name)
    if not parts:
        return pl.DataFrame(schema=KEY_SCHEMA), info
    return pl.concat(parts), info


def _is_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _as_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def read_review_texts(
    raw: RawFile, lines: pl.Series, on_bytes: Callable[[int], None] | None = None
) -> pl.DataFrame:
    """Pass 2: review text and summary of the given (sorted, 1-based) line numbers only."""
    fields = FIELDS[raw.release]
    schema = {fields.text: pl.String, fields.summary: pl.String}
    parts = []
    for picked, selected in iter_selected_lines(raw.path, lines.to_numpy(), on_bytes):
        try:
            parsed = pl.read_ndjson(b"\n".join(selected), schema=schema)
            if parsed.height != len(selected):
                raise ValueError("line count mismatch")
        except Exception:
            records = [json.loads(line.decode("utf-8")) for line in selected]  # lines that passed pass 1
            parsed = pl.DataFrame(
                {
                    fields.text: [_as_text(r.get(fields.text)) for r in records],
                    fields.summary: [_as_text(r.get(fields.summary)) for r in records],
                },
                schema=schema,
            )
        parts.append(
            parsed.select(
                pl.Series("line", picked, dtype=pl.Int64),
                pl.col(fields.text).alias("review_text"),
                pl.col(fields.summary).alias("summary"),
            )
        )
    return pl.concat(parts) if parts else pl.DataFrame(schema=TEXT_SCHEMA)
