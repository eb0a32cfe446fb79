"""Resumable predictions: computed shard by shard, each finished shard saved atomically."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from unimp_bench.config import to_mapping
from unimp_bench.evaluation.predictions import write_predictions
from unimp_bench.examples import ExampleSet
from unimp_bench.fileio import file_sha256, read_json, write_json_atomic
from unimp_bench.progress import ProgressReporter
from unimp_bench.tasks import Task

logger = logging.getLogger(__name__)


def predictions_key(
    path_of_weights: Path, example_set: ExampleSet, task: Task, split: str, settings, method
) -> dict:
    return {
        "weights_sha256": file_sha256(path_of_weights),
        "examples_sha256": example_set.entry(task, split)["sha256"],
        "task": task.name,
        "task_version": task.version,
        "split": split,
        "method": method,
        "settings": to_mapping(settings),
    }


def shard_count(examples: int, shard_size: int) -> int:
    return max(1, -(-examples // shard_size))


def shard_chunks(examples: pl.DataFrame, shard_size: int) -> list[pl.DataFrame]:
    """The examples of each shard, in order (zero-copy slices); every process cuts them this way."""
    return [examples.slice(i * shard_size, shard_size) for i in range(shard_count(len(examples), shard_size))]


def shard_path(partial: Path, index: int) -> Path:
    return partial / f"shard_{index:05d}.parquet"


def sharded_predictions(
    predict: Callable[[pl.DataFrame], pl.DataFrame],
    examples: pl.DataFrame,
    partial: Path,
    key: dict,
    shard_size: int,
    show_progress: bool,
    ranks: Callable[[], None] | None = None,
) -> tuple[pl.DataFrame, int]:
    """Predictions shard by shard; each finished shard is written atomically under `partial`, so an
    interrupted evaluation resumes at the first missing shard (if `key`, what determines the
    predictions, is unchanged; otherwise the old shards are discarded). `ranks`, when given, computes
    the missing shards in other processes (evaluation/parallel.py) before they are read here in order;
    any still missing after it are computed here. Returns (predictions, shards done before this call)."""
    key_path = partial / "key.json"
    if partial.exists() and (not key_path.is_file() or read_json(key_path, "delete it") != key):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json_atomic(key_path, key)
    chunks = shard_chunks(examples, shard_size)
    count = len(chunks)
    saved = [saved_shard(shard_path(partial, i), chunk) for i, chunk in enumerate(chunks)]
    reused = sum(shard is not None for shard in saved)
    if ranks is not None and reused < count:
        ranks()  # then read only what the ranks added
        saved = [
            shard if shard is not None else saved_shard(shard_path(partial, i), chunk)
            for i, (shard, chunk) in enumerate(zip(saved, chunks))
        ]
    shards = []
    with ProgressReporter(show_progress) as progress:
        bar = progress.add("evaluating", len(examples))
        for index, (chunk, shard) in enumerate(zip(chunks, saved)):
            path = shard_path(partial, index)
            if shard is None:
                shard = predict(chunk)
                write_predictions(shard, path)
            shards.append(shard)
            progress.advance(bar, len(chunk))
    return pl.concat(shards, how="vertical"), reused


def saved_shard(path: Path, chunk: pl.DataFrame) -> pl.DataFrame | None:
    """A finished shard of an earlier run, or None when there is none or it is damaged (unreadable, or
    not the predictions of exactly this chunk's examples): a damaged one is removed and recomputed."""
    if not path.is_file():
        return None
    try:
        shard = pl.read_parquet(path)
        same = shard["example_id"].to_list() == chunk["example_id"].to_list()
    except Exception:  # polars raises several error types for a damaged file
        same = False
    if same:
        return shard
    logger.warning("shard %s is damaged; computing it again", path.name)
    path.unlink(missing_ok=True)
    return None
