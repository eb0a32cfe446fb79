"""Item content features that need no training: images (CLIP embeddings from local open_clip weights,
or 8x8 thumbnails where no weights are at hand) and text (TF-IDF over the item's fields)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench.clip_scoring import ClipEmbedder, ClipSettings
from unimp_bench.errors import UnimpError
from unimp_bench.retrieval import item_documents

THUMBNAIL = 8


def thumbnail_features(root: Path, paths: list[str | None]) -> np.ndarray:
    """[items, 192]: each image shrunk to 8x8 RGB in [0, 1], centred; zeros without an image."""
    from PIL import Image, UnidentifiedImageError

    features = np.zeros((len(paths), THUMBNAIL * THUMBNAIL * 3), dtype=np.float32)
    for row, path in enumerate(paths):
        if not path:
            continue
        try:
            with Image.open(root / path) as image:
                small = image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR)
        except (OSError, UnidentifiedImageError):
            raise UnimpError(f"item image {root / path} cannot be read") from None
        features[row] = np.asarray(small, dtype=np.float32).ravel() / 255.0 - 0.5
    return features


def clip_features(root: Path, paths: list[str | None], embedder: ClipEmbedder) -> np.ndarray:
    present = [row for row, path in enumerate(paths) if path]
    if not present:
        raise UnimpError("image features need item images, and no item has one")
    embedded = embedder.images([root / paths[row] for row in present])
    features = np.zeros((len(paths), embedded.shape[1]), dtype=np.float32)
    features[present] = embedded
    return features


def image_features(
    root: Path,
    paths: list[str | None],
    kind: str,
    clip_model: str,
    clip_checkpoint: str | None,
    embedder: ClipEmbedder | None,
    who: str,
    alternative: str,
) -> np.ndarray:
    """[items, F] image features of `kind` clip (local open_clip weights: `embedder`, or loaded from
    `clip_checkpoint`) or thumbnail; without weights for clip, one sentence naming `alternative`."""
    if kind != "clip":
        return thumbnail_features(root, paths)
    if embedder is None and not clip_checkpoint:
        raise UnimpError(
            f"{who} needs local CLIP weights: set params.clip_checkpoint (open_clip {clip_model} "
            f"weights) in a copy of its YAML, or use {alternative}"
        )
    embedder = embedder or ClipEmbedder.from_settings(ClipSettings(clip_model, clip_checkpoint))
    return clip_features(root, paths, embedder)


def text_features(items: pl.DataFrame, fields: Sequence[str], max_features: int):
    """[items, vocabulary] L2-normalized TF-IDF rows (sparse) of the items' fields, indexed by
    item_idx; an item without any text has a zero row."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    documents = [" ".join(tokens) for tokens in item_documents(items, fields)]
    if not any(documents):
        raise UnimpError("text features need item text, and no item has any")
    vectorizer = TfidfVectorizer(max_features=max_features, token_pattern=r"\S+", norm="l2", dtype=np.float32)
    return vectorizer.fit_transform(documents)
