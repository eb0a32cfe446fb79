"""Predictions files: read and checked against a metric family, aligned one to one with their examples,
written atomically (a Result cites the file's sha256)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from unimp_bench.errors import UnimpError
from unimp_bench.evaluation.scoring import MetricFamily
from unimp_bench.examples import ExampleSet
from unimp_bench.fileio import write_parquet_atomic
from unimp_bench.tasks import Task


def read_predictions(path: Path, family: MetricFamily) -> pl.DataFrame:
    """example_id plus the family's fields, from JSONL (one object per line) or Parquet."""
    if not path.is_file():
        raise UnimpError(f"predictions file {path} does not exist")
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception:  # polars raises several error types for a damaged file
            raise UnimpError(f"{path} is not a readable Parquet file") from None
    else:
        rows = []
        with open(path, encoding="utf-8", errors="strict") as handle:
            try:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except (ValueError, RecursionError):  # JSONDecodeError, 4,300+ digit integers
                        raise UnimpError(f"{path} line {number} is not valid JSON") from None
                    if not isinstance(row, dict):
                        raise UnimpError(f"{path} line {number} is not a JSON object")
                    rows.append(row)
            except UnicodeDecodeError:
                raise UnimpError(f"{path} is not UTF-8 text; write predictions as JSONL or Parquet") from None
        columns = sorted({key for row in rows for key in row})
        try:
            frame = pl.DataFrame({c: [row.get(c) for row in rows] for c in columns}, strict=False)
        except Exception as exc:  # values polars cannot put in one column (objects beside lists, ...)
            raise UnimpError(f"{path} holds values of incompatible types in one field ({exc})") from None
    required = ["example_id", *family.required(frame.columns)]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UnimpError(f"{path} lacks the prediction field(s) {', '.join(missing)} this task needs")
    frame = frame.select(required)
    try:
        frame = frame.cast({"example_id": pl.String, **{c: family.fields[c] for c in required[1:]}})
    except Exception:
        raise UnimpError(
            f"{path} has prediction fields of the wrong type; expected "
            + ", ".join(f"{c}: {family.fields[c]}" for c in required[1:])
        ) from None
    return frame


def align(examples: pl.DataFrame, predictions: pl.DataFrame) -> pl.DataFrame:
    """Examples joined one to one with their predictions, in example order."""
    duplicated = predictions.filter(pl.col("example_id").is_duplicated())["example_id"]
    if len(duplicated):
        raise UnimpError(
            f"{duplicated.n_unique()} example ids have more than one prediction, e.g. {duplicated[0]}"
        )
    joined = examples.join(predictions, on="example_id", how="left", maintain_order="left")
    extra = predictions.join(examples.select("example_id"), on="example_id", how="anti")
    if len(extra):
        raise UnimpError(
            f"{len(extra)} predictions name examples that do not exist here, e.g. {extra['example_id'][0]}; "
            "were they made for other examples (task, split or seed)?"
        )
    value_columns = [c for c in predictions.columns if c != "example_id"]
    missing = joined.filter(pl.all_horizontal(pl.col(value_columns).is_null()))
    if len(missing):
        raise UnimpError(
            f"{len(missing)} of {len(examples)} examples have no prediction, e.g. {missing['example_id'][0]}"
        )
    return joined


def rename_conflicts(examples: pl.DataFrame, predictions: pl.DataFrame) -> pl.DataFrame:
    # the preference example's own `rating` is the truth; the prediction's is renamed
    clash = [c for c in predictions.columns if c != "example_id" and c in examples.columns]
    return predictions.rename({c: f"{c}_right" for c in clash})


def write_predictions(frame: pl.DataFrame, path: Path) -> Path:
    """Predictions as Parquet, written atomically (the Result cites this file's sha256)."""
    write_parquet_atomic(frame, path, statistics=False)
    return path


def split_of(predictions: pl.DataFrame) -> str:
    splits = predictions["example_id"].str.split(":").list.get(1, null_on_oob=True).unique().to_list()
    if len(splits) != 1 or splits[0] is None:
        raise UnimpError(
            "predictions must all belong to one split (example ids task:split:user:pos); pass --split"
        )
    return splits[0]


def load_examples_to_score(example_set: ExampleSet, task: Task, split: str) -> pl.DataFrame:
    examples = example_set.load(task, split)
    if examples.is_empty():
        skipped = example_set.entry(task, split)["skipped"]
        why = f" (skipped: {', '.join(f'{n} {reason}' for reason, n in skipped.items())})" if skipped else ""
        raise UnimpError(f"there are no {split} examples of {task.name} to score{why}")
    return examples
