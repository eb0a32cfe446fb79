"""Reading review files: keys for every line, texts kept on disk and read back for the survivors only.

`read_review_keys` parses user, item, rating, time, review text and summary of every line; it keeps
the keys (and a hash of the texts) in memory and, given a `TextSpill`, appends the texts of the
valid lines to a file on disk as it goes. The k-core then decides which lines survive, and
`TextSpill.copy` writes the texts of those lines only, batch by batch, to the domain's texts file,
so memory follows the surviving data, not the raw size, and the raw file is inflated and parsed
once. Chunks go through polars' native NDJSON reader; a chunk it refuses (malformed JSON, wrong
types, invalid UTF-8, blank lines) is halved until the bad lines sit in small spans that are read
line by line, so every bad line is counted by reason (with its line number) and every good line
still lands.

Types do not depend on neighbouring lines: polars would turn any JSON value into a string column's
text (a list `["B00"]`, `true`), so a span is accepted natively only when every id key in it holds a
JSON string (or null); otherwise it takes the same halving path, where a field of the wrong JSON type
is `wrong_type:<field>`. Times are checked in the file's own unit before conversion to milliseconds
(`timestamp_out_of_range` outside 1990-2100), ratings outside 1-5 are `rating_out_of_range`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from unimp_bench.data.json_lines import loads_object, parse_in_halves, read_native
from unimp_bench.data.raw_files import RawFile, StreamInfo, iter_line_chunks, split_lines
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

    @property
    def id_fields(self) -> tuple[str, ...]:
        return (self.user, self.item) + ((self.item_fallback,) if self.item_fallback else ())

    @property
    def time_scale(self) -> int:
        """Milliseconds per unit of the file's time field."""
        return 1 if self.time_in_ms else 1000


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
    "text_key": pl.UInt64,  # hash of (review text, summary); null when both are empty
    "line": pl.Int64,
}
_RAW_KEY_SCHEMA = {
    "user_id": pl.String,
    "asin": pl.String,
    "rating_raw": pl.Float64,
    "ts_raw": pl.Int64,  # in the file's unit (seconds, or milliseconds for 2023)
    "text_raw": pl.String,
    "summary_raw": pl.String,
    "line": pl.Int64,
}
# review times accepted, in seconds: Amazon's first reviews are from 1995; later than 2100 is a bug
TIME_RANGE_S = (631_152_000, 4_102_444_800)  # 1990-01-01 .. 2100-01-01 UTC
_INT64_MAX = 2**63 - 1


def _key_read_schema(fields: ReviewFields) -> dict:
    schema = {
        fields.user: pl.String,
        fields.item: pl.String,
        fields.rating: pl.Float64,
        fields.time: pl.Int64,
    }
    if fields.item_fallback:
        schema[fields.item_fallback] = pl.String
    return schema | {fields.text: pl.String, fields.summary: pl.String}


def _normalize_keys(frame: pl.DataFrame, fields: ReviewFields, first_line: int) -> pl.DataFrame:
    item = pl.col(fields.item)
    if fields.item_fallback:
        item = pl.coalesce(pl.col(fields.item).replace("", None), pl.col(fields.item_fallback))
    return frame.select(
        pl.col(fields.user).alias("user_id"),
        item.alias("asin"),
        pl.col(fields.rating).alias("rating_raw"),
        pl.col(fields.time).alias("ts_raw"),
        pl.col(fields.text).alias("text_raw"),
        pl.col(fields.summary).alias("summary_raw"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_line).alias("line"),
    )


def _text_key() -> pl.Expr:
    """A 64-bit hash of (review text, summary), what tells a copy of a review apart from another review
    of the same user and time (only the hash stays in memory, never the texts); null when both are
    empty, so rating-only reviews are never taken for copies of each other. The two texts are hashed
    apart with different seeds and combined, which costs a quarter of hashing them joined."""
    text, summary = pl.col("text_raw").fill_null(""), pl.col("summary_raw").fill_null("")
    both = text.hash(seed=15) ^ summary.hash(seed=16)
    return pl.when((text != "") | (summary != "")).then(both).otherwise(None)


