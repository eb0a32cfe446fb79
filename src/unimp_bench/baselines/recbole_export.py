"""A prepared dataset as RecBole atomic files that carry OUR split (RecBole's pre-split benchmark files).

RecBole loads `<name>.train.inter`, `<name>.valid.inter` and `<name>.test.inter` when
`benchmark_filename: [train, valid, test]` is set, and then does not split or filter again, so every
baseline trains on exactly our train split and is validated on exactly our valid targets.

Only users of the `train` group are exported: new_user and new_domain users are held out from every
model's training data, as they are from UniMP's.

Two layouts, by what the RecBole model reads:

- ``general`` (Pop, BPR, LightGCN, ...): one row per interaction, `user_id item_id timestamp rating`,
  in the file of its split.
- ``sequential`` (SASRec, GRU4Rec, BERT4Rec, HGN, S3Rec, ...): RecBole does not augment benchmark
  files, so the rows are written already augmented, `user_id item_id_list item_id`: one train row per
  train position p >= 1 (history: the train items before p), the valid row with the user's whole train
  history, the test row with train + valid history. Histories keep their last `max_history` items.

Tokens are our dense ids as text (item `17` is `item_idx` 17); the `.item` file lists every catalog
item, with `categories` (token_seq) and `brand` (token) for attribute-aware models, so RecBole's item
id space always covers the whole catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from unimp_bench.data.contract import PreparedDataset
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import atomic_directory

LAYOUTS = ("general", "sequential")
PARTS = ("train", "valid", "test")
_WHITESPACE = re.compile(r"\s+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ExportedDataset:
    folder: Path  # RecBole's data_path
    name: str  # RecBole's dataset name: files are folder/name/name.<part>.inter
    layout: str
    max_history: int
    longest_history: int  # the longest history written (sequential layout; 0 for general)

    @property
    def files(self) -> dict[str, Path]:
        base = self.folder / self.name
        return {part: base / f"{self.name}.{part}.inter" for part in PARTS} | {
            "item": base / f"{self.name}.item"
        }


def attribute_token(text: str) -> str:
    """One attribute value as one RecBole token: whitespace (its token_seq separator) becomes _."""
    return _WHITESPACE.sub("_", text.strip())


def _training_user_sequences(dataset: PreparedDataset) -> pl.DataFrame:
    """One row per training-group user: items, splits and timestamps in chronological order."""
    return (
        dataset.scan("interactions")
        .join(dataset.scan("users").filter(pl.col("group") == "train").select("user_idx"), on="user_idx")
        .sort("user_idx", "pos")
        .group_by("user_idx", maintain_order=True)
        .agg("item_idx", "split", "timestamp", "rating")
        .collect()
    )


def _item_lines(dataset: PreparedDataset) -> list[str]:
    items = dataset.scan("items").select("item_idx", "categories", "brand").sort("item_idx").collect()
    lines = ["item_id:token\tcategories:token_seq\tbrand:token"]
    for item, categories, brand in items.iter_rows():
        tokens = [attribute_token(c) for c in categories or [] if c and c.strip()]
        brand_token = attribute_token(brand) if brand and brand.strip() else ""
        lines.append(f"{item}\t{' '.join(tokens)}\t{brand_token}")
    return lines


def _general_lines(users: pl.DataFrame) -> dict[str, list[str]]:
    header = "user_id:token\titem_id:token\ttimestamp:float\trating:float"
    lines = {part: [header] for part in PARTS}
    for user, items, splits, times, ratings in users.iter_rows():
        for item, split, time, rating in zip(items, splits, times, ratings):
            if split not in lines:  # a fine-tuning view's context rows: never trained on
                continue
            rating_text = "" if rating is None else repr(float(rating))
            lines[split].append(f"{user}\t{item}\t{time}\t{rating_text}")
    return lines


def _sequential_lines(users: pl.DataFrame, max_history: int) -> dict[str, list[str]]:
    header = "user_id:token\titem_id_list:token_seq\titem_id:token"
    lines = {part: [header] for part in PARTS}
    for user, items, splits, _times, _ratings in users.iter_rows():
        # a fine-tuning view's context rows are neither targets nor inputs of a training row
        kept = [(str(item), split) for item, split in zip(items, splits) if split in lines]
        text = [item for item, _ in kept]
        for p in range(1, len(kept)):
            history = " ".join(text[max(0, p - max_history) : p])
            lines[kept[p][1]].append(f"{user}\t{history}\t{text[p]}")
    return lines


def export_recbole(
    dataset: PreparedDataset,
    out: Path,
    layout: str,
    max_history: int = 50,
    name: str = "unimp",
    overwrite: bool = False,
) -> ExportedDataset:
    """Write the atomic files of `dataset` in `layout` under out/name/, atomically."""
    if layout not in LAYOUTS:
        raise UnimpError(f"unknown RecBole layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if max_history < 1:
        raise UnimpError("the exported history length must be at least 1")
    if not _NAME.fullmatch(name):
        raise UnimpError(f"RecBole dataset name {name!r} must use only letters, digits, . _ and -")
    users = _training_user_sequences(dataset)
    if users.is_empty():
        raise UnimpError(f"{dataset.root} has no training users to export")
    parts = _general_lines(users) if layout == "general" else _sequential_lines(users, max_history)
    empty = [part for part in PARTS if len(parts[part]) == 1]
    if empty:
        raise UnimpError(f"{dataset.root} has no {', '.join(empty)} interactions to export")
    with atomic_directory(out, overwrite) as scratch:
        base = scratch / name
        base.mkdir()
        for part in PARTS:
            (base / f"{name}.{part}.inter").write_text("\n".join(parts[part]) + "\n", encoding="utf-8")
        (base / f"{name}.item").write_text("\n".join(_item_lines(dataset)) + "\n", encoding="utf-8")
    # the last row of the longest sequence carries the longest history
    longest = 0 if layout == "general" else min(max_history, int(users["item_idx"].list.len().max()) - 1)
    return ExportedDataset(out, name, layout, max_history, longest)


def read_atomic(path: Path) -> pl.DataFrame:
    """An atomic file back as a frame (token_seq columns as lists of ints); for checks and tests."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [column.split(":") for column in lines[0].split("\t")]
    rows = [line.split("\t") for line in lines[1:]]
    data = {}
    for index, (name, kind) in enumerate(header):
        values = [row[index] for row in rows]
        if kind == "token_seq":
            data[name] = [
                [int(v) for v in value.split()] if name.endswith("_list") else value.split()
                for value in values
            ]
        elif kind == "float":
            data[name] = [float(v) if v else None for v in values]
        else:
            data[name] = [int(v) if name.endswith("_id") else v for v in values]
    return pl.DataFrame(data)
