"""Every catalog item's image as a code sequence, cached with the dataset.

    DATA/image_tokens/tokenizer/      the tokenizer `tokenizer train DATA` trains (by default)
    DATA/image_tokens/codes.parquet   item_idx, codes (list[int32], G*G of them; null: no image)
    DATA/image_tokens/manifest.json   the dataset's content hash, the tokenizer (folder, weights
                                      sha256, resolution, grid, codebook), the codes file's sha256,
                                      counts and the reconstruction scores

`build` and `train` find the codes here with no extra flag; `catalog_codes` refuses codes made for
another version of the dataset, or by a tokenizer whose weights changed since.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from unimp_bench.data.contract import open_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import (
    file_sha256,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from unimp_bench.image_tokens.tokenizer import (
    DESCRIPTION_FILE,
    ImageTokenizer,
    load_image_tokenizer,
    read_pixels,
    reconstruction_quality,
)

FOLDER = "image_tokens"
CODES_FILE = "codes.parquet"
MANIFEST_FILE = "manifest.json"
QUALITY_SAMPLE = 256  # catalog images a pretrained tokenizer's reconstruction is scored on


def tokens_folder(data: Path) -> Path:
    return Path(data) / FOLDER


def default_tokenizer_folder(data: Path) -> Path:
    return tokens_folder(data) / "tokenizer"


@dataclass(frozen=True)
class CatalogCodes:
    codes: list[list[int] | None]  # by item_idx
    grid: int
    codebook_size: int
    tokenizer_folder: Path
    tokenizer_sha256: str

    codes_sha256: str

    @property
    def sequence_length(self) -> int:
        return self.grid * self.grid

    def describe(self) -> dict:
        """What examples and checkpoints record of the codes they were made with."""
        return {
            "codes_sha256": self.codes_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            "tokenizer_folder": str(self.tokenizer_folder.resolve()),
            "grid": self.grid,
            "codebook_size": self.codebook_size,
        }

    def tokenizer(self) -> ImageTokenizer:
        tokenizer = load_image_tokenizer(self.tokenizer_folder)
        if tokenizer.sha256() != self.tokenizer_sha256:
            raise UnimpError(
                f"the image tokenizer in {self.tokenizer_folder} changed after the catalog was encoded; "
                "run `unimp-bench tokenizer encode` again"
            )
        return tokenizer


def encode_catalog_images(
    data: Path, tokenizer_folder: Path | None = None, resolution: int | None = None, progress=None
) -> dict:
    """Encode every catalog image with the tokenizer (default: the one trained for this dataset) and
    write codes.parquet and manifest.json under DATA/image_tokens. Returns the manifest."""
    dataset = open_dataset(data)
    folder = Path(tokenizer_folder) if tokenizer_folder else default_tokenizer_folder(data)
    if tokenizer_folder is None and not folder.is_dir():
        raise UnimpError(
            f"{data} has no image tokenizer yet; run `unimp-bench tokenizer train {data}` or pass --tokenizer"
        )
    tokenizer = load_image_tokenizer(folder, resolution)
    items = dataset.scan("items").select("item_idx", "image_path").sort("item_idx").collect()
    with_image = items.filter(pl.col("image_path").is_not_null())
    if with_image.is_empty():
        raise UnimpError(
            f"{data} has no item images to encode; prepare it with --images or --download-images"
        )
    paths, batch = with_image["image_path"].to_list(), 64
    task = progress.add("image codes", len(paths)) if progress else None
    codes = []
    for start in range(0, len(paths), batch):
        codes.append(
            tokenizer.encode(read_pixels(dataset.root, paths[start : start + batch], tokenizer.resolution))
        )
        if task is not None:
            progress.advance(task, len(paths[start : start + batch]))
    codes = torch.cat(codes).numpy().astype(np.int32)
    by_item: list[list[int] | None] = [None] * items.height
    for item, row in zip(with_image["item_idx"].to_list(), codes):
        by_item[item] = row.tolist()
    frame = pl.DataFrame(
        {"item_idx": items["item_idx"], "codes": by_item},
        schema={"item_idx": pl.Int32, "codes": pl.List(pl.Int32)},
    )
    out = tokens_folder(data)
    write_parquet_atomic(frame, out / CODES_FILE)
    manifest = {
        "dataset_content_hash": dataset.manifest["content_hash"],
        "tokenizer": {
            "folder": _recorded_folder(data, folder),
            "sha256": tokenizer.sha256(),
            "resolution": tokenizer.resolution,
            "grid": tokenizer.grid,
            "codebook_size": tokenizer.codebook_size,
            "trained_here": (folder / DESCRIPTION_FILE).is_file(),
        },
        "codes_sha256": file_sha256(out / CODES_FILE),
        "items": items.height,
        "items_with_codes": len(paths),
        "items_without_image": items.height - len(paths),
        "codes_used": int(np.unique(codes).size),
        "quality": _quality(dataset.root, folder, tokenizer, paths),
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    return manifest


def _recorded_folder(data: Path, folder: Path) -> str:
    """The tokenizer folder as the manifest records it: relative to DATA/image_tokens when it lies
    inside the dataset (so the dataset can be moved or copied whole), absolute otherwise."""
    resolved = folder.resolve()
    try:
        return resolved.relative_to(tokens_folder(data).resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _quality(root: Path, folder: Path, tokenizer: ImageTokenizer, paths: list[str]) -> dict:
    """The held-out reconstruction scores: of a tokenizer trained here, on the images its training
    kept out; of a pretrained one, on a fixed sample of the catalog (none of which it trained on)."""
    description = folder / DESCRIPTION_FILE
    if description.is_file():
        quality = read_json(description, "train the tokenizer again").get("held_out_quality")
        if quality:
            return {"on": "images held out of the tokenizer's training", **quality}
    sample = sorted(np.random.default_rng(0).permutation(len(paths))[:QUALITY_SAMPLE].tolist())
    pixels = read_pixels(root, [paths[i] for i in sample], tokenizer.resolution)
    return {
        "on": "a sample of the catalog (pretrained tokenizer)",
        **reconstruction_quality(tokenizer, pixels),
    }


def catalog_codes(data: Path, required: bool = True) -> CatalogCodes | None:
    """The cached codes of DATA's catalog, checked against the dataset and the codes file; None when
    there are none and they are not required."""
    dataset = open_dataset(data)
    manifest_path = tokens_folder(data) / MANIFEST_FILE
    if not manifest_path.is_file():
        if not required:
            return None
        raise UnimpError(
            f"{data} has no image codes; run `unimp-bench tokenizer train {data}` (or `tokenizer encode` "
            "with a pretrained tokenizer) first"
        )
    remedy = f"run `unimp-bench tokenizer encode {data}` again"
    manifest = read_json(manifest_path, remedy)
    if manifest.get("dataset_content_hash") != dataset.manifest["content_hash"]:
        raise UnimpError(
            f"the image codes in {manifest_path.parent} belong to another version of {data}; {remedy}"
        )
    codes_path = tokens_folder(data) / CODES_FILE
    if not codes_path.is_file() or file_sha256(codes_path) != manifest.get("codes_sha256"):
        raise UnimpError(f"{codes_path} is missing or does not match its manifest; {remedy}")
    frame = pl.read_parquet(codes_path).sort("item_idx")
    tokenizer = manifest["tokenizer"]
    return CatalogCodes(
        frame["codes"].to_list(),
        int(tokenizer["grid"]),
        int(tokenizer["codebook_size"]),
        tokens_folder(data) / tokenizer["folder"],  # an absolute folder stays absolute
        tokenizer["sha256"],
        manifest["codes_sha256"],
    )


def write_png(pixels: torch.Tensor, out: Path) -> None:
    """One image [3, R, R] in [-1, 1] as a PNG, written atomically."""
    from PIL import Image

    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_bytes_atomic(Path(out), buffer.getvalue())
