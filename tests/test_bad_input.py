"""Bad input is counted by reason with file and line, valid records still land, nothing crashes."""

import gzip
import json
import re

import pytest
from typer.testing import CliRunner

from helpers import joined_interactions, review, write_lines
from unimp_bench.cli import app
from unimp_bench.data.api import prepare_amazon_dataset

GOOD = [review(f"u{u}", f"i{i}", 100 * u + i) for u in range(3) for i in range(3)]


def prepare_args(raw, out, *extra) -> list[str]:
    return ["prepare", "amazon", "--raw-dir", str(raw), "--out", str(out), *extra]


def _bad_review_file(path):
    lines = [json.dumps(r) for r in GOOD[:4]]
    lines += [
        '{"reviewerID": "u9", "asin": ',  # malformed JSON
        json.dumps({"reviewerID": "u9", "asin": "i1", "overall": "five", "unixReviewTime": 5}),  # wrong type
        json.dumps({"reviewerID": "u9", "overall": 4.0, "unixReviewTime": 5}),  # missing asin
        json.dumps({"reviewerID": "u9", "asin": "i1", "overall": 9.0, "unixReviewTime": 5}),  # out of range
        "[1, 2, 3]",  # not an object
        "",  # blank
    ]
    lines += [json.dumps(r) for r in GOOD[4:]]
    data = "\n".join(lines).encode() + b"\n"
    data += (
        b'{"reviewerID": "u\xff\xfe", "asin": "i1", "overall": 5.0, "unixReviewTime": 1}\n'  # invalid UTF-8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_every_bad_line_is_counted_and_good_lines_land(tmp_path):
    _bad_review_file(tmp_path / "raw" / "Toys_5.json")
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1)
    rejected = manifest["rejected"]["reviews"]
    assert {reason: entry["count"] for reason, entry in rejected.items()} == {
        "malformed_json": 1,
        "wrong_type:overall": 1,
        "missing_field:asin": 1,
        "rating_out_of_range": 1,
        "not_an_object": 1,
        "blank_line": 1,
        "invalid_utf8": 1,
    }
    assert rejected["malformed_json"]["examples"][0] == {
        "file": "Toys_5.json",
        "line": 5,
        "detail": rejected["malformed_json"]["examples"][0]["detail"],
    }
    assert rejected["invalid_utf8"]["examples"][0]["line"] == 16
    assert joined_interactions(tmp_path / "data").height == len(GOOD)


def test_truncated_gzip_keeps_complete_lines(tmp_path):
    payload = "".join(json.dumps(r) + "\n" for r in GOOD).encode()
    packed = gzip.compress(payload)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Toys_5.json.gz").write_bytes(packed[: len(packed) - 40])  # cut inside the last lines
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=1)
    source = manifest["sources"][0]
    assert source["truncated"] is True
    landed = joined_interactions(tmp_path / "data").height
    partial = manifest["rejected"]["reviews"].get("truncated_final_line", {}).get("count", 0)
    assert 0 < landed < len(GOOD) and partial in (0, 1)
    assert manifest["rejected"]["reviews"]["truncated_gzip_stream"]["count"] == 1


