"""Dirty raw dumps: a bad line is counted by one reason whatever its neighbours, nothing is silently
wrong (types, times, meta lines) and no input ends in a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TIME0, joined_interactions, review
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.data.raw_files import RawFile
from unimp_bench.data.rejects import RejectLog
from unimp_bench.data.reviews import read_review_keys

GOOD = [review(f"u{u}", f"i{i}", 100 * u + i) for u in range(3) for i in range(3)]


def read_keys(path: Path, lines: list[str], release: str = "2018"):
    path.write_text("".join(line + "\n" for line in lines))
    rejects = RejectLog()
    keys, _ = read_review_keys(RawFile(path, "reviews", release, "Toys"), rejects)
    return keys, rejects.counts


def line(**fields) -> str:
    record = review("u0", "i0", 0) | fields
    return json.dumps(record)


BAD_TYPES = [
    (line(asin=["B004LLIKVU"]), "wrong_type:asin"),
    (line(asin={"id": "B004LLIKVU"}), "wrong_type:asin"),
    (line(asin=1234567890), "wrong_type:asin"),
    (line(reviewerID=True), "wrong_type:reviewerID"),
    (line(reviewerID=42), "wrong_type:reviewerID"),
    (line(overall="5"), "wrong_type:overall"),
    (line(overall=True), "wrong_type:overall"),
    (line(unixReviewTime=TIME0 + 0.5), "wrong_type:unixReviewTime"),
    (line(unixReviewTime=str(TIME0)), "wrong_type:unixReviewTime"),
]


@pytest.mark.parametrize("bad, reason", BAD_TYPES)
def test_a_field_of_the_wrong_json_type_is_wrong_type_whatever_its_neighbours(tmp_path, bad, reason):
    """Alone among 600 good lines (polars reads the chunk natively) and beside a malformed line (the
    chunk goes line by line), the same line gets the same reason."""
    good = [json.dumps(review(f"u{n}", f"i{n % 5}", n)) for n in range(600)]
    for neighbours in ([], ['{"reviewerID": ']):
        keys, counts = read_keys(tmp_path / "Toys_5.json", [*good[:300], bad, *neighbours, *good[300:]])
        assert counts.get(reason) == 1, (neighbours, counts)
        assert keys.height == 600 and set(keys["user_id"].cast(str)) == {f"u{n}" for n in range(600)}


def test_ids_that_look_like_numbers_are_kept_when_they_are_strings(tmp_path):
    """The Books asins are digits: a string that looks like a number is a valid id on either path."""
    lines = [json.dumps(review(f"{n:010d}", f"{n % 7:010d}", n)) for n in range(600)]
    for extra in ([], ["not json"]):
        keys, counts = read_keys(tmp_path / "Books_5.json", lines + extra)
        assert keys.height == 600 and "0000000003" in set(keys["asin"].cast(str))
        assert set(counts) <= {"malformed_json"}


def test_a_repeated_key_reads_the_same_on_both_paths(tmp_path):
    repeated = '{"reviewerID": "dup", "asin": "first", "asin": "second", "overall": 4, "unixReviewTime": %d}'
    good = [json.dumps(review(f"u{n}", "i", n)) for n in range(300)]
    seen = []
    for extra in ([], ["not json"]):
        keys, _ = read_keys(tmp_path / "Toys_5.json", [repeated % TIME0, *good, *extra])
        seen.append(keys.filter(keys["user_id"].cast(str) == "dup")["asin"].cast(str).to_list())
    assert seen == [["first"], ["first"]]


@pytest.mark.parametrize(
    "time, reason",
    [
        (2**62, "timestamp_out_of_range"),  # times 1000 would wrap around to 1970
        (2**63 + 5, "timestamp_out_of_range"),  # beyond 64 bits
        (-(2**70), "timestamp_out_of_range"),
        (5, "timestamp_out_of_range"),  # 1970: not an Amazon review
        (5_000_000_000, "timestamp_out_of_range"),  # year 2128
    ],
)
def test_times_outside_a_sane_range_are_rejected_and_the_history_keeps_its_order(tmp_path, time, reason):
    raw = tmp_path / "raw"
    raw.mkdir()
    bad = review("u0", "i9", 0) | {"unixReviewTime": time}
    (raw / "Toys_5.json").write_text("".join(json.dumps(r) + "\n" for r in [*GOOD, bad]))
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=1)
    assert manifest["rejected"]["reviews"][reason]["count"] == 1
    frame = joined_interactions(tmp_path / "data").sort("user_id", "pos")
    assert frame.filter(frame["user_id"] == "u0")["asin"].to_list() == ["i0", "i1", "i2"]


def test_2023_times_are_checked_in_milliseconds(tmp_path):
    def record(user, item, ms):
        return json.dumps({"user_id": user, "parent_asin": item, "asin": item, "rating": 5.0,
                           "timestamp": ms, "text": "t", "title": "s"})  # fmt: skip

    lines = [record("u", "a", TIME0 * 1000), record("u", "b", 2**62), record("u", "c", TIME0)]
    keys, counts = read_keys(tmp_path / "Toys.jsonl", lines, release="2023")
    assert keys["ts_ms"].to_list() == [TIME0 * 1000]
    assert counts == {"timestamp_out_of_range": 2}  # 2**62 ms, and seconds where ms are expected


@pytest.mark.parametrize(
    "bad, reason",
    [
        (line(overall=10**400), "rating_out_of_range"),  # beyond a float
        (
            '{"reviewerID": "u", "asin": "i", "overall": 5, "unixReviewTime": ' + "9" * 5000 + "}",
            "malformed_json",
        ),  # over Python's 4,300-digit limit  # fmt: skip
        ("[" * 100_000 + "]" * 100_000, "malformed_json"),  # nested too deeply for json
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, "malformed_json"),
        (line(overall=float("nan")).replace("NaN", "NaN"), "rating_out_of_range"),
        (line(unixReviewTime=float("inf")), "wrong_type:unixReviewTime"),
    ],
)
def test_huge_numbers_and_deep_nesting_are_counted_not_raised(tmp_path, bad, reason):
    good = [json.dumps(review(f"u{n}", "i", n)) for n in range(10)]
    keys, counts = read_keys(tmp_path / "Toys_5.json", [*good, bad])
    assert counts == {reason: 1} and keys.height == 10


def _brute_force_index(path: Path, release: str, wanted: set[str]) -> tuple[dict[str, int], int]:
    """What a full parse of every line says: the first line whose top-level id is each wanted item."""
    import ast

    key = "parent_asin" if release == "2023" else "asin"
    first: dict[str, int] = {}
    malformed = 0
    for number, text in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        try:
            record = (ast.literal_eval if release == "2014" else json.loads)(text.decode())
        except Exception:
            malformed += 1
            continue
        item = record.get(key) if isinstance(record, dict) else None
        if isinstance(item, str) and item in wanted:
            first.setdefault(item, number)
    return first, malformed


META_LINES_2018 = [
    {"title": "nested first", "related": {"asin": "B2"}, "asin": "B1"},  # B2 only nested here
    '{"asin": "B3", "title": broken',  # malformed: B3's meta is its next line
    {"asin": "B3", "title": "B3 for real"},
    '{"asin": "\\u0042004LLIKVU", "title": "escaped id"}',
    {"asin": "B2", "title": "B2 for real"},
    {"asin": ["B4"], "title": "a list is no id"},
    {"asin": "B4", "title": "B4 for real"},
    '{"\\u0061sin": "B5", "title": "escaped key"}',
    {"asin": "B1", "title": "duplicate"},
    {"title": "no id at all"},
]


@pytest.mark.parametrize("release", ["2018", "2014"])
def test_meta_index_equals_a_full_parse_of_every_line(tmp_path, release):
    from unimp_bench.data.meta import index_meta, read_meta

    lines = [line if isinstance(line, str) else json.dumps(line) for line in META_LINES_2018]
    if release == "2014":  # Python literals: single quotes, \x escapes
        lines = [repr(json.loads(line)) if not line.endswith("broken") else line for line in lines]
        lines[3] = "{'asin': 'B\\x30\\x304LLIKVU', 'title': 'escaped id'}"
        lines[7] = "{'\\x61sin': 'B5', 'title': 'escaped key'}"
    path = tmp_path / "meta_Toys.json"
    path.write_text("\n".join(lines) + "\n")
    raw = RawFile(path, "meta", release, "Toys")
    wanted = {"B1", "B2", "B3", "B4", "B5", "B004LLIKVU"}
    rejects = RejectLog()
    index, _ = index_meta(raw, wanted, rejects)
    expected, malformed = _brute_force_index(path, release, wanted)
    assert index == expected
    assert set(index) == {"B1", "B2", "B3", "B4", "B5", "B004LLIKVU"}
    assert rejects.counts["malformed_meta_line"] == malformed == 1
    assert rejects.counts["duplicate_meta_row"] == 1 and rejects.counts["meta_without_item_id"] == 1
    if release == "2018":
        assert rejects.counts["wrong_type:asin"] == 1
    titles = dict(read_meta(raw, index, RejectLog()).select("asin", "title").iter_rows())
    assert titles["B2"] == "B2 for real" and titles["B3"] == "B3 for real" and titles["B1"] == "nested first"
    assert titles["B004LLIKVU"] == "escaped id" and titles["B5"] == "escaped key"


def test_an_escaped_asin_keeps_its_item_and_interactions(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    reviews = [
        review(f"u{u}", item, 10 * u + n) for u in range(5) for n, item in enumerate(["B004LLIKVU", "X"])
    ]
    (raw / "Toys_5.json").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    (raw / "meta_Toys.json").write_text(
        '{"asin": "\\u0042004LLIKVU", "title": "escaped"}\n{"asin": "X", "title": "plain"}\n'
    )
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=1)
    frame = joined_interactions(tmp_path / "data")
    assert frame.filter(frame["asin"] == "B004LLIKVU").height == 5
    assert manifest["domains"]["Toys"]["pipeline"]["reviews_of_items_without_meta_removed"] == 0


def _unreadable_cases(raw: Path) -> dict[str, str]:
    import gzip

    good = "".join(json.dumps(r) + "\n" for r in GOOD).encode()
    long_first = json.dumps(review("u0", "i0", 0) | {"reviewText": "x" * (2 << 20)}) + "\n"
    (raw / "Toys_5.json").write_text(long_first + good.decode())  # valid, first line over 1 MB
    (raw / "Baby_5.json.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage" * 100)
    (raw / "Beauty_5.json.gz").write_bytes(good)  # plain JSON named .gz
    (raw / "Sports_5.json").write_bytes(b"")
    (raw / "Office_Products_5.json").write_text("not json at all\nnor this\n")
    (raw / "package.json").write_text('{\n  "name": "x",\n  "version": "1"\n}\n')  # other JSON: ignored
    (raw / "Grocery_5.json.gz").write_bytes(gzip.compress(good)[:-30])  # truncated later: readable
    return {
        "Baby_5.json.gz": "not a readable gzip stream",
        "Beauty_5.json.gz": "not a readable gzip stream",
        "Sports_5.json": "it is empty",
        "Office_Products_5.json": "is a JSON record",
    }


def test_unreadable_raw_files_are_named_with_the_reason(tmp_path):
    from typer.testing import CliRunner

    from unimp_bench.cli import app

    raw = tmp_path / "raw"
    raw.mkdir()
    expected = _unreadable_cases(raw)
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=1)
    assert sorted(manifest["domains"]) == ["Grocery", "Toys"]  # the 2 MB first line is read
    assert set(manifest["unreadable_files"]) == set(expected)
    for name, phrase in expected.items():
        assert phrase in manifest["unreadable_files"][name]
    assert manifest["ignored_files"] == ["package.json"]

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "Sports_5.json").write_bytes(b"")
    args = ["prepare", "amazon", "--raw-dir", str(only_bad), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "cannot read Sports_5.json: it is empty" in result.output


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_folders_of_dead_runs_are_removed_by_the_next_run(tmp_path):
    import os

    from unimp_bench.fileio import _HOST

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Toys_5.json").write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    dead = tmp_path / f".data.partial-{_HOST}-{_dead_pid()}-0123abcd"
    live = tmp_path / f".data.partial-{_HOST}-{os.getpid()}-0123abcd"  # a run still going
    elsewhere = tmp_path / f".data.partial-ffffffff-{_dead_pid()}-0123abcd"  # another host's
    for folder in (dead, live, elsewhere):
        (folder / "items.parquet").parent.mkdir()
        (folder / "items.parquet").write_bytes(b"half")
    prepare_amazon_dataset(raw, tmp_path / "data", k_core=1)
    assert not dead.exists() and live.exists() and elsewhere.exists()
    assert (tmp_path / "data" / "manifest.json").is_file()


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to find the workers")
def test_killing_prepare_leaves_no_worker_processes(tmp_path):
    """kill -9 of a parallel prepare: its workers end within a second (they would otherwise finish
    their domain, here a 60 s one), and the next run removes the staging folder it left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    raw = tmp_path / "raw"
    raw.mkdir()
    for domain in ("Toys", "Baby"):
        (raw / f"{domain}_5.json").write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    (tmp_path / "slow_worker.py").write_text("import time\ndef work(*args):\n    time.sleep(60)\n")
    script = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "import slow_worker, unimp_bench.data.prepare as p\n"
        "p.PARALLEL_MIN_BYTES = 0; p.process_domain_in_worker = slow_worker.work\n"
        "from pathlib import Path\n"
        "from unimp_bench.data.api import prepare_amazon_dataset\n"
        "prepare_amazon_dataset(Path(sys.argv[1]), Path(sys.argv[2]), workers=2, k_core=1)\n"
    )
    args = [sys.executable, "-c", script, str(raw), str(tmp_path / "data"), str(tmp_path)]
    driver = subprocess.Popen(args)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2 and driver.poll() is None:
        time.sleep(0.2)
        workers = [p for p in _children(driver.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert driver.poll() is None and len(workers) >= 2, "the workers did not start in time"
    time.sleep(3)  # the workers are inside their (slow) domain now
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive
    assert list(tmp_path.glob(".data.partial-*"))  # what the killed run left
    prepare_amazon_dataset(raw, tmp_path / "data", k_core=1, workers=1)
    assert not list(tmp_path.glob(".data.partial-*"))
