"""Parsers and the whole pipeline against the real Amazon files in ../shared/data (see SOURCES.md)."""

import gzip
import json

import polars as pl
import pytest

from helpers import joined_interactions, link_raw, load_naive_reference, load_tables
from unimp_bench.data import raw_files
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.data.raw_files import StreamInfo, classify

pytestmark = pytest.mark.shared


def test_gift_cards_fully_joined_matches_independent_reference(shared_raw, tmp_path):
    folder = shared_raw / "ncloud50__giftcard"
    raw = link_raw(tmp_path, folder / "Gift_Cards_5.json.gz", folder / "meta_Gift_Cards.json.gz")
    manifest = prepare_amazon_dataset(raw, tmp_path / "data")
    ours = joined_interactions(tmp_path / "data")
    naive = load_naive_reference().prepare(
        folder / "Gift_Cards_5.json.gz", folder / "meta_Gift_Cards.json.gz", k=5
    )
    assert ours.height == len(naive) > 0
    expected = set(zip(naive["user_id"], naive["asin"], naive["split"]))
    assert set(ours.select("user_id", "asin", "split").iter_rows()) == expected
    review_source = next(s for s in manifest["sources"] if s["role"] == "reviews")
    assert review_source["lines"] == 2972 and review_source["release"] == "2018"
    assert review_source["sha256"] == "41e1f0e50d3c1c9d7d949fb6315944c8bde51ea6b7429a29fdd0d02cbc07ef25"
    items, _, _ = load_tables(tmp_path / "data")
    assert items["title"].null_count() == 0  # every item joined its meta row
    assert manifest["rejected_total"] == {"reviews": 0, "meta": 0}
    egift = items.filter(pl.col("asin") == "B004LLIKVU").row(0, named=True)  # the most reviewed gift card
    assert egift["title"] == "Amazon eGift Card" and egift["categories"] == ["Gift Cards"]
    assert egift["image_url"].startswith("https://images-na.ssl-images-amazon.com/")


def test_2014_truncated_reviews_and_python_literal_meta(shared_raw, tmp_path):
    folder = shared_raw / "MishinaZlata__Project_group19"
    raw = link_raw(
        tmp_path, folder / "reviews_Digital_Music_5.json.gz", folder / "meta_Digital_Music.json.gz"
    )
    assert classify(raw / "meta_Digital_Music.json.gz").release == "2014"
    assert classify(raw / "reviews_Digital_Music_5.json.gz").release == "2014"
    manifest = prepare_amazon_dataset(raw, tmp_path / "data")
    reviews = next(s for s in manifest["sources"] if s["role"] == "reviews")
    assert reviews["truncated"] is True
    pipeline = manifest["domains"]["Digital_Music"]["pipeline"]
    assert pipeline["valid_reviews"] == 6908  # every complete line, the partial one rejected
    assert manifest["rejected"]["reviews"]["truncated_final_line"]["count"] == 1
    assert manifest["rejected"]["meta"]["truncated_final_line"]["count"] == 1
    assert pipeline["reviews_of_items_without_meta_removed"] == 0  # all 382 items have a literal meta row
    items, _, _ = load_tables(tmp_path / "data")
    enya = items.filter(pl.col("asin") == "5555991584")
    if enya.height:
        assert enya["title"][0] == "Memory of Trees" and enya["price"][0] == pytest.approx(9.49)
        assert enya["image_url"][0].startswith("http://ecx.images-amazon.com/")
    assert items["image_url"].null_count() < items.height


def test_all_beauty_plain_and_gzip_give_identical_output(shared_raw, tmp_path):
    plain = shared_raw / "OoEthanoO__LSTMSentimentModel" / "All_Beauty_5.json"
    packed = (
        shared_raw
        / "sowrabharavishankar__Sentiment-Analysis-on-Amazon-Product-Reviews-"
        / "All_Beauty_5.json.gz"
    )
    # 5,269 lines but 1,382 distinct reviews (the rest are copies under variant asins): a 2-core
    first = prepare_amazon_dataset(link_raw(tmp_path / "a", plain), tmp_path / "a" / "data", k_core=2)
    second = prepare_amazon_dataset(link_raw(tmp_path / "b", packed), tmp_path / "b" / "data", k_core=2)
    assert first["content_hash"] == second["content_hash"]
    for name in ("items.parquet", "users.parquet", "interactions.parquet"):
        assert (tmp_path / "a" / "data" / name).read_bytes() == (tmp_path / "b" / "data" / name).read_bytes()
    pipeline = first["domains"]["All_Beauty"]["pipeline"]
    assert pipeline["review_lines"] == 5269 and pipeline["review_copies_collapsed"] == 5269 - 1382
    assert pipeline["meta_file"] is False