def test_meta_with_bad_lines_and_quirks(tmp_path):
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    write_lines(
        tmp_path / "raw" / "meta_Toys.json",
        [
            {
                "asin": "i0",
                "title": "Ben &amp; Jerry&#39;s <b>Toy</b>",
                "price": "$5.00 - $10.00",
                "imageURLHighRes": ["https://x/0.jpg"],
            },
            {"asin": "i0", "title": "duplicate row"},
            '{"asin": "i1", "title": broken',
            {
                "asin": "i2",
                "title": "Plain",
                "price": "",
                "category": ["Toys", "Toys", "Puzzles"],
                "image": [],
            },
            {"title": "no id"},
        ],
    )
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1)
    meta = manifest["rejected"]["meta"]
    assert meta["duplicate_meta_row"]["count"] == 1
    assert meta["malformed_meta_line"]["count"] == 1
    assert meta["meta_without_item_id"]["count"] == 1
    import polars as pl

    items = pl.read_parquet(tmp_path / "data" / "items.parquet").sort("asin")
    first = items.row(0, named=True)
    assert (
        first["title"] == "Ben & Jerry's Toy"
        and first["price"] == 5.0
        and first["image_url"] == "https://x/0.jpg"
    )
    third = items.row(1, named=True)
    assert (
        third["price"] is None and third["categories"] == ["Toys", "Puzzles"] and third["image_url"] is None
    )
    # a malformed meta line is no meta row: i1 has none, and items without meta are dropped (counted)
    assert items["asin"].to_list() == ["i0", "i2"]
    assert manifest["domains"]["Toys"]["pipeline"]["reviews_of_items_without_meta_removed"] == 3


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["prepare", "amazon", "--raw-dir", "{tmp}/missing", "--out", "{tmp}/o"], "does not exist"),
        (
            ["prepare", "amazon", "--raw-dir", "{tmp}/empty", "--out", "{tmp}/o"],
            "found no Amazon review files",
        ),
        (
            ["prepare", "amazon", "--raw-dir", "{tmp}/raw", "--out", "{tmp}/o", "--domains", "garden"],
            "no review file found for domain",
        ),
        (
            ["prepare", "amazon", "--raw-dir", "{tmp}/raw", "--out", "{tmp}/o", "--recipe", "nope"],
            "unknown recipe",
        ),
        (["stats", "{tmp}/empty"], "not a prepared dataset"),
    ],
)
def test_user_errors_are_one_sentence_without_traceback(tmp_path, args, phrase):
    (tmp_path / "empty").mkdir()
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    result = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1
    assert phrase in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_overwrite(tmp_path):
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    runner = CliRunner()
    args = prepare_args(tmp_path / "raw", tmp_path / "o", "--k-core", "1")
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no staging left behind


def test_failed_run_leaves_no_half_dataset(tmp_path):
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    result = CliRunner().invoke(app, prepare_args(tmp_path / "raw", tmp_path / "o"))
    assert result.exit_code == 1 and "5-core" in result.output  # 3 items per user cannot be 5-core
    assert list(tmp_path.iterdir()) == [tmp_path / "raw"]


def test_scattered_bad_lines_in_a_large_file_are_isolated(tmp_path, monkeypatch):
    from unimp_bench.data import json_lines, reviews

    calls = []
    original = reviews._keys_line_by_line
    monkeypatch.setattr(
        reviews, "_keys_line_by_line", lambda span, *a: calls.append(span.count(b"\n")) or original(span, *a)
    )
    records = [json.dumps(review(f"u{n % 50}", f"i{n % 40}", n)) for n in range(4000)]
    bad_lines = {137, 1999, 3998}
    for line in bad_lines:
        records[line - 1] = '{"reviewerID": broken'
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "Toys_5.json").write_text("\n".join(records) + "\n")
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1)
    malformed = manifest["rejected"]["reviews"]["malformed_json"]
    assert malformed["count"] == 3 and {e["line"] for e in malformed["examples"]} == bad_lines
    assert manifest["domains"]["Toys"]["pipeline"]["valid_reviews"] == 4000 - 3
    assert sum(calls) <= 3 * json_lines.SMALLEST_FAST_SPAN  # only small spans around bad lines go slow


def test_damaged_first_lines_do_not_hide_a_review_file(tmp_path):
    lines = ['{"reviewerID": "u0", "asin": ', "[1, 2]", *[json.dumps(r) for r in GOOD]]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "Toys_5.json").write_text("\n".join(lines) + "\n")
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1)
    assert manifest["ignored_files"] == []
    assert manifest["rejected"]["reviews"]["malformed_json"]["examples"][0]["line"] == 1
    assert manifest["rejected"]["reviews"]["not_an_object"]["examples"][0]["line"] == 2
    assert manifest["domains"]["Toys"]["interactions"] == len(GOOD)


