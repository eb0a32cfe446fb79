"""Weight-free scores of generated images on the synthetic corpus, for machines without CLIP weights.

The synthetic corpus paints each item's style (a background colour and a pattern, data/synthetic.py
STYLES) into its image, and users prefer one style, so "does the generated image show the target's
style?" is a direct, corpus-specific check of personalization. Per result:

- style_match: share of examples whose generated image's style (the synthetic palette's background
  colour nearest to the image's most common colour, at 16 colours per channel) equals the target
  image's style. Chance is about the sum of squared style shares; the tokenizer's reconstructions
  (image-tokenizer) give the ceiling.
- ssim: mean SSIM (torchmetrics) of the generated image to the target image, both at 32 px.
- retrieved_match: stage one scored apart: share of the retrieved items (the predictions' `retrieved`)
  whose image has the target's style; absent for rows that retrieve nothing.
- differ / distance: diversity across users who share a query (and whose histories differ): the share
  of such pairs whose generated images differ, and their mean absolute pixel difference (0..1).

Two reference rows need no model and are computed here from the examples: `last-history-image` (the
user's latest history item's image as the output: copying the history, a personal but query-blind
guess) and `chance` (style_match only: the sum of squared style shares of the targets).

    python benchmarks/image_style_scores.py --examples EXAMPLES RESULTS [RESULTS ...]

RESULTS are folders of image_generation Result JSONs (UniMP evals, image-random, image-retrieved,
image-tokenizer); prints one JSON line per result, then per method (its seeds being results whose
names differ only in `-seedN`) the mean +- standard error of each score. These are NOT the task's
CLIP metrics.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from unimp_bench.data.synthetic import STYLES

SIZE = 32
SEED = re.compile(r"-seed\d+")
SCORES = ("style_match", "ssim", "retrieved_match", "differ", "distance")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(
            image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float32
        )


def style_of(array: np.ndarray) -> int:
    """The style whose background colour is nearest the image's most common (quantized) colour."""
    quantized = (array // 16).astype(np.int64).reshape(-1, 3)
    codes, counts = np.unique(
        quantized[:, 0] * 256 + quantized[:, 1] * 16 + quantized[:, 2], return_counts=True
    )
    top = codes[counts.argmax()]
    colour = np.array([top // 256, (top // 16) % 16, top % 16]) * 16 + 8
    backgrounds = np.array([background for _, background, _ in STYLES], dtype=np.float64)
    return int(np.linalg.norm(backgrounds - colour, axis=1).argmin())


def score(
    joined: pl.DataFrame,
    generated: list[np.ndarray],
    catalog: dict[int, np.ndarray],
    item_style: dict[int, int],
) -> dict:
    """The scores of one method's images (`generated`, in `joined`'s row order)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    targets = [item_style[t] for t in joined["target_item"]]
    mine = [style_of(g) for g in generated]
    target_pixels = [catalog[t] for t in joined["target_item"]]
    to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0  # noqa: E731
    scores = {
        "examples": joined.height,
        "style_match": float(np.mean([a == b for a, b in zip(mine, targets)])),
        "ssim": float(
            structural_similarity_index_measure(
                to_tensor(generated), to_tensor(target_pixels), data_range=1.0
            )
        ),
    }
    if "retrieved" in joined.columns and joined["retrieved"].list.len().sum() > 0:
        hits = [
            item_style.get(item) == target
            for items, target in zip(joined["retrieved"], targets)
            for item in items
        ]
        scores["retrieved_match"] = float(np.mean(hits))
    differ, distance = [], []
    for rows in joined.with_row_index("row").group_by("query").agg("row", "history")["row", "history"].rows():
        for (a, ha), (b, hb) in itertools.combinations(zip(*rows), 2):
            if list(ha) == list(hb):
                continue  # the same history: nothing personal to tell the two apart
            gap = float(np.abs(generated[a] - generated[b]).mean() / 255.0)
            differ.append(gap > 0)
            distance.append(gap)
    if differ:
        scores["differ"], scores["distance"] = float(np.mean(differ)), float(np.mean(distance))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    manifest = json.loads((args.examples / "manifest.json").read_text())
    data = Path(manifest["dataset"]["path"])
    items = pl.read_parquet(data / "items.parquet").filter(pl.col("image_path").is_not_null())
    catalog = {item: pixels(data / path) for item, path in zip(items["item_idx"], items["image_path"])}
    item_style = {item: style_of(array) for item, array in catalog.items()}
    rows: list[dict] = []
    splits = set()
    for folder in args.results:
        for path in sorted(folder.glob("*.json")):
            result = json.loads(path.read_text())
            if result["task"] != "image_generation" or "predictions" not in result["provenance"]:
                continue  # not applicable, or another task
            predictions_file = folder / "predictions" / result["provenance"]["predictions"]["file"]
            split = result["split"]
            splits.add(split)
            examples = pl.read_parquet(args.examples / "image_generation" / f"{split}.parquet")
            predictions = pl.read_parquet(predictions_file).select("example_id", "image", *(
                ["retrieved"] if "retrieved" in pl.read_parquet_schema(predictions_file) else []
            ))  # fmt: skip
            joined = predictions.join(
                examples.select("example_id", "target_item", "query", "history"), on="example_id"
            ).sort("example_id")
            generated = [pixels(predictions_file.parent / p) for p in joined["image"]]
            rows.append(
                {"method": result["method"], "split": split, **score(joined, generated, catalog, item_style)}
            )
    for split in sorted(splits):  # the model-free references, from the examples alone
        examples = pl.read_parquet(args.examples / "image_generation" / f"{split}.parquet").sort("example_id")
        blank = np.zeros((SIZE, SIZE, 3), np.float32)  # a history item without an image
        last = [catalog.get(h[-1], blank) for h in examples["history"]]
        reference = score(examples.drop("retrieved"), last, catalog, item_style)  # it retrieves nothing
        rows.append({"method": "last-history-image", "split": split, **reference})
        shares = np.bincount([item_style[t] for t in examples["target_item"]]) / examples.height
        rows.append({"method": "chance", "split": split, "style_match": float((shares**2).sum())})
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(SEED.sub("", row["method"]), row["split"])].append(row)
    for (method, split), seeds in sorted(grouped.items()):
        cells = []
        for name in SCORES:
            values = [row[name] for row in seeds if name in row]
            if len(values) == len(seeds):
                se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
                cells.append(f"{name} {statistics.fmean(values):.4f} +- {se:.4f}")
        print(f"{method}\t{split}\tn={len(seeds)}\t" + "\t".join(cells))


if __name__ == "__main__":
    main()
