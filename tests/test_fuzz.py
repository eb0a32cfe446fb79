"""Property-based fuzzing (hypothesis) of everything that reads untrusted text: raw review and meta
lines, YAML configs and prediction files. The default budget takes seconds and is derandomized (the
same cases every run); the `slow` budget explores many more cases at random.

Properties: nothing but our own error type escapes; every review line either lands unchanged or is
counted as rejected, whatever its neighbours; the meta index equals a full parse of every line.
"""

from __future__ import annotations

import ast
import gzip
import json
import math

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TIME0, review
from unimp_bench.data.raw_files import RawFile
from unimp_bench.data.rejects import RejectLog
from unimp_bench.data.reviews import TIME_RANGE_S, read_review_keys
from unimp_bench.errors import UnimpError

BUDGETS = [pytest.param(25, id="quick"), pytest.param(400, id="thorough", marks=pytest.mark.slow)]


def run_fuzz(budget: int, strategy, check) -> None:
    """`check` on `budget` generated values (fixed cases for the quick budget)."""

    @settings(
        max_examples=budget,
        deadline=None,
        derandomize=budget <= 25,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def inner(value):
        check(value)

    inner()


# ----------------------------------------------------------------------------------- JSON values

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "B00X", "0123456789", "true", "[1]", "\u00e9\u2603", "\\u0042"]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
GOOD_IDS = st.text(alphabet="ABCDEFGHXYZ0123456789", min_size=1, max_size=10)


@st.composite
def review_records(draw) -> dict:
    """A 2018 review whose key fields are each valid, a random JSON value, or missing."""
    record = {
        "reviewerID": draw(GOOD_IDS | JSON_VALUES),
        "asin": draw(GOOD_IDS | JSON_VALUES),
        "overall": draw(st.sampled_from([1.0, 3, 5.0, 4.5]) | JSON_VALUES),
        "unixReviewTime": draw(st.integers(TIME0, TIME0 + 10**6) | JSON_VALUES),
        "reviewText": draw(st.text(max_size=20) | JSON_VALUES),
        "summary": "s",
    }
    for key in list(record):
        if draw(st.integers(0, 9)) == 0:
            del record[key]
    return record


@st.composite
def raw_lines(draw) -> bytes:
    """One line as bytes: a rendered record, or a mangled one."""
    record = draw(review_records())
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        text = text[: draw(st.integers(0, len(text)))]  # cut short
    elif kind == 1:
        depth = draw(st.integers(1, 3000))
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    elif kind == 2:
        text = text.replace('"asin"', '"\\u0061sin"')  # the key written with an escape
    elif kind == 3:
        return text.encode()[:5] + b"\xff\xfe" + text.encode()[5:]  # invalid UTF-8
    elif kind == 4:
        text = text[:-1] + ', "asin": ["dup"]}' if text.endswith("}") else text  # a repeated key
    return text.encode()


def expected_keys(line: bytes) -> tuple | None:
    """Independently of the reader: (user, item, rating, ts_ms) if the line is a valid review."""
    try:
        pairs = json.loads(line.decode("utf-8"), object_pairs_hook=lambda p: p)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list):
        return None
    record: dict = {}
    for key, value in pairs:
        record.setdefault(key, value)  # the first of a repeated key counts
    user, item = record.get("reviewerID"), record.get("asin")
    rating, time = record.get("overall"), record.get("unixReviewTime")
    if not (isinstance(user, str) and user.strip() and isinstance(item, str) and item.strip()):
        return None

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not number(rating) or not number(time):
        return None
    if isinstance(time, float) and not (math.isfinite(time) and time.is_integer()):
        return None
    try:
        rating = float(rating)
    except OverflowError:
        return None
    if not 1 <= rating <= 5 or not TIME_RANGE_S[0] <= time < TIME_RANGE_S[1]:
        return None
    return user, item, rating, int(time) * 1000


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_review_line_lands_unchanged_or_is_counted(tmp_path, budget):
    padding = [json.dumps(review(f"p{n}", f"q{n % 9}", n)).encode() for n in range(300)]

    def check(case) -> None:
        lines, padded, compress = case
        body = (padding if padded else []) + lines  # padded: polars reads the span natively
        data = b"\n".join(body) + b"\n"
        path = tmp_path / ("Toys_5.json.gz" if compress else "Toys_5.json")
        path.write_bytes(gzip.compress(data) if compress else data)
        rejects = RejectLog()
        keys, _ = read_review_keys(RawFile(path, "reviews", "2018", "Toys"), rejects)
        got = {
            line: (user, item, float(rating), ts)
            for user, item, rating, ts, line in keys.select(
                pl.col("user_id", "asin").cast(pl.String), "rating", "ts_ms", "line"
            ).iter_rows()
        }
        offset = len(body) - len(lines)
        want = {offset + n + 1: expected_keys(line) for n, line in enumerate(lines)}
        want = {n: keys for n, keys in want.items() if keys is not None}
        for n in range(offset):
            want[n + 1] = expected_keys(body[n])
        assert got == want
        assert keys.height + rejects.total == len(body)  # every other line is counted

    run_fuzz(
        budget, st.tuples(st.lists(raw_lines(), min_size=1, max_size=8), st.booleans(), st.booleans()), check
    )


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_truncated_gzip_stream_keeps_every_complete_line(tmp_path, budget):
    lines = [json.dumps(review(f"u{n}", f"i{n % 5}", n)).encode() for n in range(200)]
    packed = gzip.compress(b"\n".join(lines) + b"\n")

    def check(cut: int) -> None:
        path = tmp_path / "Toys_5.json.gz"
        path.write_bytes(packed[:cut])
        rejects = RejectLog()
        keys, info = read_review_keys(RawFile(path, "reviews", "2018", "Toys"), rejects)
        assert keys["line"].to_list() == list(range(1, keys.height + 1))  # a prefix, nothing skipped
        assert info.truncated or cut == len(packed)

    run_fuzz(budget, st.integers(min_value=10, max_value=len(packed)), check)


