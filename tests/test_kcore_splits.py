"""Hand-computed k-core, de-duplication, ordering and split cases through the full prepare pipeline."""

import numpy as np
import polars as pl
import pytest

from helpers import TIME0, joined_interactions, review, write_lines
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.data.kcore import collapse_copies, drop_duplicate_pairs, k_core
from unimp_bench.data.reviews import TextSpill


def test_k_core_cascades_until_stable():
    # k=2. Item c has one interaction -> leaves; then user w keeps only (w, b) -> leaves;
    # then item b keeps only (v, b) -> leaves; then v has one left (v, a) -> leaves.
    # What remains: users x, y with items a, d (2 each).
    pairs = [("x", "a"), ("y", "a"), ("x", "d"), ("y", "d"), ("v", "a"), ("v", "b"), ("w", "b"), ("w", "c")]
    frame = pl.DataFrame({"user_id": [p[0] for p in pairs], "asin": [p[1] for p in pairs]})
    kept, rounds = k_core(frame, 2)
    assert sorted(kept.iter_rows()) == [("x", "a"), ("x", "d"), ("y", "a"), ("y", "d")]
    assert rounds == 5  # four rounds remove one pair each, the fifth sees it stable


def test_k_core_of_one_keeps_everything():
    frame = pl.DataFrame({"user_id": ["u"], "asin": ["a"]})
    assert k_core(frame, 1)[0].height == 1


def test_duplicates_keep_earliest_and_ties_keep_file_order():
    frame = pl.DataFrame(
        {
            "user_id": ["u", "u", "u", "v", "v"],
            "asin": ["a", "a", "a", "b", "b"],
            "ts_ms": [30, 10, 10, 5, 5],
            "order": [1, 3, 2, 9, 8],
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    kept = drop_duplicate_pairs(frame).sort("user_id")
    assert kept["rating"].to_list() == [3.0, 5.0]  # earliest time, then earliest line


def _random_reviews(seed: int, ids: pl.DataType) -> pl.DataFrame:
    """Many repeated users, items, times and texts, so copies, duplicate pairs and deep cascades occur."""
    rng = np.random.default_rng(seed)
    n = 3000
    return pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.zipf(1.6, n) % 400],
            "asin": [f"i{i}" for i in rng.zipf(1.4, n) % 300],
            "ts_ms": rng.integers(0, 40, n) * 1000,
            "text_key": pl.Series(rng.integers(0, 4, n), dtype=pl.UInt64).replace(0, None),
            "order": rng.permutation(n) + 1,
        }
    ).with_columns(pl.col("user_id", "asin").cast(ids))


def _reference_k_core(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """The definition, as window counts: drop users and items below k, round after round."""
    rounds = 0
    while True:
        rounds += 1
        kept = frame.filter((pl.len().over("user_id") >= k) & (pl.len().over("asin") >= k))
        if kept.height == frame.height:
            return kept, rounds
        frame = kept


@pytest.mark.parametrize("ids", [pl.String, pl.Categorical])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_core_equals_the_window_count_definition(ids, seed):
    frame = _random_reviews(seed, ids)
    for k in (2, 3, 5, 8):
        kept, rounds = k_core(frame, k)
        expected, expected_rounds = _reference_k_core(frame, k)
        assert rounds == expected_rounds and rounds > 2  # the cascade takes several rounds here
        assert kept.equals(expected)  # same rows, same order


@pytest.mark.parametrize("ids", [pl.String, pl.Categorical])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copies_and_duplicate_pairs_equal_their_plain_definitions(ids, seed):
    frame = _random_reviews(seed, ids)
    kept, variants = collapse_copies(frame)
    # the plain definition: the first line of each (user, time, non-empty text) group stays
    first = pl.col("order").min().over("user_id", "ts_ms", "text_key")
    expected = frame.filter(pl.col("text_key").is_null() | (pl.col("order") == first))
    assert kept.equals(expected)
    assert 0 < variants.height and frame.height - kept.height > 100
    deduplicated = drop_duplicate_pairs(kept)
    plain = kept.sort("ts_ms", "order").unique(["user_id", "asin"], keep="first", maintain_order=True)
    assert deduplicated.equals(plain.sort("order"))
    assert kept.height - deduplicated.height > 100


def test_text_spill_returns_the_texts_of_the_asked_lines(tmp_path):
    spill = TextSpill(tmp_path / "texts.arrow")
    for first in (1, 101, 201):  # three chunks; line 150 was invalid and never written
        lines = [n for n in range(first, first + 100) if n != 150]
        spill.write(
            pl.DataFrame({"line": lines, "review_text": [f"text {n}" for n in lines], "summary": None})
        )
    texts = spill.read(pl.Series([3, 100, 101, 299]))
    assert texts["line"].to_list() == [3, 100, 101, 299]
    assert texts["review_text"].to_list() == ["text 3", "text 100", "text 101", "text 299"]
    assert spill.read(pl.Series([], dtype=pl.Int64)).height == 0
    for missing in ([150], [5, 301]):
        with pytest.raises(ValueError, match="lacks the texts"):
            spill.read(pl.Series(missing))


def test_pipeline_splits_positions_and_tie_order(tmp_path):
    # Two users, three items each, k=1. User u has two reviews at the same time: file order decides.
    records = [
        review("u", "i2", 200),
        review("u", "i1", 100),
        review("u", "i3", 200),  # same time as i2 but later in the file -> after i2
        review("v", "i1", 50),
        review("v", "i2", 60),
        review("v", "i1", 70),  # duplicate pair: the earlier (50) review stays
    ]
    write_lines(tmp_path / "raw" / "Toys_5.json", records)
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1, new_user_fraction=0.0)
    frame = joined_interactions(tmp_path / "data").sort("user_id", "pos")
    u = frame.filter(pl.col("user_id") == "u")
    assert u["asin"].to_list() == ["i1", "i2", "i3"]
    assert u["split"].to_list() == ["train", "valid", "test"]
    assert u["pos"].to_list() == [0, 1, 2]
    v = frame.filter(pl.col("user_id") == "v")
    assert v["asin"].to_list() == ["i1", "i2"] and v["timestamp"].to_list() == [TIME0 + 50, TIME0 + 60]
    assert v["split"].to_list() == ["valid", "test"]


