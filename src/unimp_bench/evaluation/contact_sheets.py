"""Contact sheets of image generation: one PNG per evaluated user (the first N users of a split),
showing in one row the user's history images, the retrieved items' images, the generated image and
the target item's image, each labelled, so a reader sees what the model was given and what it made."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from unimp_bench.fileio import write_bytes_atomic
from unimp_bench.results import safe_name

TILE = 64  # pixels per image side on a sheet
GAP = 8
LABEL = 14


def write_contact_sheets(
    examples: pl.DataFrame,
    predictions: pl.DataFrame,
    dataset,
    predictions_root: Path,
    folder: str,
    users: int,
) -> list[str]:
    """Sheets for the first `users` distinct users (in example order); returns their paths relative
    to predictions_root. Items without an image show as a grey tile."""
    from PIL import Image, ImageDraw

    from unimp_bench.models.inputs import catalog_image_paths

    dataset_root, image_of = dataset.root, catalog_image_paths(dataset)  # image_of[item_idx]
    generated = dict(zip(predictions["example_id"].to_list(), predictions["image"].to_list()))
    retrieved_by = dict(zip(predictions["example_id"].to_list(), predictions["retrieved"].to_list()))
    written, seen = [], set()
    for row in examples.iter_rows(named=True):
        if len(seen) == users:
            break
        if row["user_idx"] in seen or row["example_id"] not in generated:
            continue
        seen.add(row["user_idx"])
        groups = [
            ("history", [_path(dataset_root, image_of[i]) for i in row["history"]]),
            ("retrieved", [_path(dataset_root, image_of[i]) for i in retrieved_by[row["example_id"]]]),
            ("generated", [predictions_root / generated[row["example_id"]]]),
            ("target", [dataset_root / row["target_image"]]),
        ]
        tiles = sum(len(paths) for _, paths in groups)
        width = tiles * TILE + (tiles + len(groups)) * GAP
        sheet = Image.new("RGB", (width, TILE + LABEL + 2 * GAP), "white")
        draw = ImageDraw.Draw(sheet)
        x = GAP
        for label, paths in groups:
            draw.text((x, 2), label, fill="black")
            for path in paths:
                sheet.paste(_tile(path), (x, LABEL + GAP))
                x += TILE + GAP
            x += GAP
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        name = f"{folder}/user_{row['user_idx']}_{safe_name(row['example_id'])}.png"
        write_bytes_atomic(predictions_root / name, buffer.getvalue())
        written.append(name)
    return written


def _path(root: Path, relative: str | None) -> Path | None:
    return None if relative is None else root / relative


def _tile(path: Path | None):
    from PIL import Image

    if path is None:
        return Image.new("RGB", (TILE, TILE), (200, 200, 200))
    with Image.open(path) as image:
        return image.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