def test_fashion_and_appliances_in_one_run(shared_raw, tmp_path):
    raw = link_raw(
        tmp_path,
        shared_raw / "OoEthanoO__LSTMSentimentModel" / "AMAZON_FASHION_5.json",
        shared_raw / "Miggy070498__Amazon-Reviews" / "Appliances_5.json.gz",
    )
    # Appliances_5 holds 2277 lines but 161 distinct reviews (copies under variant asins) of 141
    # distinct (user, item) pairs; neither domain has a 3-core left once the copies are one review
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=3)
    assert set(manifest["dropped_domains"]) == {"AMAZON_FASHION"}
    appliances = manifest["domains"]["Appliances"]["pipeline"]
    assert appliances["review_copies_collapsed"] == 2277 - 161 and appliances["duplicate_pairs_removed"] == 20


def test_line_chunks_survive_truncated_gzip(shared_raw, monkeypatch):
    monkeypatch.setattr(raw_files, "READ_BYTES", 64 << 10)
    path = shared_raw / "MishinaZlata__Project_group19" / "reviews_Digital_Music_5.json.gz"
    info = StreamInfo()
    chunks = list(raw_files.iter_line_chunks(path, info, chunk_bytes=1 << 20))
    assert len(chunks) > 1 and info.truncated and info.lines == 6908
    assert all(chunk.endswith(b"\n") for _, chunk in chunks)
    numbers = [first for first, _ in chunks]
    assert numbers == [1 + sum(c.count(b"\n") for _, c in chunks[:i]) for i in range(len(chunks))]
    assert json.loads(chunks[-1][1].splitlines()[-1])["asin"]  # the last whole line parses
    assert info.partial_tail and not info.partial_tail.endswith(b"}")
    with pytest.raises(EOFError):
        with gzip.open(path) as handle:
            handle.read()


def test_s3rec_sequences_are_not_mistaken_for_reviews(shared_raw, tmp_path):
    folder = shared_raw / "aHuiWang__CIKM2020-S3Rec" / "data"
    assert classify(folder / "Beauty_item2attributes.json") is None


def test_worker_processes_give_the_same_bytes_as_one_process(shared_raw, tmp_path, monkeypatch):
    from unimp_bench.data import prepare

    monkeypatch.setattr(prepare, "PARALLEL_MIN_BYTES", 0)  # force worker processes on small files
    raw = link_raw(
        tmp_path,
        shared_raw / "ncloud50__giftcard" / "Gift_Cards_5.json.gz",
        shared_raw / "ncloud50__giftcard" / "meta_Gift_Cards.json.gz",
        shared_raw / "OoEthanoO__LSTMSentimentModel" / "All_Beauty_5.json",
        shared_raw / "OoEthanoO__LSTMSentimentModel" / "AMAZON_FASHION_5.json",
    )
    parallel = prepare_amazon_dataset(raw, tmp_path / "parallel", workers=2, k_core=2)
    single = prepare_amazon_dataset(raw, tmp_path / "single", workers=1, k_core=2)
    assert parallel["content_hash"] == single["content_hash"]
    assert (tmp_path / "parallel" / "manifest.json").read_bytes() == (
        tmp_path / "single" / "manifest.json"
    ).read_bytes()
    assert set(parallel["domains"]) == {"Gift_Cards", "All_Beauty", "AMAZON_FASHION"}


