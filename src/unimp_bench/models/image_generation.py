"""UniMP writes an image (paper section 2.4): after the prompt (history, query, retrieved items with
their images) it generates exactly one grid of image codes, constrained to the code tokens, and the
image tokenizer the run was trained with decodes them to pixels.

Decoding (eval --image-decoding): greedy, beam (--image-beams) or top-k sampling (--top-k,
--sample-seed; each batch draws from its own seeded generator, so a sample does not depend on the
batch before it).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from unimp_bench.errors import UnimpError
from unimp_bench.results import safe_name


def run_image_tokenizer(meta: dict):
    """The image tokenizer a checkpoint's codes belong to (its export's provenance names it), checked
    against the weights hash it was trained with."""
    from unimp_bench.image_tokens.tokenizer import load_image_tokenizer

    codes = meta.get("provenance", {}).get("image_codes")
    if not codes:
        raise UnimpError("this checkpoint was not trained on image_generation, so it has no image tokenizer")
    tokenizer = load_image_tokenizer(Path(codes["tokenizer_folder"]))
    if tokenizer.sha256() != codes["tokenizer_sha256"]:
        raise UnimpError(
            f"the image tokenizer in {codes['tokenizer_folder']} changed after this checkpoint was trained; "
            "its codes would decode to other images"
        )
    if tokenizer.grid != codes["grid"]:
        raise UnimpError(f"the image tokenizer in {codes['tokenizer_folder']} has another code grid")
    return tokenizer


def generate_codes(predictor, examples: pl.DataFrame, length: int) -> list[list[int]]:
    """Per example, `length` image codes (code indices, not token ids), by the predictor's settings."""
    from unimp_bench.models.generation import ImageCodesOnly

    vocabulary, settings = predictor.model.vocabulary, predictor.settings
    only_codes = [ImageCodesOnly(vocabulary.code_start, vocabulary.item_start)]
    beam = settings.image_decoding == "beam"
    outputs = predictor._generate(
        examples,
        lambda prompt_length, rows: only_codes,
        num_beams=settings.image_beams if beam else 1,
        num_return=1,
        max_new_tokens=length,
        renormalize=beam,
        top_k=settings.top_k if settings.image_decoding == "sample" else None,
        seed=settings.sample_seed,
    )
    codes = [[token - vocabulary.code_start for token in sequences[0]] for sequences in outputs]
    if any(len(row) != length or min(row) < 0 for row in codes):  # the processor makes this impossible
        raise UnimpError("image generation produced a sequence that is not one grid of image codes")
    return codes


def generate_images(predictor, examples: pl.DataFrame, root: Path, folder: str) -> pl.DataFrame:
    """The examples' images as PNGs under root/folder; the prediction frame names them relative to
    root (where the predictions file lies) and keeps their codes."""
    from unimp_bench.image_tokens.catalog import write_png

    tokenizer = run_image_tokenizer(predictor.meta)
    codes = generate_codes(predictor, examples, tokenizer.sequence_length)
    names = []
    for start in range(0, len(codes), 64):
        pixels = tokenizer.decode(torch.tensor(codes[start : start + 64]))
        for example_id, image in zip(examples["example_id"][start : start + 64].to_list(), pixels):
            name = f"{folder}/{safe_name(example_id)}.png"
            write_png(image, root / name)
            names.append(name)
    return pl.DataFrame(
        {"example_id": examples["example_id"], "image": names, "codes": codes},
        schema_overrides={"codes": pl.List(pl.Int32)},
    )
