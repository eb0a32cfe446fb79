"""The prepared dataset on disk (schema_version 2): opening it, checking it, summarizing it.

Version 2 (issue 16) collapses copies of one review under several variant asins into one interaction
and lists the merged asins in items.variant_asins."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from unimp_bench.config import check_choices
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import read_json
from unimp_bench.resources import resource_dir

SCHEMA_VERSION = 2
COLUMNS = {
    "items.parquet": {
        "item_idx": pl.Int32,
        "asin": pl.String,
        "domain": pl.String,
        "title": pl.String,
        "brand": pl.String,
        "price": pl.Float64,
        "categories": pl.List(pl.String),
        "description": pl.String,
        "image_path": pl.String,
        "image_url": pl.String,
        "variant_asins": pl.List(pl.String),  # asins whose copies of a review were merged into this item
    },
    "users.parquet": {"user_idx": pl.Int32, "user_id": pl.String, "group": pl.String},
    "interactions.parquet": {
        "user_idx": pl.Int32,
        "item_idx": pl.Int32,
        "rating": pl.Float32,
        "timestamp": pl.Int64,
        "review_text": pl.String,
        "summary": pl.String,
        "split": pl.String,
        "pos": pl.Int32,
    },
}


CandidateCatalog = Literal["domain", "all"]


@dataclass(frozen=True)
class PreparedDataset:
    root: Path
    manifest: dict
    # ranking candidates on the new_domain splits: the held-out domain's catalog (the protocol) or
    # every item ("all"); the other splits always rank the whole catalog
    candidates: CandidateCatalog = "domain"

    def __post_init__(self) -> None:
        check_choices(self, lambda name: "--candidates")

    def scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.root / f"{name}.parquet")

    # -- the questions every method asks of a dataset, answered once here ---------------------------

    def training_scan(self) -> pl.LazyFrame:
        """The interactions any model may learn from: the train split of training-group users."""
        train_users = self.scan("users").filter(pl.col("group") == "train").select("user_idx")
        return self.scan("interactions").join(train_users, on="user_idx").filter(pl.col("split") == "train")

    def training_interactions(self, columns: list[str]) -> pl.DataFrame:
        """`columns` of the training interactions, in user/pos order."""
        return self.training_scan().sort("user_idx", "pos").select(columns).collect()

    def training_users(self) -> set[int]:
        """The training-group users (those with a learned vector in id-based models)."""
        users = self.scan("users").filter(pl.col("group") == "train").select("user_idx").collect()
        return set(users["user_idx"].to_list())

    @property
    def catalog_size(self) -> int:
        """Items in the catalog (item ids run from 0 to catalog_size - 1)."""
        return self.scan("items").select(pl.len()).collect().item()

    @property
    def held_out_domain(self) -> str | None:
        """The domain of the new_domain users, when the dataset has one."""
        held_out = self.manifest.get("new_domain") or {}
        return held_out.get("domain") if held_out.get("present") else None


def open_dataset(root: Path) -> PreparedDataset:
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise UnimpError(
            f"{root} is not a prepared dataset (no manifest.json); run `unimp-bench prepare` first"
        )
    manifest = read_json(manifest_path, "prepare the dataset again")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnimpError(
            f"{root} has schema_version {version}, this unimp-bench reads {SCHEMA_VERSION}; prepare it again"
        )
    for name, columns in COLUMNS.items():
        path = root / name
        if not path.exists():
            raise UnimpError(f"{root} lacks {name}; the dataset is incomplete, prepare it again")
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as exc:  # polars and the OS raise many kinds for a damaged file
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise UnimpError(f"{path} is not a readable Parquet file ({reason}); prepare it again") from None
        if dict(schema) != columns:
            raise UnimpError(
                f"{path} does not follow the data contract (columns {list(schema)}); prepare it again"
            )
    return PreparedDataset(root, manifest)


def paper_dataset_statistics() -> dict[str, dict[str, int]]:
    with open(
        resource_dir("reference") / "unimp_paper_dataset_stats.csv", newline="", encoding="utf-8"
    ) as handle:
        return {
            row["domain"]: {k: int(v) for k, v in row.items() if k != "domain"}
            for row in csv.DictReader(handle)
        }
