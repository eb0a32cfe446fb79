"""Where the time of `prepare amazon` goes: CPU seconds of each stage on one domain of the generated
corpus (run benchmarks/prepare.py first), next to the cost of only inflating that file, in one run.
Pass 1 runs twice: keys only (as `prepare sequences` reads), then keys with the texts spilled to disk
(as `prepare amazon` reads); the later stages use the second.

Prints one JSON line per stage. Usage: python benchmarks/prepare_stages.py [--corpus DIR] [--domain Baby]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from isal import isal_zlib

from unimp_bench.data import reviews
from unimp_bench.data.kcore import drop_duplicate_pairs, k_core
from unimp_bench.data.meta import index_meta, read_meta
from unimp_bench.data.raw_files import StreamInfo, classify, iter_line_chunks
from unimp_bench.data.rejects import RejectLog

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, work, reference: float | None = None):
    """Run work(), print its CPU seconds (all threads) and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    figure = {
        "stage": name,
        "cpu_s": round(time.process_time() - cpu, 3),
        "wall_s": round(time.perf_counter() - wall, 3),
    }
    if reference:
        figure["cpu_over_inflate"] = round(figure["cpu_s"] / reference, 2)
    print(json.dumps(figure), flush=True)
    return result, figure["cpu_s"]


def inflate(path: Path) -> int:
    inflater, total = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS), 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            total += len(inflater.decompress(block))
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=REPO / "bench-out" / "prepare-1000000-0.3" / "raw")
    parser.add_argument("--domain", default="Baby")
    parser.add_argument("--spill-dir", type=Path, default=REPO / "bench-out", help="where the texts go")
    args = parser.parse_args()
    review_file = classify(args.corpus / f"{args.domain}.json.gz")
    meta_file = classify(args.corpus / f"meta_{args.domain}.json.gz")
    inflate(review_file.path)  # warm the page cache
    _, floor = stage("inflate_only", lambda: inflate(review_file.path))
    stage(
        "pass1_read_chunks",
        lambda: sum(len(c) for _, c in iter_line_chunks(review_file.path, StreamInfo())),
        floor,
    )
    (keys, _), _ = stage("pass1_keys_only", lambda: reviews.read_review_keys(review_file, RejectLog()), floor)
    spill = reviews.TextSpill(args.spill_dir / f"{args.domain}.texts.arrow")
    (keys, _), _ = stage(
        "pass1_keys_and_text_spill",
        lambda: reviews.read_review_keys(review_file, RejectLog(), None, spill),
        floor,
    )
    keys, _ = stage("dedup", lambda: drop_duplicate_pairs(keys.rename({"line": "order"})), floor)
    wanted = set(keys["asin"].unique().to_list())
    (line_of, _), _ = stage("meta_index", lambda: index_meta(meta_file, wanted, RejectLog()), floor)
    keys = keys.filter(pl.col("asin").is_in(list(line_of)))
    (survivors, _), _ = stage("k_core", lambda: k_core(keys, 5), floor)
    stage("texts_of_survivors_from_spill", lambda: spill.read(survivors["order"].sort()), floor)
    spill.path.unlink()
    items = survivors["asin"].unique().to_list()
    stage("meta_read", lambda: read_meta(meta_file, {a: line_of[a] for a in items}, RejectLog()), floor)
    print(json.dumps({"reviews": keys.height, "survivors": survivors.height}))


if __name__ == "__main__":
    main()
