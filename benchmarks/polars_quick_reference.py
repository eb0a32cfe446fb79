"""The quick way with polars, the speed reference `prepare amazon` has to beat per review (issue 21):
inflate each review file, read its user, item, rating and time with polars' NDJSON reader, and run the
iterative 5-core. No validation (a malformed line fails the file), no meta, no review texts, no
duplicate collapsing, no splits: a floor on the work, not a replacement.

With --texts it also reads the two review texts (reviewText, summary) and carries them through the
k-core, as any pipeline whose output holds the texts must: the floor for a dataset like ours.

    python benchmarks/polars_quick_reference.py RAW_DIR [--k 5] [--texts]

Prints the surviving interactions and the seconds as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from isal import igzip

SCHEMA = {"reviewerID": pl.String, "asin": pl.String, "overall": pl.Float64, "unixReviewTime": pl.Int64}
TEXTS = {"reviewText": pl.String, "summary": pl.String}


def quick_prepare(raw: Path, k: int, texts: bool = False) -> int:
    schema = SCHEMA | (TEXTS if texts else {})
    frames = []
    for path in sorted(raw.glob("*.json.gz")):
        if path.name.startswith("meta_"):
            continue
        frame = pl.read_ndjson(igzip.decompress(path.read_bytes()), schema=schema)
        frames.append(frame.with_columns(pl.lit(path.name.split(".")[0]).alias("domain")))
    reviews = pl.concat(frames)
    del frames
    while True:
        kept = reviews.filter(
            (pl.len().over("domain", "reviewerID") >= k) & (pl.len().over("domain", "asin") >= k)
        )
        if kept.height == reviews.height:
            return kept.height
        reviews = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--texts", action="store_true", help="also read and keep the review texts")
    args = parser.parse_args()
    started = time.perf_counter()
    surviving = quick_prepare(args.raw, args.k, texts=args.texts)
    print(json.dumps({"seconds": time.perf_counter() - started, "surviving": surviving}))


if __name__ == "__main__":
    main()
