from __future__ import annotations

import os
import tempfile
from pathlib import Path

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


@pytest.fixture(scope="session")
def wordnet() -> None:
    """The system WordNet METEOR reads: skipped with the reason in a user's clone when absent, required
    in CI (UNIMP_BENCH_REQUIRE_SYSTEM, which .ci/run sets)."""
    from unimp_bench.errors import MissingResource
    from unimp_bench.text_resources import wordnet_folder

    try:
        wordnet_folder()
    except MissingResource as error:
        if os.environ.get("UNIMP_BENCH_REQUIRE_SYSTEM"):
            pytest.fail(str(error))
        pytest.skip(str(error))


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