def _reason_expr(fields: ReviewFields) -> pl.Expr:
    """Why a normalized key row is rejected, or null when it is valid."""
    low, high = (bound * 1000 // fields.time_scale for bound in TIME_RANGE_S)  # in the file's unit
    return (
        pl.when(pl.col("user_id").is_null())
        .then(pl.lit(f"missing_field:{fields.user}"))
        .when(pl.col("asin").is_null())
        .then(pl.lit(f"missing_field:{fields.item}"))
        .when(pl.col("rating_raw").is_null())
        .then(pl.lit(f"missing_field:{fields.rating}"))
        .when(pl.col("ts_raw").is_null())
        .then(pl.lit(f"missing_field:{fields.time}"))
        .when((pl.col("user_id").str.strip_chars() == "") | (pl.col("asin").str.strip_chars() == ""))
        .then(pl.lit("empty_id"))
        .when(~pl.col("rating_raw").is_between(1, 5) | pl.col("rating_raw").is_nan())
        .then(pl.lit("rating_out_of_range"))
        .when(~pl.col("ts_raw").is_between(low, high, closed="left"))
        .then(pl.lit("timestamp_out_of_range"))
        .otherwise(None)
    )


def _valid_keys(
    part: pl.DataFrame, fields: ReviewFields, rejects: RejectLog, file_name: str, texts: bool
) -> pl.DataFrame:
    """The valid rows of a parsed span, ids as Categorical (4 bytes a row, as pass 1 holds every
    review's keys), plus `review_text` and `summary` when `texts`; the other rows are counted by
    reason with their line numbers. One query a span."""
    checked = part.select(
        pl.col("user_id", "asin").cast(pl.Categorical),
        pl.col("rating_raw").cast(pl.Float32).alias("rating"),
        (pl.col("ts_raw") * fields.time_scale).alias("ts_ms"),  # in range, so no overflow
        _text_key().alias("text_key"),
        "line",
        _reason_expr(fields).alias("reason"),
        *([pl.col("text_raw").alias("review_text"), pl.col("summary_raw").alias("summary")] if texts else []),
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
        return loads_object(text)
    except json.JSONDecodeError as exc:
        rejects.add("malformed_json", file_name, line_no, exc.msg)
    except TypeError as exc:
        rejects.add("not_an_object", file_name, line_no, str(exc))
    except ValueError as exc:  # an integer of more than 4,300 digits, nesting too deep
        rejects.add("malformed_json", file_name, line_no, str(exc).splitlines()[0])
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text(value) -> bool:
    return value is None or isinstance(value, str)


def _key_values(record: dict, fields: ReviewFields) -> tuple[str | None, tuple]:
    """(the first field of the wrong JSON type or None, (user, item, rating, time) as read)."""
    user, item = record.get(fields.user), record.get(fields.item)
    rating, time = record.get(fields.rating), record.get(fields.time)
    if not _is_text(user):
        return fields.user, (user,)
    if not _is_text(item):
        return fields.item, (item,)
    if fields.item_fallback and not item:
        item = record.get(fields.item_fallback)
        if not _is_text(item):
            return fields.item_fallback, (item,)
    if rating is not None and not _is_number(rating):
        return fields.rating, (rating,)
    if time is not None and (not _is_number(time) or not math.isfinite(time) or time != int(time)):
        return fields.time, (time,)
    return None, (user, item, rating, time)


def _keys_line_by_line(
    chunk: bytes, first_line: int, fields: ReviewFields, rejects: RejectLog, file_name: str
) -> pl.DataFrame:
    rows: dict[str, list] = {name: [] for name in _RAW_KEY_SCHEMA}
    for offset, raw in enumerate(split_lines(chunk)):
        line_no = first_line + offset
        record = _loads_line(raw, rejects, file_name, line_no)
        if record is None:
            continue
        wrong, values = _key_values(record, fields)
        if wrong is not None:
            rejects.add(f"wrong_type:{wrong}", file_name, line_no, repr(values[0])[:80])
            continue
        user, item, rating, time = values
        if time is not None and abs(int(time)) > _INT64_MAX:
            rejects.add("timestamp_out_of_range", file_name, line_no, repr(time)[:80])
            continue
        try:
            rating = None if rating is None else float(rating)
        except OverflowError:  # an integer too large for a float
            rejects.add("rating_out_of_range", file_name, line_no, repr(rating)[:80])
            continue
        rows["user_id"].append(user)
        rows["asin"].append(item)
        rows["rating_raw"].append(rating)
        rows["ts_raw"].append(None if time is None else int(time))
        rows["text_raw"].append(_as_text(record.get(fields.text)))
        rows["summary_raw"].append(_as_text(record.get(fields.summary)))
        rows["line"].append(line_no)
    return pl.DataFrame(rows, schema=_RAW_KEY_SCHEMA)


def _parse_keys(
    span: bytes, first_line: int, fields: ReviewFields, schema: dict, rejects: RejectLog, file_name: str
) -> list[pl.DataFrame]:
    """Parse a span of whole lines natively where polars reads it exactly; the rest line by line."""

    def native(part: bytes, first: int) -> pl.DataFrame | None:
        parsed = read_native(part, schema, fields.id_fields)
        return None if parsed is None else _normalize_keys(parsed, fields, first)

    def by_line(part: bytes, first: int) -> pl.DataFrame:
        return _keys_line_by_line(part, first, fields, rejects, file_name)

    return parse_in_halves(span, first_line, native, by_line)


class TextSpill:
    """The review texts of every valid line, appended to an uncompressed Arrow file as pass 1 parses
    them (one record batch a chunk, lines ascending), then read back for the surviving lines only:
    the texts of a domain go to disk once, never to memory all at once, and the raw file is never
    inflated or parsed a second time. The file is the caller's to delete."""

    SCHEMA = pa.schema(
        [("line", pa.int64()), ("review_text", pa.large_string()), ("summary", pa.large_string())]
    )

    def __init__(self, path: Path):
        self.path = path
        self._writer: pa.ipc.RecordBatchFileWriter | None = pa.ipc.new_file(str(path), self.SCHEMA)

    def write(self, part: pl.DataFrame) -> None:
        table = part.select("line", "review_text", "summary").to_arrow(compat_level=pl.CompatLevel.oldest())
        self._writer.write_table(table.cast(self.SCHEMA))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def batches(self, lines: np.ndarray) -> Iterator[pa.RecordBatch]:
        """The rows of the given (sorted, written) line numbers, in that order, one record batch of
        the file at a time (read, not mapped: mapped pages would count as this process's memory)."""
        self.close()
        position = 0
        with pa.OSFile(str(self.path)) as source:
            reader = pa.ipc.open_file(source)
            for index in range(reader.num_record_batches):
                if position >= len(lines):
                    break
                batch = reader.get_batch(index)
                written = batch.column(0).to_numpy()
                if not len(written):
                    continue
                stop = int(np.searchsorted(lines, written[-1], side="right"))
                picked = lines[position:stop]
                at = np.searchsorted(written, picked)
                if not np.array_equal(written[np.minimum(at, len(written) - 1)], picked):
                    break
                if len(picked):
                    yield batch.take(at)
                position = stop
        if position < len(lines):
            raise ValueError(f"{self.path.name} lacks the texts of some surviving lines")

    def read(self, lines: pl.Series) -> pl.DataFrame:
        """`line`, `review_text`, `summary` of the given (sorted, written) line numbers, in memory."""
        parts = list(self.batches(lines.to_numpy()))
        return pl.from_arrow(pa.Table.from_batches(parts, schema=self.SCHEMA))

    def copy(self, lines: np.ndarray, path: Path) -> int:
        """Write the rows of the given (sorted) line numbers to a new Arrow file, batch by batch, so
        a domain's surviving texts are never all in memory; returns the bytes of text written."""
        text_bytes = 0
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.SCHEMA) as writer:
            for batch in self.batches(lines):
                writer.write_batch(batch)
                text_bytes += sum(column.nbytes for column in batch.columns[1:])
        return text_bytes


def read_review_keys(
    raw: RawFile,
    rejects: RejectLog,
    on_bytes: Callable[[int], None] | None = None,
    texts: TextSpill | None = None,
) -> tuple[pl.DataFrame, StreamInfo]:
    """User, item (both Categorical), rating, time (ms), text hash and line number of every valid
    line; with `texts`, each valid line's review text and summary are appended to it on the way."""
    fields = FIELDS[raw.release]
    schema = _key_read_schema(fields)
    info = StreamInfo(on_bytes=on_bytes)
    parts = []
    for first_line, chunk in iter_line_chunks(raw.path, info):
        for part in _parse_keys(chunk, first_line, fields, schema, rejects, raw.path.name):
            valid = _valid_keys(part, fields, rejects, raw.path.name, texts is not None)
            if texts is not None:
                texts.write(valid)
                valid = valid.drop("review_text", "summary")
            parts.append(valid)
    info.record_damage(rejects, raw.path.name)
    if not parts:
        return pl.DataFrame(schema=KEY_SCHEMA), info
    return pl.concat(parts), info


def _as_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
