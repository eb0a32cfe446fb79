"""`unimp-bench prepare sequences`: the field's processed sequence files into the data contract.

Input: one user per line, `user item item ...`, items in chronological order, the data already
filtered (the S3-Rec / SASRec Amazon files are 5-core). The protocol their published numbers use is
kept exactly: every user is kept and evaluated, the last item is test, the second last valid, the rest
train; nothing is filtered again and nobody is held out (no new_user or new_domain groups).

The files carry ids only (no titles, images, ratings or times): items get their raw id as `asin` and
the domain name, every other attribute null; `timestamp` is the position in the user's sequence and
`rating` is null. A line without items, a token that is not an id, or a user listed twice is counted
by reason in the manifest and skipped, never silently dropped. User and item indices are seeded
permutations of the sorted raw ids, as in `prepare amazon`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench import __version__
from unimp_bench.data.contract import COLUMNS, SCHEMA_VERSION
from unimp_bench.data.prepare import content_hash, domain_statistics, seeded_permutation
from unimp_bench.data.rejects import RejectLog
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import atomic_directory, file_sha256, write_bytes_atomic, write_json_atomic

TOKEN = re.compile(r"[A-Za-z0-9_.:-]+")


def _sort_key(raw: str) -> tuple[int, int | str]:
    return (0, int(raw)) if raw.isdigit() else (1, raw)


def read_sequences(path: Path, rejects: RejectLog) -> tuple[list[str], list[list[str]], int]:
    """(user ids, their item sequences, lines read) of a sequence file; bad lines go to `rejects`."""
    users: list[str] = []
    sequences: list[list[str]] = []
    seen: set[str] = set()
    lines = 0
    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            for number, line in enumerate(handle, 1):
                lines = number
                tokens = line.split()
                if not tokens:
                    continue
                bad = next((t for t in tokens if not TOKEN.fullmatch(t)), None)
                if bad is not None:
                    rejects.add("token that is not an id", path.name, number, bad)
                elif len(tokens) < 2:
                    rejects.add("user without items", path.name, number, tokens[0])
                elif tokens[0] in seen:
                    rejects.add("user listed twice (later line skipped)", path.name, number, tokens[0])
                else:
                    seen.add(tokens[0])
                    users.append(tokens[0])
                    sequences.append(tokens[1:])
    except FileNotFoundError:
        raise UnimpError(f"sequence file {path} does not exist") from None
    except UnicodeDecodeError:
        raise UnimpError(f"{path} is not UTF-8 text; expected lines of `user item item ...`") from None
    return users, sequences, lines


def prepare_sequences_dataset(
    path: Path, out: Path, domain: str | None = None, seed: int = 0, overwrite: bool = False
) -> dict:
    """Write the prepared dataset of one sequence file to `out` (atomically) and return its manifest."""
    domain = domain or path.stem
    rejects = RejectLog()
    users, sequences, lines = read_sequences(path, rejects)
    if not users:
        raise UnimpError(f"{path} holds no `user item item ...` line")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    raw_items = sorted({item for sequence in sequences for item in sequence}, key=_sort_key)
    item_index = dict(zip(raw_items, seeded_permutation(len(raw_items), seed, 2).tolist()))
    order = sorted(range(len(users)), key=lambda i: _sort_key(users[i]))
    user_index = np.empty(len(users), dtype=np.int64)
    user_index[order] = seeded_permutation(len(users), seed, 1)

    positions = np.concatenate([np.arange(n) for n in lengths])
    last = np.repeat(lengths - 1, lengths)
    split = np.where(positions == last, "test", np.where(positions == last - 1, "valid", "train"))
    interactions = pl.DataFrame(
        {
            "user_idx": np.repeat(user_index, lengths).astype(np.int32),
            "item_idx": np.array([item_index[i] for s in sequences for i in s], dtype=np.int32),
            "rating": pl.Series([None] * int(lengths.sum()), dtype=pl.Float32),
            "timestamp": positions.astype(np.int64),
            "review_text": pl.Series([None] * int(lengths.sum()), dtype=pl.String),
            "summary": pl.Series([None] * int(lengths.sum()), dtype=pl.String),
            "split": split,
            "pos": positions.astype(np.int32),
        },
        schema=COLUMNS["interactions.parquet"],
    ).sort("user_idx", "pos")
    items = pl.DataFrame(
        {
            "item_idx": [item_index[i] for i in raw_items],
            "asin": raw_items,
            "domain": [domain] * len(raw_items),
            "categories": [[] for _ in raw_items],
            "variant_asins": [[] for _ in raw_items],
        },
        schema_overrides={
            "item_idx": pl.Int32,
            "categories": pl.List(pl.String),
            "variant_asins": pl.List(pl.String),
        },
    ).with_columns(
        *(pl.lit(None, dtype=COLUMNS["items.parquet"][c]).alias(c) for c in ("title", "brand", "price")),
        *(pl.lit(None, dtype=pl.String).alias(c) for c in ("description", "image_path", "image_url")),
    )
    users_frame = pl.DataFrame(
        {"user_idx": user_index.astype(np.int32), "user_id": users, "group": ["train"] * len(users)},
        schema=COLUMNS["users.parquet"],
    )
    duplicates = sum(len(s) - len(set(s)) for s in sequences)
    with atomic_directory(out, overwrite) as staging:
        items.select(list(COLUMNS["items.parquet"])).sort("item_idx").write_parquet(
            staging / "items.parquet", compression="zstd"
        )
        users_frame.sort("user_idx").write_parquet(staging / "users.parquet", compression="zstd")
        interactions.write_parquet(staging / "interactions.parquet", compression="zstd")
        digest, file_hashes = content_hash(staging)
        stats = domain_statistics(items, interactions)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            "recipe": {
                "name": f"sequences-{domain}",
                "format": "sequences: one user per line, `user item item ...`, chronological",
                "protocol": "every user kept; last item test, second last valid; no filtering, no hold-out",
                "seed": seed,
            },
            "selected_domains": [domain],
            "sources": [{"file": path.name, "sha256": file_sha256(path), "lines": lines}],
            "domains": {row["domain"]: row for row in stats.to_dicts()},
            "new_domain": {"domain": None, "present": False},
            "totals": {
                "users": len(users),
                "items": len(raw_items),
                "interactions": int(lengths.sum()),
                "groups": {"train": len(users)},
                "splits": dict(interactions.group_by("split").len().sort("split").iter_rows()),
                "repeated_items_within_a_user": duplicates,
            },
            "rejected": {"sequences": rejects.to_json()},
            "rejected_total": {"sequences": rejects.total},
            "images": {"items": len(raw_items), "with_image": 0},
            "files": file_hashes,
            "content_hash": digest,
        }
        write_json_atomic(staging / "manifest.json", manifest)
    return manifest


def write_sequence_file(reviews: Path, out: Path, k: int = 5) -> dict:
    """Turn a raw Amazon review file into the processed sequence format, the way the field's files
    were made (S3-Rec's data_process.py): each (user, item) kept once at its earliest review, iterative
    k-core on users and items, each user's items in time order (ties in file order), users and items
    numbered from 1 in order of first appearance. Writes `out` atomically; returns its statistics.
    """
    from unimp_bench.data.kcore import chronological_positions, drop_duplicate_pairs, k_core
    from unimp_bench.data.raw_files import Unreadable, classify
    from unimp_bench.data.reviews import read_review_keys

    if not reviews.exists():
        raise UnimpError(f"review file {reviews} does not exist")
    try:
        raw = classify(reviews)
    except Unreadable as exc:
        raise UnimpError(f"review file {reviews} cannot be read: {exc}") from None
    if raw is None or raw.role != "reviews":
        raise UnimpError(f"{reviews} is not an Amazon review file (expected e.g. reviews_Beauty_5.json.gz)")
    rejects = RejectLog()
    keys, _ = read_review_keys(raw, rejects)
    frame = keys.select(
        pl.col("user_id").cast(pl.String),
        pl.col("asin").cast(pl.String),
        "ts_ms",
        pl.col("line").alias("order"),
    )
    deduplicated = drop_duplicate_pairs(frame)
    kept, _ = k_core(deduplicated, k)
    if kept.is_empty():
        raise UnimpError(f"no user of {reviews.name} has {k} items whose items each have {k} users")
    ordered = chronological_positions(kept)  # sorted by user, then time, then file order
    first_seen = ordered.sort("order")
    user_number = {u: n for n, u in enumerate(first_seen["user_id"].unique(maintain_order=True), 1)}
    item_number = {i: n for n, i in enumerate(first_seen["asin"].unique(maintain_order=True), 1)}
    sequences: dict[int, list[int]] = {}
    for user, item in ordered.select("user_id", "asin").iter_rows():
        sequences.setdefault(user_number[user], []).append(item_number[item])
    text = "".join(" ".join(map(str, [user, *sequences[user]])) + "\n" for user in sorted(sequences))
    write_bytes_atomic(out, text.encode("utf-8"))
    return {
        "users": len(sequences),
        "items": len(item_number),
        "interactions": kept.height,
        "repeated_reviews_dropped": frame.height - deduplicated.height,
        "dropped_by_k_core": deduplicated.height - kept.height,
        "rejected_lines": rejects.total,
    }
