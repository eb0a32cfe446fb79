"""The 2023 release, format detection, meta normalization and recipe validation."""

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pytest

from helpers import TIME0, joined_interactions, write_lines
from unimp_bench.config import from_mapping
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.data.meta import normalize_meta, parse_price
from unimp_bench.data.raw_files import classify
from unimp_bench.data.recipe import Recipe, load_recipe
from unimp_bench.errors import UnimpError


def _review_2023(user, item, ms, rating=5.0):
    return {
        "rating": rating,
        "title": "Nice",
        "text": "Works<br />well",
        "images": [],
        "asin": item + "-variant",
        "parent_asin": item,
        "user_id": user,
        "timestamp": ms,
        "helpful_vote": 0,
        "verified_purchase": True,
    }


def test_2023_release_uses_parent_asin_milliseconds_and_image_lists(tmp_path):
    reviews = [
        _review_2023(f"U{u}", f"P{i}", 1_600_000_000_000 + 1000 * (10 * u + i) + 7)
        for u in range(2)
        for i in range(2)
    ]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Office_Products.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in reviews).encode())
    )
    meta = [
        {
            "main_category": "Office",
            "title": "Pen &amp; Pad",
            "price": 3.5,
            "store": "Acme",
            "categories": [],
            "images": [
                {"thumb": "https://t/0.jpg", "large": "https://l/0.jpg", "variant": "PT01", "hi_res": None},
                {
                    "thumb": "https://t/1.jpg",
                    "large": "https://l/1.jpg",
                    "variant": "MAIN",
                    "hi_res": "https://h/1.jpg",
                },
            ],
            "details": {},
            "parent_asin": "P0",
        },
        {
            "main_category": "Office",
            "title": "Desk",
            "price": None,
            "store": None,
            "categories": ["Office", "Desks"],
            "images": [],
            "details": {"Brand": "Oakly"},
            "parent_asin": "P1",
        },
    ]
    write_lines(raw / "meta_Office_Products.jsonl", meta)
    assert classify(raw / "Office_Products.jsonl.gz").release == "2023"
    assert classify(raw / "meta_Office_Products.jsonl").role == "meta"
    manifest = prepare_amazon_dataset(raw, tmp_path / "data", k_core=1, new_domain="none")
    assert set(manifest["domains"]) == {"Office"} and manifest["new_domain"]["domain"] is None
    frame = joined_interactions(tmp_path / "data")
    assert sorted(frame["asin"].unique().to_list()) == ["P0", "P1"]
    assert frame.sort("user_id", "pos")["timestamp"].to_list()[0] == 1_600_000_000  # ms -> s
    items = pl.read_parquet(tmp_path / "data" / "items.parquet").sort("asin")
    assert items["title"].to_list() == ["Pen & Pad", "Desk"]
    assert items["image_url"].to_list() == ["https://h/1.jpg", None]  # the MAIN image first
    assert items["brand"].to_list() == ["Acme", "Oakly"]
    assert items["categories"].to_list() == [["Office"], ["Office", "Desks"]]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("$12.99", 12.99),
        ("$5.00 - $10.00", 5.0),
        ("", None),
        ("$1,299.00", 1299.0),
        (9.49, 9.49),
        ("<span class=a>$3</span>", None),
        ("free", None),
        (-1, None),
        (True, None),
        (None, None),
    ],
)
def test_price_parsing(raw, expected):
    assert parse_price(raw) == expected


def test_2014_meta_categories_take_the_first_path_and_imurl():
    record = {
        "asin": "A",
        "categories": [["Music", "Rock"], ["Other"]],
        "imUrl": "http://x/y.jpg",
        "title": "T",
    }
    meta = normalize_meta(record, "2014")
    assert meta["categories"] == ["Music", "Rock"] and meta["image_url"] == "http://x/y.jpg"


def test_name_patterns_and_contents_decide_the_release(tmp_path):
    write_lines(
        tmp_path / "reviews_Baby_5.json",
        [{"reviewerID": "a", "asin": "b", "overall": 5, "unixReviewTime": 1}],
    )
    write_lines(
        tmp_path / "Baby_5.json", [{"reviewerID": "a", "asin": "b", "overall": 5, "unixReviewTime": 1}]
    )
    write_lines(tmp_path / "meta_Baby.json", ["{'asin': 'b', 'title': 'x'}"])
    write_lines(tmp_path / "notes.json", [{"hello": "world"}])
    assert (
        classify(tmp_path / "reviews_Baby_5.json").release,
        classify(tmp_path / "reviews_Baby_5.json").stem,
    ) == ("2014", "Baby")
    assert classify(tmp_path / "Baby_5.json").release == "2018"
    assert classify(tmp_path / "meta_Baby.json").release == "2014"
    assert classify(tmp_path / "notes.json") is None


def test_two_review_files_for_one_domain_is_a_clear_error(tmp_path):
    record = {"reviewerID": "a", "asin": "b", "overall": 5, "unixReviewTime": 1}
    write_lines(tmp_path / "raw" / "x" / "Toys_and_Games_5.json", [record])
    write_lines(tmp_path / "raw" / "y" / "Toys_and_Games.json", [record])
    with pytest.raises(UnimpError, match="several reviews files"):
        prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data")