def test_new_user_and_new_domain_groups(tmp_path):
    office = [review(f"o{u}", f"p{i}", 10 * i) for u in range(3) for i in range(3)]
    toys = [review(f"t{u}", f"q{i}", 10 * i) for u in range(20) for i in range(3)]
    toys += [review("o0", f"q{i}", 100 + i) for i in range(3)]  # an Office user also active in Toys
    write_lines(tmp_path / "raw" / "Office_Products_5.json", office)
    write_lines(tmp_path / "raw" / "Toys_and_Games_5.json", toys)
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=3, new_user_fraction=0.1)
    frame = joined_interactions(tmp_path / "data")
    groups = dict(frame.select("user_id", "group").unique().iter_rows())
    assert {u for u, g in groups.items() if g == "new_domain"} == {"o0", "o1", "o2"}
    assert sum(g == "new_user" for g in groups.values()) == 2  # 10% of the 20 Toys-only users
    assert set(manifest["domains"]) == {"Office", "Toys"}  # recipe names, not file stems
    assert manifest["totals"]["groups"] == {"new_domain": 3, "new_user": 2, "train": 18}


@pytest.mark.parametrize("k", [2, 3])
def test_every_survivor_meets_k_within_its_domain(tmp_path, k):
    records = [
        review(f"u{u}", f"i{(u * 7 + j) % 11}", u * 100 + j) for u in range(15) for j in range(u % 5 + 1)
    ]
    write_lines(tmp_path / "raw" / "Baby_5.json", records)
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=k)
    frame = joined_interactions(tmp_path / "data")
    assert frame.group_by("user_id").len()["len"].min() >= k
    assert frame.group_by("asin").len()["len"].min() >= k


def test_interactions_written_in_small_buckets_equal_one_bucket(tmp_path, monkeypatch):
    # The texts reach interactions.parquet through buckets of final positions (ordered_write.py).
    # Buckets of 16 rows (one row group each) must give the same table as one bucket for everything.
    from unimp_bench.data import ordered_write

    rng = np.random.default_rng(0)
    for domain, users in (("Toys_and_Games_5.json", 40), ("Office_Products_5.json", 25)):
        records = [
            review(
                f"{domain[:1]}{u}", f"i{i}", int(rng.integers(0, 1000)), text=f"text {u} {i} {rng.random()}"
            )
            for u in range(users)
            for i in rng.choice(12, size=6, replace=False).tolist()
        ]
        write_lines(tmp_path / "raw" / domain, records)
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "one", k_core=2)
    monkeypatch.setattr(ordered_write, "ROW_GROUP", 16)
    monkeypatch.setattr(ordered_write, "BUCKET_TEXT_BYTES", 1)
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "many", k_core=2)
    one = pl.read_parquet(tmp_path / "one" / "interactions.parquet")
    many = pl.read_parquet(tmp_path / "many" / "interactions.parquet")
    assert one.height == 390 and many.equals(one)
    assert pq_row_groups(tmp_path / "many" / "interactions.parquet") == -(-one.height // 16)
    # each row carries its own review: the text names the user and item of the row
    joined = joined_interactions(tmp_path / "many")
    assert all(
        t.startswith(f"text {u[1:]} {a[1:]} ")
        for u, a, t in joined.select("user_id", "asin", "review_text").iter_rows()
    )
    assert not list((tmp_path / "many").glob(".work*"))


def pq_row_groups(path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_row_groups