# ------------------------------------------------------------------------------------------- meta


@st.composite
def meta_lines(draw) -> tuple[str, str]:
    """(2018 JSON line, 2014 Python-literal line) of one meta record, possibly malformed."""
    item = draw(st.sampled_from(["A1", "A2", "A3", "A\u00e9", "A4"]) | JSON_VALUES)
    record = {"title": draw(st.text(max_size=8))}
    if draw(st.booleans()):
        record["related"] = {"asin": draw(st.sampled_from(["A1", "A2", "A3"]))}  # a nested id first
    if draw(st.integers(0, 5)):
        record["asin"] = item
    record["description"] = draw(JSON_VALUES)
    as_json, as_literal = json.dumps(record, ensure_ascii=draw(st.booleans())), repr(record)
    if draw(st.integers(0, 6)) == 0:
        as_json, as_literal = as_json[:-3], as_literal[:-3]
    return as_json, as_literal


def full_parse_index(lines: list[str], release: str, wanted: set[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        try:
            record = ast.literal_eval(text) if release == "2014" else json.loads(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
            continue
        item = record.get("asin") if isinstance(record, dict) else None
        if isinstance(item, str) and item in wanted:
            first.setdefault(item, number)
    return first


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("release", ["2018", "2014"])
def test_the_meta_index_equals_a_full_parse_of_every_line(tmp_path, budget, release):
    from unimp_bench.data.meta import index_meta

    wanted = {"A1", "A2", "A3", "A\u00e9"}

    def check(pairs) -> None:
        lines = [pair[0] if release == "2018" else pair[1] for pair in pairs]
        path = tmp_path / "meta_Toys.json"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        index, _ = index_meta(RawFile(path, "meta", release, "Toys"), wanted, RejectLog())
        assert index == full_parse_index(lines, release, wanted)

    run_fuzz(budget, st.lists(meta_lines(), min_size=1, max_size=10), check)


# ----------------------------------------------------------------------------------- YAML configs

YAML_DOCUMENTS = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.recursive(
        SCALARS | st.sampled_from(["3e-4", "1e999", "{", "[/]", "~"]),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "model",
                        "train",
                        "loss",
                        "lm",
                        "lr",
                        "tasks",
                        "base",
                        "params",
                        "recbole",
                        "engine",
                        "name",
                        "k_core",
                        "seed",
                        "heads",
                        "epochs",
                        "domains",
                    ]
                )
                | st.text(max_size=4),
                c,
                max_size=4,
            )
        ),
        max_leaves=12,
    ).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
)


@pytest.mark.parametrize("budget", BUDGETS)
def test_config_loaders_raise_nothing_but_our_error(tmp_path, budget):
    from unimp_bench.baselines.registry import load_baseline
    from unimp_bench.data.recipe import load_recipe
    from unimp_bench.training.config import load_run_config

    def check(document) -> None:
        path = tmp_path / "config.yaml"
        raw = document if isinstance(document, bytes) else document.encode("utf-8", "surrogatepass")
        path.write_bytes(raw)
        for load in (load_run_config, lambda p: load_baseline("pop", p), load_recipe):
            try:
                load(path)
            except UnimpError:
                pass

    strategy = YAML_DOCUMENTS | st.binary(max_size=40)
    run_fuzz(budget, strategy, check)


# ------------------------------------------------------------------------------------ predictions


@pytest.mark.parametrize("budget", BUDGETS)
def test_score_refuses_bad_prediction_files_in_one_sentence(tmp_path, synthetic_examples, budget):
    from typer.testing import CliRunner

    from unimp_bench.cli import app

    manifest = json.loads((synthetic_examples / "manifest.json").read_text())
    entry = manifest["tasks"]["preference"]["splits"]["test"]
    ids = pl.read_parquet(synthetic_examples / entry["file"])["example_id"].to_list()
    rows = st.fixed_dictionaries(
        {"example_id": st.sampled_from(ids[:3]) | JSON_VALUES},
        optional={"rating": st.sampled_from([1, 3.5, 5]) | JSON_VALUES, "extra": JSON_VALUES},
    )
    lines = st.lists(rows.map(json.dumps) | st.text(max_size=20) | st.just("[" * 5000), max_size=5)

    def check(content: list[str]) -> None:
        path = tmp_path / "predictions.jsonl"
        path.write_text("\n".join(content) + "\n")
        args = ["score", str(path), "--task", "preference", "--examples", str(synthetic_examples)]
        result = CliRunner().invoke(app, [*args, "--split", "test", "--out", str(tmp_path / "r")])
        assert result.exit_code in (0, 1), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)

    run_fuzz(budget, lines, check)
