"""Same inputs + seed = byte-identical output; the synthetic corpus carries its planted structure."""

import numpy as np
import polars as pl
from PIL import Image
from typer.testing import CliRunner

from helpers import load_tables
from unimp_bench.cli import app
from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.data.synthetic import STYLES

DATA_FILES = ("items.parquet", "users.parquet", "interactions.parquet", "manifest.json")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first = prepare_synthetic_dataset(tmp_path / "a", users=150, items=60, seed=3)
    second = prepare_synthetic_dataset(tmp_path / "b", users=150, items=60, seed=3)
    assert first["content_hash"] == second["content_hash"]
    for name in DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = prepare_synthetic_dataset(tmp_path / "c", users=150, items=60, seed=4)
    assert other["content_hash"] != first["content_hash"]


def test_item_ids_are_a_seeded_permutation_not_raw_order(tmp_path):
    prepare_synthetic_dataset(tmp_path / "d", users=150, items=60, seed=0)
    items, users, _ = load_tables(tmp_path / "d")
    assert sorted(items["item_idx"].to_list()) == list(range(items.height))
    assert sorted(users["user_idx"].to_list()) == list(range(users.height))
    by_asin = items.sort("asin")["item_idx"].to_list()
    assert by_asin != sorted(by_asin)


def _image_style(path) -> int:
    """Recover an item's style from its picture alone: the nearest style background colour."""
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    distances = [np.abs(background - np.array(s[1])).sum() + 0 for s in STYLES]
    return int(np.argmin(distances))


def test_synthetic_preference_is_visible_only_in_images(tmp_path):
    root = tmp_path / "s"
    prepare_synthetic_dataset(root, users=300, items=240, seed=1)
    items, _, interactions = load_tables(root)
    assert items["image_path"].null_count() == 0
    styles = {row["item_idx"]: _image_style(root / row["image_path"]) for row in items.iter_rows(named=True)}
    frame = interactions.with_columns(pl.col("item_idx").replace_strict(styles).alias("style"))
    # Each user's history concentrates on one style, far above the 1/4 of a style-blind user...
    dominant = frame.group_by("user_idx").agg(
        (pl.col("style").mode().first() == pl.col("style")).mean().alias("share")
    )
    assert dominant["share"].mean() > 0.5
    # ...ratings are higher on the user's style...
    frame = frame.join(
        frame.group_by("user_idx").agg(pl.col("style").mode().first().alias("liked")), on="user_idx"
    )
    matched = frame.filter(pl.col("style") == pl.col("liked"))["rating"].mean()
    unmatched = frame.filter(pl.col("style") != pl.col("liked"))["rating"].mean()
    assert matched - unmatched > 1.0
    # ...and no text field carries the style.
    text = pl.concat_str(["title", "brand", "description"], separator=" ").str.to_lowercase()
    for name, *_ in STYLES:
        assert not items.select(text.str.contains(name).any()).item()
    # Brand and category do not reveal the style: within each, the commonest style is far from all of them.
    labelled = items.with_columns(pl.col("item_idx").replace_strict(styles).alias("style"))
    for key in ("brand", pl.col("categories").list.last()):
        majority = labelled.group_by(key).agg((pl.col("style") == pl.col("style").mode().first()).mean())
        assert majority["style"].mean() < 0.7


def test_synthetic_sequences_follow_category_transitions(tmp_path):
    root = tmp_path / "t"
    prepare_synthetic_dataset(root, users=300, items=120, seed=2)
    items, _, interactions = load_tables(root)
    category = items.select("item_idx", pl.col("categories").list.last().alias("category"))
    frame = interactions.join(category, on="item_idx").sort("user_idx", "pos")
    frame = frame.with_columns(pl.col("category").shift(-1).over("user_idx").alias("next")).drop_nulls("next")
    transitions = frame.group_by("category", "next").len()
    top_share = transitions.group_by("category").agg(
        (pl.col("len").max() / pl.col("len").sum()).alias("share")
    )
    assert top_share["share"].mean() > 0.3  # well above the 1/5 of random category order


def test_demo_path_through_the_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["prepare", "synthetic", "--out", str(tmp_path / "syn"), "--users", "120", "--items", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "content hash" in result.output
    stats = runner.invoke(app, ["stats", str(tmp_path / "syn"), "--with-paper"])
    assert stats.exit_code == 0, stats.output
    for domain in ("Beauty", "Office", "Sports", "Toys"):
        assert domain in stats.output
    assert "68,306" in stats.output  # the paper's Office interactions, shown for comparison
