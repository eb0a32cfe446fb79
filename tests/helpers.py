"""Helpers that several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import yaml
from typer.testing import CliRunner

from unimp_bench.baselines.registry import available_baselines
from unimp_bench.cli import app

REPO = Path(__file__).resolve().parents[1]

# a small, deterministic transformer (no dropout) for the RecBole sequence models
TINY_SASREC = {
    "learning_rate": 0.01,
    "train_batch_size": 64,
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "hidden_dropout_prob": 0.0,
    "attn_dropout_prob": 0.0,
}


def quick_config(tmp_path: Path, model: str, **params) -> Path:
    """The shipped YAML of `model` with a short training, for tests."""
    spec = yaml.safe_load(available_baselines()[model.lower()].read_text())
    spec["params"] |= {"epochs": 1} | params
    if "pretrain_epochs" in spec["params"]:
        spec["params"]["pretrain_epochs"] = 1
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# RecBole's sampler with one uniform negative per row (its pairwise losses need one)
ONE_NEGATIVE = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}


def learns_the_cycle(model: str, data: Path, tmp_path: Path, **params):
    """Trains `model` (its shipped YAML with `params`) on the cyclic corpus, whose next item is always
    the successor of the last one, and checks that it ranks that item first; returns the result."""
    from unimp_bench.baselines.runner import run_baseline

    config = quick_config(tmp_path, model, **params)
    [(result, _)] = run_baseline(model, "recommendation", data, tmp_path / "r", ["test"], config=config)
    assert result.scores["HR@3"] == 1.0 and result.scores["MRR@3"] > 0.9
    return result


def refused(model: str, data: Path, tmp_path: Path, message: str, **params) -> None:
    """Running `model` with `params` stops with an UnimpError matching `message`."""
    import pytest

    from unimp_bench.baselines.runner import run_baseline
    from unimp_bench.errors import UnimpError

    config = quick_config(tmp_path, model, **params)
    with pytest.raises(UnimpError, match=message):
        run_baseline(model, "recommendation", data, tmp_path / "refused", ["test"], config=config)


def link_raw(tmp_path: Path, *sources: Path) -> Path:
    """A raw folder holding symlinks to the given files (the real data is never copied)."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for source in sources:
        (raw / source.name).symlink_to(source)
    return raw


def write_lines(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


# review times in tests count from here: prepare rejects times before 1990 as out of range
TIME0 = 1_400_000_000


def review(user: str, item: str, time: int, rating: float = 5.0, text: str | None = None) -> dict:
    """A 2018-format review line; `time` counts seconds from TIME0. Its text names the user and item
    unless given (one user's reviews of the same time and text are copies of one review)."""
    return {
        "reviewerID": user,
        "asin": item,
        "overall": rating,
        "unixReviewTime": TIME0 + time,
        "reviewText": f"{user} on {item}: fine" if text is None else text,
        "summary": "s",
    }


def load_tables(data: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return (
        pl.read_parquet(data / "items.parquet"),
        pl.read_parquet(data / "users.parquet"),
        pl.read_parquet(data / "interactions.parquet"),
    )


def joined_interactions(data: Path) -> pl.DataFrame:
    """Interactions with raw user ids, asins and domains (what tests compare against raw files)."""
    items, users, interactions = load_tables(data)
    return interactions.join(users, on="user_idx").join(
        items.select("item_idx", "asin", "domain"), on="item_idx"
    )


def load_naive_reference():
    spec = importlib.util.spec_from_file_location(
        "naive_reference", REPO / "benchmarks" / "naive_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the tiny preset shrunk further so a few CPU training steps take about a second
SHRUNK_TINY_MODEL = [
    "model.lm.hidden_size=32",
    "model.lm.layers=2",
    "model.lm.intermediate_size=64",
    "model.lm.bpe_vocab_size=400",
    "model.max_length=256",
]


def tiny_train_args(data: Path, run: Path, max_steps: int, overrides: list[str]) -> list[str]:
    """`unimp-bench train` arguments for the tiny preset with the given `--set` overrides."""
    args = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(data)]
    args += ["--out", str(run), "--max-steps", str(max_steps)]
    for override in overrides:
        args += ["--set", override]
    return args


def invoke(*args) -> str:
    """Run the CLI in-process; the output, after asserting that the command succeeded."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output
