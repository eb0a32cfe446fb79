from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_RAW = Path(os.environ.get("UNIMP_BENCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-raw"

os.environ.setdefault("UNIMP_BENCH_NO_PROGRESS", "1")
# caches the tests fill (the private WordNet copy) go to a temporary folder, not the user's home
os.environ.setdefault("UNIMP_BENCH_CACHE", tempfile.mkdtemp(prefix="unimp-bench-test-cache-"))
# and the key that signs checkpoints (checkpoint_trust) is a test key, not the user's
os.environ.setdefault("UNIMP_BENCH_CONFIG", tempfile.mkdtemp(prefix="unimp-bench-test-config-"))


@pytest.fixture(scope="session")
def shared_raw() -> Path:
    """The real Amazon files of ../shared/data; skipped in a user's clone, required in CI."""
    if not SHARED_RAW.is_dir():
        message = f"real Amazon test files not found at {SHARED_RAW} (set UNIMP_BENCH_SHARED_DATA)"
        if os.environ.get("UNIMP_BENCH_REQUIRE_SHARED"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_RAW


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


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small synthetic dataset shared by the task, scoring and baseline tests (read-only)."""
    from unimp_bench.data.api import prepare_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic") / "data"
    prepare_synthetic_dataset(out, users=300, items=120)
    return out


@pytest.fixture(scope="session")
def synthetic_examples(synthetic_data, tmp_path_factory) -> Path:
    """Examples of every registered task and split built from `synthetic_data` (read-only)."""
    from unimp_bench.examples import build_examples

    out = tmp_path_factory.mktemp("examples") / "examples"
    build_examples(synthetic_data, out)
    return out


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


@pytest.fixture(scope="module")
def cyclic_data(tmp_path_factory) -> Path:
    """Users walk a fixed cycle of 12 items (each user from another start): the next item is always
    the successor of the last one, so a sequence model must rank it first."""
    from unimp_bench.data.sequences import prepare_sequences_dataset

    folder = tmp_path_factory.mktemp("cyclic")
    lines = []
    for user in range(120):
        start = user % 12
        lines.append(" ".join([f"u{user}"] + [f"i{(start + k) % 12}" for k in range(7)]))
    source = folder / "Cycle.txt"
    source.write_text("\n".join(lines) + "\n")
    prepare_sequences_dataset(source, folder / "data")
    return folder / "data"
