"""Reading spans of JSON lines natively with polars, exactly as a line-by-line json parse would.

polars' NDJSON reader is fast but not strict in the ways a benchmark needs: it turns any JSON value
into a string column's text (a list `["B00"]`, `true`, a number's digits) and refuses a whole span for
one bad line. `parse_in_halves` reads a span natively and, when polars refuses it or a string column
holds something that was not a JSON string, halves it until the bad lines sit in small spans read line
by line, so a line gets the same result whatever its neighbours, and one bad line costs little.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import polars as pl

from unimp_bench.data.raw_files import count_lines

SMALLEST_FAST_SPAN = 256  # below this many lines a refused span is read line by line
# how polars writes a non-string JSON value into a string column: a list or object as JSON text, a
# boolean as true/false, a number as its digits
_NON_STRING_SHAPE = r"^(?:[\[{]|true$|false$|-?[0-9])"


def first_key_wins(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose repeated key keeps its first value, as polars' reader does (json's default
    keeps the last), so a line reads the same whichever path it takes."""
    record: dict = {}
    for key, value in pairs:
        record.setdefault(key, value)
    return record


def is_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _holds_strings(span: bytes, key: str, found: int) -> bool:
    """Whether the quoted key appears exactly `found` times in the span, each time holding a string,
    plus any number of times holding null (the spellings json.dumps writes, with or without a space
    after the colon). bytes.count is a fast scan; the common case needs two."""
    quoted = json.dumps(key).encode()
    anywhere, string = span.count(quoted), span.count(quoted + b': "')
    if anywhere == string == found:
        return True
    string += span.count(quoted + b':"')
    null = span.count(quoted + b": null") + span.count(quoted + b":null")
    return string == found and anywhere == string + null


def ids_are_strings(span: bytes, parsed: pl.DataFrame, keys: tuple[str, ...]) -> bool:
    """Whether every value polars read into the given string columns came from a JSON string. Only when
    some value has the shape of converted text (a real id may: the Books asins are digits) are the
    key's occurrences counted in the raw bytes; an escaped, nested or repeated key or another spacing
    then makes the counts differ, and the span is read line by line, which decides exactly."""
    for key in keys:
        column = parsed.get_column(key)
        found = parsed.height - column.null_count()
        if found and column.str.contains(_NON_STRING_SHAPE).any() and not _holds_strings(span, key, found):
            return False
    return True


def read_native(span: bytes, schema: dict, string_keys: tuple[str, ...]) -> pl.DataFrame | None:
    """The span parsed by polars with `schema`, one row per line; None when polars refuses it, skips
    a (blank) line or turned a non-string value of `string_keys` into text."""
    if not (span.isascii() or is_utf8(span)):
        return None
    try:
        parsed = pl.read_ndjson(span, schema=schema)
    except Exception:  # polars raises ComputeError (and others) for any bad line
        return None
    if parsed.height != count_lines(span) or not ids_are_strings(span, parsed, string_keys):
        return None
    return parsed


def parse_in_halves(
    span: bytes,
    first_line: int,
    native: Callable[[bytes, int], pl.DataFrame | None],
    by_line: Callable[[bytes, int], pl.DataFrame],
) -> list[pl.DataFrame]:
    """`native(span, first_line)` where it accepts the span; otherwise the span is halved until the
    refused parts are small enough for `by_line(span, first_line)`."""
    parsed = native(span, first_line)
    if parsed is not None:
        return [parsed]
    n_lines = count_lines(span)
    middle = span.find(b"\n", len(span) // 2) + 1
    if middle in (0, len(span)):
        middle = span.rfind(b"\n", 0, len(span) // 2) + 1
    if n_lines <= SMALLEST_FAST_SPAN or middle in (0, len(span)):
        return [by_line(span, first_line)]
    head, tail = span[:middle], span[middle:]
    head_lines = head.count(b"\n")
    return parse_in_halves(head, first_line, native, by_line) + parse_in_halves(
        tail, first_line + head_lines, native, by_line
    )


def loads_object(text: str) -> dict:
    """One JSON line as an object (first key wins); ValueError (with a reason) for anything else,
    including integers over Python's digit limit and nesting too deep for the parser."""
    try:
        record = json.loads(text, object_pairs_hook=first_key_wins)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(record, dict):
        raise TypeError(type(record).__name__)
    return record
