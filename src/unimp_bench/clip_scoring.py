"""CLIP embeddings for the image-generation metrics (open_clip; weights only from local files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimp_bench.errors import UnimpError

RANDOM_TOWER = "random"
NOT_COMPARABLE = "scored with a random-init CLIP tower (a pipeline check): not comparable to any other result"


@dataclass(frozen=True)
class ClipSettings:
    model: str = "ViT-L-14"
    # local weights file (.safetensors or a torch state dict), or "random": a random-init tower that
    # only exercises the pipeline (tests); its scores are marked as not comparable
    checkpoint: str | None = None
    batch_size: int = 32

    @property
    def random(self) -> bool:
        return self.checkpoint == RANDOM_TOWER

    def describe(self) -> dict:
        if self.random:
            return {"model": self.model, "checkpoint": RANDOM_TOWER, "not_comparable": NOT_COMPARABLE}
        return {"model": self.model, "checkpoint": Path(self.checkpoint).name if self.checkpoint else None}


class ClipEmbedder:
    """Wraps an open_clip model with its preprocessing and tokenizer; rows come back L2-normalized."""

    def __init__(self, model, preprocess, tokenizer, batch_size: int = 32):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: ClipSettings) -> ClipEmbedder:
        import open_clip

        if settings.random:
            if settings.model not in open_clip.list_models():
                raise UnimpError(f"open_clip has no model {settings.model!r}")
            model, _, preprocess = open_clip.create_model_and_transforms(settings.model, pretrained=None)
            return cls(model, preprocess, open_clip.get_tokenizer(settings.model), settings.batch_size)
        if not settings.checkpoint:
            raise UnimpError(
                "image metrics need local CLIP weights: pass --clip-checkpoint FILE "
                f"(open_clip {settings.model} weights; nothing is downloaded at run time)"
            )
        if not Path(settings.checkpoint).is_file():
            raise UnimpError(f"CLIP checkpoint {settings.checkpoint} does not exist")
        if settings.model not in open_clip.list_models():
            raise UnimpError(f"open_clip has no model {settings.model!r}")
        model, _, preprocess = open_clip.create_model_and_transforms(
            settings.model, pretrained=settings.checkpoint, weights_only=True
        )
        return cls(model, preprocess, open_clip.get_tokenizer(settings.model), settings.batch_size)

    def _normalized(self, batches) -> np.ndarray:
        import torch

        rows = []
        with torch.no_grad():
            for features in batches:
                features = features.float()
                rows.append((features / features.norm(dim=-1, keepdim=True)).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    def images(self, paths: list[Path]) -> np.ndarray:
        import torch
        from PIL import Image, UnidentifiedImageError

        def batches():
            for start in range(0, len(paths), self.batch_size):
                tensors = []
                for path in paths[start : start + self.batch_size]:
                    try:
                        with Image.open(path) as image:
                            tensors.append(self.preprocess(image.convert("RGB")))
                    except (OSError, UnidentifiedImageError):
                        raise UnimpError(f"image {path} cannot be read") from None
                yield self.model.encode_image(torch.stack(tensors))

        return self._normalized(batches())

    def texts(self, texts: list[str]) -> np.ndarray:
        def batches():
            for start in range(0, len(texts), self.batch_size):
                yield self.model.encode_text(self.tokenizer(texts[start : start + self.batch_size]))

        return self._normalized(batches())
