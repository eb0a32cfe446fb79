"""`prepare sequences`: the processed S3-Rec/SASRec sequence format into the data contract, checked
against the real Amazon Beauty file and against the published popularity numbers on it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from helpers import review
from unimp_bench.cli import app
from unimp_bench.data.contract import open_dataset


@pytest.fixture(scope="module")
def beauty_file(shared_raw) -> Path:
    return shared_raw / "aHuiWang__CIKM2020-S3Rec" / "data" / "Beauty.txt"


@pytest.fixture(scope="module")
def beauty(beauty_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sequences") / "beauty"
    result = CliRunner().invoke(app, ["prepare", "sequences", str(beauty_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "22363 users, 12101 items, 198502 interactions" in result.output  # SOURCES.md's counts
    return out


def test_every_user_is_kept_in_order_with_leave_last_out(beauty, beauty_file):
    dataset = open_dataset(beauty)  # follows the data contract
    items = pl.read_parquet(beauty / "items.parquet")
    users = pl.read_parquet(beauty / "users.parquet")
    interactions = pl.read_parquet(beauty / "interactions.parquet")
    assert dataset.manifest["totals"]["groups"] == {"train": 22363}
    raw = {}
    for line in beauty_file.read_text().splitlines()[:300]:
        user, *sequence = line.split()
        raw[user] = sequence
    asin = dict(zip(items["item_idx"], items["asin"]))
    rebuilt = (
        interactions.join(users, on="user_idx")
        .filter(pl.col("user_id").is_in(list(raw)))
        .sort("user_idx", "pos")
        .group_by("user_id", maintain_order=True)
        .agg("item_idx", "split")
    )
    assert rebuilt.height == len(raw)
    for user, item_ids, splits in rebuilt.iter_rows():
        assert [asin[i] for i in item_ids] == raw[user]  # the file's order, nothing dropped
        assert splits == ["train"] * (len(splits) - 2) + ["valid", "test"]
    counts = interactions.group_by("split").len()
    assert dict(counts.iter_rows()) == {"test": 22363, "valid": 22363, "train": 198502 - 2 * 22363}
    assert items["domain"].unique().to_list() == ["Beauty"]


def test_the_same_file_and_seed_give_the_same_dataset(beauty, beauty_file, tmp_path):
    from unimp_bench.data.sequences import prepare_sequences_dataset

    again = prepare_sequences_dataset(beauty_file, tmp_path / "again")
    assert again["content_hash"] == json.loads((beauty / "manifest.json").read_text())["content_hash"]
    other_seed = prepare_sequences_dataset(beauty_file, tmp_path / "seed1", seed=1)
    assert other_seed["content_hash"] != again["content_hash"]


def test_popularity_reproduces_the_published_poprec_only_with_leaked_counts(beauty, tmp_path):
    """S3-Rec's full-ranking PopRec on Beauty (HR@5 0.0080, NDCG@5 0.0044, reference CSV) is matched
    exactly when popularity counts every interaction (test targets included) and seen items are
    excluded; the leak-free default counts only training interactions and lands a little lower."""
    config = tmp_path / "pop.yaml"
    config.write_text(
        "name: pop\ndescription: leaky reproduction\nengine: native\nkinds: [recommendation]\n"
        "params: {exclude_seen: true, counts_from: all}\n"
    )
    scores = {}
    for name, extra in (("leaky", ["--config", str(config)]), ("default", [])):
        out = tmp_path / name
        args = ["baselines", "run", str(beauty), "--model", "pop", "--task", "recommendation"]
        result = CliRunner().invoke(app, [*args, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(next(out.glob("*.json")).read_text())["scores"]
    assert scores["leaky"]["HR@5"] == pytest.approx(0.0080, abs=5e-5)
    assert scores["leaky"]["NDCG@5"] == pytest.approx(0.0044, abs=5e-5)
    assert 0.9 * 0.0080 < scores["default"]["HR@5"] < 0.0080


def test_bad_lines_are_counted_and_short_users_kept(tmp_path):
    from unimp_bench.data.sequences import prepare_sequences_dataset

    source = tmp_path / "Toys.txt"
    source.write_text("1 10 11 12\n2 13\n3 10 13\n4\n1 10 10\n5 7 <script>\n\n6 12 10 11 13\n")
    manifest = prepare_sequences_dataset(source, tmp_path / "out")
    rejected = manifest["rejected"]["sequences"]
    assert {reason: entry["count"] for reason, entry in rejected.items()} == {
        "token that is not an id": 1,
        "user listed twice (later line skipped)": 1,
        "user without items": 1,
    }
    assert rejected["user listed twice (later line skipped)"]["examples"][0]["line"] == 5
    users = pl.read_parquet(tmp_path / "out" / "users.parquet")
    interactions = pl.read_parquet(tmp_path / "out" / "interactions.parquet").join(users, on="user_idx")
    splits = dict(interactions.group_by("user_id").agg(pl.col("split").sort_by("pos")).iter_rows())
    assert splits == {
        "1": ["train", "valid", "test"],
        "2": ["test"],  # one item: only a test interaction, and the user is still evaluated
        "3": ["valid", "test"],
        "6": ["train", "train", "valid", "test"],
    }
    assert manifest["domains"]["Toys"]["items"] == 4
    missing = CliRunner().invoke(
        app, ["prepare", "sequences", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_a_raw_review_file_becomes_a_chronological_five_core_sequence_file(shared_raw, tmp_path):
    from unimp_bench.data.sequences import write_sequence_file

    reviews = shared_raw / "ncloud50__giftcard" / "Gift_Cards_5.json.gz"
    out = tmp_path / "Gift_Cards.txt"
    stats = write_sequence_file(reviews, out)
    # 2972 reviews (SOURCES.md); 7 repeated (user, item) pairs and 24 reviews below 5-core go
    assert stats == {
        "users": 453,
        "items": 147,
        "interactions": 2941,
        "repeated_reviews_dropped": 7,
        "dropped_by_k_core": 24,
        "rejected_lines": 0,
    }
    lines = (line.split() for line in out.read_text().splitlines())
    sequences = {int(user): list(map(int, items)) for user, *items in lines}
    assert sorted(sequences) == list(range(1, 454))
    item_users: dict[int, int] = {}
    for items in sequences.values():
        assert len(items) >= 5 and len(set(items)) == len(items)
        for item in items:
            item_users[item] = item_users.get(item, 0) + 1
    assert sorted(item_users) == list(range(1, 148)) and min(item_users.values()) >= 5

    manifest = CliRunner().invoke(app, ["prepare", "sequences", str(out), "--out", str(tmp_path / "d")])
    assert manifest.exit_code == 0 and "453 users, 147 items, 2941 interactions" in manifest.output


def test_a_file_that_is_not_a_review_file_is_refused_in_one_sentence(shared_raw, tmp_path):
    from unimp_bench.data.sequences import write_sequence_file
    from unimp_bench.errors import UnimpError

    with pytest.raises(UnimpError, match="is not an Amazon review file"):
        write_sequence_file(shared_raw / "ncloud50__giftcard" / "meta_Gift_Cards.json.gz", tmp_path / "x.txt")
    with pytest.raises(UnimpError, match="does not exist"):
        write_sequence_file(tmp_path / "reviews_Nothing_5.json.gz", tmp_path / "x.txt")


def test_sequence_lines_follow_review_time_with_ties_in_file_order(tmp_path):
    from unimp_bench.data.sequences import write_sequence_file

    # 5 users x 5 items, all pairs reviewed (a 5-core); times shuffled, one tie, one repeat review
    lines = []
    for user in "ABCDE":
        for item, time in zip("vwxyz", [50, 10, 40, 10, 30] if user == "A" else [1, 2, 3, 4, 5]):
            lines.append(review(user, item, time))
    lines.append(review("A", "v", 99, rating=1.0))  # repeat: dropped
    lines.append(review("F", "v", 1, rating=1.0))  # below 5-core
    raw = tmp_path / "Toy_5.json"
    raw.write_text("".join(json.dumps(line) + "\n" for line in lines))
    stats = write_sequence_file(raw, tmp_path / "Toy.txt")
    assert stats["repeated_reviews_dropped"] == 1 and stats["dropped_by_k_core"] == 1
    # items numbered by first appearance (v=1 .. z=5); user A: w(10) y(10, later line) z(30) x(40) v(50)
    assert (tmp_path / "Toy.txt").read_text().splitlines() == [
        "1 2 4 5 3 1",
        *[f"{user} 1 2 3 4 5" for user in range(2, 6)],
    ]
