"""Weight-free scores of generated images on the synthetic corpus, for machines without CLIP weights.

The synthetic corpus paints each item's style (a background colour and a pattern, data/synthetic.py
STYLES) into its image, and users prefer one style, so "does the generated image show the target's
style?" is a direct, corpus-specific check of personalization. Two scores per method:

- style_match: share of examples whose generated image's style (the synthetic palette's background
  colour nearest to the image's most common colour, at 16 colours per channel) equals the target
  image's style. Chance is about the sum of squared style shares; the tokenizer's reconstructions
  give the ceiling.
- ssim: mean SSIM (torchmetrics) of the generated image to the target image, both at 32 px.

    python benchmarks/image_style_scores.py --examples EXAMPLES RESULTS [RESULTS ...]

RESULTS are folders of image_generation Result JSONs (UniMP evals, image-random, image-retrieved,
image-tokenizer); prints one JSON line per method and split. These are NOT the task's CLIP metrics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from unimp_bench.data.synthetic import STYLES

SIZE = 32


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


def main() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    manifest = json.loads((args.examples / "manifest.json").read_text())
    data = Path(manifest["dataset"]["path"])
    for folder in args.results:
        for path in sorted(folder.glob("*.json")):
            result = json.loads(path.read_text())
            if result["task"] != "image_generation" or "predictions_file" not in result["provenance"]:
                continue
            predictions_file = Path(result["provenance"]["predictions_file"])
            if not predictions_file.is_absolute():
                predictions_file = folder / predictions_file
            predictions = pl.read_parquet(predictions_file)
            examples = pl.read_parquet(args.examples / "image_generation" / f"{result['split']}.parquet")
            joined = predictions.join(examples.select("example_id", "target_image"), on="example_id")
            generated = [pixels(predictions_file.parent / p) for p in joined["image"]]
            targets = [pixels(data / p) for p in joined["target_image"]]
            match = np.mean([style_of(g) == style_of(t) for g, t in zip(generated, targets)])
            to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0  # noqa: E731
            ssim = float(
                structural_similarity_index_measure(to_tensor(generated), to_tensor(targets), data_range=1.0)
            )
            print(json.dumps({"method": result["method"], "split": result["split"], "examples": joined.height,
                              "style_match": round(float(match), 4), "ssim": round(ssim, 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
