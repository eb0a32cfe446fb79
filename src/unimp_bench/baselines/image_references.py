"""Reference rows of image generation: what a generated image must beat, and what it cannot beat.

- `image-random`: a uniformly drawn catalog image other than the target's (seeded): the floor.
- `image-retrieved`: the image of the first retrieved item of the example (the BM25 item the examples
  hold) as the output: what copying stage one would score.
- `image-tokenizer`: the target's own codes decoded by the dataset's image tokenizer: the ceiling of
  any model that writes those codes (its reconstructions are cached under DATA/image_tokens).

Their images are dataset files (or cached reconstructions) named by absolute path, so they are
scored by the same CLIP scorer as a model's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from unimp_bench.config import check_choices, from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.errors import UnimpError
from unimp_bench.tasks import Task


@dataclass(frozen=True)
class ImageReferenceParams:
    source: Literal["random", "retrieved", "tokenizer"] = "random"
    seed: int = 0  # of the random draws (image-random, and image-retrieved's fallback)

    def __post_init__(self) -> None:
        check_choices(self, "image reference params: ")


class ImageReferencePredictor:
    def __init__(self, params: ImageReferenceParams, dataset: PreparedDataset, name: str):
        self.params, self.dataset, self.name = params, dataset, name
        from unimp_bench.models.inputs import catalog_image_paths  # torch: only when the baseline runs

        root = dataset.root.resolve()
        self.images = [None if p is None else str(root / p) for p in catalog_image_paths(dataset)]
        self.with_image = np.flatnonzero([image is not None for image in self.images])
        self.fallbacks = 0

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> ImageReferencePredictor:
        params = from_mapping(ImageReferenceParams, spec.params, f"{spec.name} params")
        return cls(params, dataset, spec.name)

    def config(self) -> dict:
        config = {"params": to_mapping(self.params)}
        if self.params.source == "retrieved":
            config["retrieved_without_image"] = self.fallbacks  # these got a random image instead
        return config

    def not_applicable(self, task: Task, split: str) -> str | None:
        return None

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return False

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        if task.metric_family != "image":
            raise UnimpError(f"{self.name} does not serve task {task.name}")
        targets = examples["target_item"].to_list()
        if self.params.source == "tokenizer":
            images = self._reconstructions(targets)
        elif self.params.source == "retrieved":
            images = [
                self._first_with_image(row, t) for row, t in zip(examples["retrieved"].to_list(), targets)
            ]
        else:
            images = [self._random(t) for t in targets]
        return pl.DataFrame({"example_id": examples["example_id"], "image": images})

    def _random(self, target: int) -> str:
        if len(self.with_image) < 2:
            raise UnimpError("image-random needs at least two items with images")
        rng = np.random.default_rng([self.params.seed, target, self.fallbacks])
        choice = target
        while choice == target:
            choice = int(self.with_image[rng.integers(len(self.with_image))])
        return self.images[choice]

    def _first_with_image(self, retrieved: list[int], target: int) -> str:
        for item in retrieved:
            if self.images[item] is not None:
                return self.images[item]
        self.fallbacks += 1
        return self._random(target)

    def _reconstructions(self, targets: list[int]) -> list[str]:
        """The targets' codes decoded, each item's PNG written once per tokenizer and reused."""
        import torch

        from unimp_bench.image_tokens.catalog import catalog_codes, tokens_folder, write_png

        codes = catalog_codes(self.dataset.root)
        folder = tokens_folder(self.dataset.root) / "reconstructions" / codes.tokenizer_sha256[:16]
        missing = sorted({t for t in targets if not (folder / f"{t}.png").is_file()})
        if missing:
            tokenizer = codes.tokenizer()
            for start in range(0, len(missing), 64):
                batch = missing[start : start + 64]
                pixels = tokenizer.decode(torch.tensor([codes.codes[t] for t in batch]))
                for item, image in zip(batch, pixels):
                    write_png(image, folder / f"{item}.png")
        return [str((folder / f"{t}.png").resolve()) for t in targets]