def test_gift_cards_meta_perturbed_like_the_issue_gives_the_same_dataset(shared_raw, tmp_path):
    """The real Gift Cards meta with the three index traps of issue 15 added: the most reviewed
    item's asin written with a JSON escape, an earlier malformed line for a second item and an
    earlier line holding a third item's asin only inside a nested object. The dataset must not move."""
    folder = shared_raw / "ncloud50__giftcard"
    reviews = folder / "Gift_Cards_5.json.gz"
    clean = prepare_amazon_dataset(link_raw(tmp_path / "a", reviews, folder / "meta_Gift_Cards.json.gz"),
                                   tmp_path / "clean")  # fmt: skip
    lines = gzip.decompress((folder / "meta_Gift_Cards.json.gz").read_bytes()).split(b"\n")
    escaped = [line.replace(b'"asin": "B004LLIKVU"', b'"asin": "\\u0042004LLIKVU"') for line in lines]
    assert escaped != lines  # the trap is really in the file
    others = sorted(set(pl.read_parquet(tmp_path / "clean" / "items.parquet")["asin"]) - {"B004LLIKVU"})
    second, third = others[:2]
    traps = [
        b'{"asin": "%s", "title": broken' % second.encode(),
        json.dumps({"title": "impostor", "related": {"asin": third}, "asin": "NOT-REVIEWED"}).encode(),
    ]
    raw = tmp_path / "b" / "raw"
    raw.mkdir(parents=True)
    (raw / reviews.name).symlink_to(reviews)
    (raw / "meta_Gift_Cards.json").write_bytes(b"\n".join(traps + escaped))
    perturbed = prepare_amazon_dataset(raw, tmp_path / "perturbed")
    for table in ("items", "users", "interactions"):
        assert pl.read_parquet(tmp_path / "perturbed" / f"{table}.parquet").equals(
            pl.read_parquet(tmp_path / "clean" / f"{table}.parquet")
        ), table
    assert perturbed["totals"] == clean["totals"]
    assert perturbed["rejected"]["meta"]["malformed_meta_line"]["count"] == 1


def _raw_reviews(path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.parametrize(
    "relative, k",
    [("OoEthanoO__LSTMSentimentModel/All_Beauty_5.json", 2), ("ncloud50__giftcard/Gift_Cards_5.json.gz", 5)],
)
def test_no_valid_or_test_interaction_is_a_copy_of_a_training_review(shared_raw, tmp_path, relative, k):
    """The 2018 release copies a review under every variant asin; after prepare, no user's valid or
    test interaction shares its time and text with one of their training interactions."""
    source = shared_raw / relative
    prepare_amazon_dataset(link_raw(tmp_path, source), tmp_path / "data", k_core=k)
    frame = joined_interactions(tmp_path / "data")
    key = ["user_id", "timestamp", "review_text", "summary"]
    train = frame.filter(pl.col("split") == "train").select(key).unique()
    held = frame.filter(pl.col("split").is_in(["valid", "test"])).select(key)
    assert held.height > 100 and held.join(train, on=key, nulls_equal=True).height == 0
    # the same protocol on the raw file shows how much leaked before: most held-out rows had a twin
    rows = _raw_reviews(source)
    twins: dict[tuple, set] = {}
    for row in rows:
        key = (row["reviewerID"], row["unixReviewTime"], row.get("reviewText"), row.get("summary"))
        twins.setdefault(key, set()).add(row["asin"])
    assert sum(len(asins) > 1 for asins in twins.values()) > 100  # the copies are really in the file


def test_removing_the_copies_by_hand_gives_the_same_interactions(shared_raw, tmp_path):
    """Perturbation: a raw file with every copy already removed (the first line of each (user, time,
    text, summary) kept) prepares into the same users, items and interactions; only the record of
    merged variant asins differs."""
    source = shared_raw / "OoEthanoO__LSTMSentimentModel" / "All_Beauty_5.json"
    rows = _raw_reviews(source)
    seen, kept = set(), []
    for row in rows:
        key = (
            row["reviewerID"],
            row["unixReviewTime"],
            row.get("reviewText") or "",
            row.get("summary") or "",
        )
        if key[2:] == ("", "") or key not in seen:
            kept.append(row)
        seen.add(key)
    assert len(kept) == 1382
    deduped = tmp_path / "hand" / "raw" / "All_Beauty_5.json"
    deduped.parent.mkdir(parents=True)
    deduped.write_text("".join(json.dumps(row) + "\n" for row in kept))
    ours = prepare_amazon_dataset(link_raw(tmp_path / "ours", source), tmp_path / "ours" / "data", k_core=2)
    hand = prepare_amazon_dataset(deduped.parent, tmp_path / "hand" / "data", k_core=2)
    assert ours["totals"] == hand["totals"]
    for name in ("users", "interactions"):
        assert pl.read_parquet(tmp_path / "ours" / "data" / f"{name}.parquet").equals(
            pl.read_parquet(tmp_path / "hand" / "data" / f"{name}.parquet")
        ), name
    items = pl.read_parquet(tmp_path / "ours" / "data" / "items.parquet")
    assert items["variant_asins"].list.len().sum() > 0  # merged asins are kept on record
    hand_items = pl.read_parquet(tmp_path / "hand" / "data" / "items.parquet")
    assert items.drop("variant_asins").equals(hand_items.drop("variant_asins"))