def test_an_unwritable_output_is_one_sentence(tmp_path):
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = CliRunner().invoke(
        app, prepare_args(tmp_path / "raw", tmp_path / "blocker" / "data", "--k-core", "1")
    )
    assert result.exit_code == 1 and "cannot use" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--download-images", "--download-timeout", "-1"], "--download-timeout must be a positive"),
        (["--download-images", "--download-timeout", "0"], "--download-timeout must be a positive"),
        (["--download-images", "--download-timeout", "nan"], "--download-timeout must be a positive"),
        (["--download-images", "--download-concurrency", "0"], "greater than or equal to 1"),
        (["--workers", "0"], "greater than or equal to 1"),
        (["--workers", "-3"], "greater than or equal to 1"),
        (["--seed", "-1"], "greater than or equal to 0"),
        (["--k-core", "-2"], "greater than or equal to 0"),
    ],
)
def test_option_ranges_are_refused_before_any_work(tmp_path, extra, phrase):
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    result = CliRunner().invoke(app, prepare_args(tmp_path / "raw", tmp_path / "o", *extra))
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # rich boxes usage errors
    assert result.exit_code in (1, 2) and phrase in text
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_library_callers_get_the_same_range_errors(tmp_path):
    from unimp_bench.errors import UnimpError

    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    cases = [
        ({"workers": 0}, "--workers"),
        ({"seed": -1}, "seed must be in"),
        ({"download_images": True, "download_concurrency": 0}, "concurrency"),
    ]
    for kwargs, phrase in cases:
        with pytest.raises(UnimpError, match=phrase):
            prepare_amazon_dataset(tmp_path / "raw", tmp_path / "o", **kwargs)


def _one_sentence(result, phrase: str) -> None:
    assert result.exit_code == 1, result.output
    assert phrase in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_files_in_other_encodings_or_shapes_are_one_sentence(tmp_path, synthetic_data):
    """Non-UTF-8 YAML everywhere a YAML is read, markup-like text in messages, damaged datasets."""
    import shutil

    runner = CliRunner()
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("description: caf\xe9\n".encode("latin-1"))
    inherits = tmp_path / "inherits.yaml"
    inherits.write_text(f"base: {latin}\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    data = ["--data", str(synthetic_data), "--out", str(tmp_path / "run")]
    _one_sentence(runner.invoke(app, ["train", "--config", str(latin), *data]), "is not UTF-8 text")
    _one_sentence(runner.invoke(app, ["train", "--config", str(inherits), *data]), "is not UTF-8 text")
    _one_sentence(runner.invoke(app, ["train", "--config", str(deep), *data]), "nested too deeply")
    baseline = ["baselines", "run", str(synthetic_data), "--model", "pop", "--task", "recommendation"]
    _one_sentence(runner.invoke(app, [*baseline, "--config", str(latin)]), "is not UTF-8 text")
    write_lines(tmp_path / "raw" / "Toys_5.json", GOOD)
    args = prepare_args(tmp_path / "raw", tmp_path / "o", "--recipe", str(latin))
    _one_sentence(runner.invoke(app, args), "is not UTF-8 text")

    # user text that looks like rich markup is printed as it is
    args = prepare_args(tmp_path / "raw", tmp_path / "o", "--domains", "[/]toys[bold]")
    _one_sentence(runner.invoke(app, args), "no review file found for domain(s) [/]toys[bold]")

    # a manifest that is a JSON list, a damaged Parquet file
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_data, broken, ignore=shutil.ignore_patterns("raw", "images"))
    (broken / "manifest.json").write_text("[1, 2]")
    _one_sentence(runner.invoke(app, ["stats", str(broken)]), "holds a JSON list, not an object")
    shutil.copy(synthetic_data / "manifest.json", broken / "manifest.json")
    (broken / "items.parquet").write_bytes(b"PAR1 not really")
    for command in (["stats", str(broken)], ["build", str(broken), "--out", str(tmp_path / "ex")]):
        _one_sentence(runner.invoke(app, command), "is not a readable Parquet file")


def test_stats_prints_domain_names_as_written(tmp_path):
    records = [review(f"u{u}", f"i{i}", 10 * u + i) for u in range(3) for i in range(3)]
    write_lines(tmp_path / "raw" / "[red]Gift[red]_5.json", records)
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1)
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "data")])
    assert result.exit_code == 0 and "[red]Gift[red]" in result.output


@pytest.mark.parametrize(
    "line",
    [
        '{"example_id": "x", "rating": ' + "9" * 5000 + "}",
        '{"example_id": ' + "[" * 50_000 + "]" * 50_000 + "}",
    ],
)
def test_score_refuses_pathological_prediction_lines_in_one_sentence(tmp_path, synthetic_examples, line):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(line + "\n")
    args = ["score", str(predictions), "--task", "preference", "--examples", str(synthetic_examples)]
    _one_sentence(CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r")]), "is not valid JSON")