def test_recipes_reject_unknown_keys_and_bad_values(tmp_path):
    assert load_recipe("unimp_paper").domains["Clothing"]["2018"] == "Clothing_Shoes_and_Jewelry"
    with pytest.raises(UnimpError, match="unknown key"):
        from_mapping(Recipe, {"name": "x", "version": 1, "kcore": 5}, "recipe x")
    with pytest.raises(UnimpError, match="must be of type int"):
        from_mapping(Recipe, {"name": "x", "version": "one"}, "recipe x")
    with pytest.raises(UnimpError, match="new_user_fraction"):
        from_mapping(Recipe, {"name": "x", "version": 1, "new_user_fraction": 1.5}, "recipe x")
    # YAML 1.1 reads 1e-1 (no dot) as a string; a float field takes it as the number it means
    assert (
        from_mapping(Recipe, {"name": "x", "version": 1, "new_user_fraction": "1e-1"}, "r").new_user_fraction
        == 0.1
    )
    with pytest.raises(UnimpError, match="must be of type float"):
        from_mapping(Recipe, {"name": "x", "version": 1, "new_user_fraction": "a tenth"}, "recipe x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nk_core: [\n")
    with pytest.raises(UnimpError, match="not valid YAML"):
        load_recipe(str(bad))


def test_files_not_prepared_are_listed(tmp_path):
    record = {"reviewerID": "a", "asin": "b", "overall": 5, "unixReviewTime": TIME0}
    write_lines(tmp_path / "raw" / "Toys_and_Games_5.json", [record])
    write_lines(tmp_path / "raw" / "Baby_5.json", [record])
    write_lines(tmp_path / "raw" / "meta_Garden.json", [{"asin": "b", "title": "no reviews for it"}])
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1, domains=["toys"])
    assert manifest["selected_domains"] == ["Toys"]
    assert manifest["unused_files"] == ["Baby_5.json", "meta_Garden.json"]


def test_the_same_reviews_in_2018_copies_and_2023_parents_prepare_identically(tmp_path):
    """2018 copies a review under each variant asin (blocks sorted by asin); 2023 writes it once with
    its parent_asin. Both must give the same users, items and sequences."""
    products = {"P0": ["P0", "P0v"], "P1": ["P1", "P1v", "P1w"], "P2": ["P2"]}
    reviews = [
        (f"U{u}", product, TIME0 + 100 * u + p) for u in range(3) for p, product in enumerate(products)
    ]
    lines_2018 = []
    for product, variants in products.items():
        for variant in variants:  # the file holds one block per asin
            for user, reviewed, time in reviews:
                if reviewed == product:
                    lines_2018.append({"reviewerID": user, "asin": variant, "overall": 4.0,
                                       "unixReviewTime": time, "reviewText": f"{user} likes {product}",
                                       "summary": "ok"})  # fmt: skip
    lines_2023 = [
        {
            "user_id": user,
            "parent_asin": product,
            "asin": products[product][-1],
            "rating": 4.0,
            "timestamp": time * 1000,
            "text": f"{user} likes {product}",
            "title": "ok",
        }  # fmt: skip
        for user, product, time in reviews
    ]
    write_lines(tmp_path / "a" / "Toys_5.json", lines_2018)
    write_lines(tmp_path / "b" / "Toys.jsonl", lines_2023)
    first = prepare_amazon_dataset(tmp_path / "a", tmp_path / "da", k_core=1, new_user_fraction=0.0)
    prepare_amazon_dataset(tmp_path / "b", tmp_path / "db", k_core=1, new_user_fraction=0.0)
    assert first["domains"]["Toys"]["pipeline"]["review_copies_collapsed"] == len(lines_2018) - len(reviews)
    for name in ("users", "interactions"):
        assert pl.read_parquet(tmp_path / "da" / f"{name}.parquet").equals(
            pl.read_parquet(tmp_path / "db" / f"{name}.parquet")
        ), name
    items_2018 = pl.read_parquet(tmp_path / "da" / "items.parquet").sort("item_idx")
    items_2023 = pl.read_parquet(tmp_path / "db" / "items.parquet").sort("item_idx")
    assert items_2018["asin"].to_list() == items_2023["asin"].to_list()
    variants = dict(items_2018.select("asin", "variant_asins").iter_rows())
    assert variants == {"P0": ["P0v"], "P1": ["P1v", "P1w"], "P2": []}


def test_literal_choices_are_checked_by_the_loader_and_in_code(tmp_path):
    """One rule for every choice field: the YAML loader names the file and key, a config built in code
    names the field as its own label says (a command-line flag for the eval settings)."""
    from unimp_bench.baselines.registry import load_baseline
    from unimp_bench.config import check_choices, from_mapping
    from unimp_bench.models.predictor import ModelEvalSettings
    from unimp_bench.training.config import load_run_config

    with pytest.raises(UnimpError, match=r"train\.schedule must be one of cosine, constant, got 'linear'"):
        load_run_config(Path("tiny"), ["train.schedule=linear"])
    with pytest.raises(UnimpError, match="--text-decoding must be one of greedy, beam, got 'sample'"):
        ModelEvalSettings(text_decoding="sample")
    spec = tmp_path / "pop.yaml"
    spec.write_text("name: pop\ndescription: x\nengine: natve\nkinds: [recommendation]\n")
    with pytest.raises(UnimpError, match=r"pop\.yaml\.engine must be one of native, recbole, got 'natve'"):
        load_baseline("pop", spec)

    @dataclass(frozen=True)
    class Choice:
        pick: Literal["a", "b"] | None = None

        def __post_init__(self) -> None:
            check_choices(self, "choice.")

    assert Choice().pick is None and from_mapping(Choice, {"pick": "b"}, "c").pick == "b"
    with pytest.raises(UnimpError, match="choice.pick must be one of a, b, got 'c'"):
        Choice(pick="c")
