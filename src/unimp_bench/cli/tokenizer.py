"""`unimp-bench tokenizer train|encode|decode`: the image tokenizer of image generation."""

from pathlib import Path
from typing import Annotated

import typer

from unimp_bench.cli.common import (
    Data,
    Overwrite,
    app,
    friendly_errors,
    out,
    out_option,
    print_json,
    seed_option,
    show_progress,
)
from unimp_bench.errors import UnimpError

tokenizer_app = typer.Typer(
    help="The image tokenizer (a VQ model) and the catalog's cached image codes.", no_args_is_help=True
)
app.add_typer(tokenizer_app, name="tokenizer")

Resolution = Annotated[
    int | None, typer.Option(min=8, help="Pixels per side images are read at (default: the tokenizer's).")
]


@tokenizer_app.command("train")
@friendly_errors
def tokenizer_train_command(
    data: Data,
    tokenizer_dir: out_option("Tokenizer folder (default: DATA/image_tokens/tokenizer).") = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps [default: 500].")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per step [default: 16].")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="AdamW learning rate [default: 0.001].")] = None,
    resolution: Annotated[
        int | None, typer.Option(min=8, help="Pixels per side images are read at [default: 32].")
    ] = None,
    codebook_size: Annotated[
        int | None, typer.Option(min=2, help="Codes in the codebook [default: 256].")
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated block widths; each after the first halves the grid [default: 32,64,64]."
        ),
    ] = None,
    holdout_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of catalog images kept out of training, to score reconstruction [default: 0.1]."
        ),
    ] = None,
    seed: seed_option("Seed of the initialization, the batches and the held-out images.") = 0,
    overwrite: Overwrite = False,
):
    """Train a small VQ model on the catalog images, then encode every catalog image with it (the
    codes are cached with the dataset, where `build` and `train` find them).

    Example: unimp-bench tokenizer train data/synthetic --steps 500
    """
    from unimp_bench.data.contract import open_dataset
    from unimp_bench.image_tokens.catalog import default_tokenizer_folder, encode_catalog_images
    from unimp_bench.image_tokens.tokenizer import ImageTokenizerConfig, TokenizerTraining, train_tokenizer
    from unimp_bench.models.inputs import catalog_image_paths
    from unimp_bench.progress import ProgressReporter

    widths = None
    if channels is not None:
        try:
            widths = tuple(int(c) for c in channels.split(","))
        except ValueError:
            raise UnimpError(f"--channels must be comma-separated integers, got {channels!r}") from None

    def given(**options):  # the dataclasses hold the defaults
        return {name: value for name, value in options.items() if value is not None}

    config = ImageTokenizerConfig(
        **given(resolution=resolution, codebook_size=codebook_size, channels=widths)
    )
    training = TokenizerTraining(
        **given(steps=steps, batch_size=batch_size, lr=lr, holdout_fraction=holdout_fraction), seed=seed
    )
    dataset = open_dataset(data)
    paths = [p for p in catalog_image_paths(dataset) if p is not None]
    folder = tokenizer_dir or default_tokenizer_folder(data)
    with ProgressReporter(show_progress()) as progress:
        description = train_tokenizer(dataset.root, paths, folder, config, training, overwrite, progress)
        manifest = encode_catalog_images(data, folder, progress=progress)
    quality, grid = description["held_out_quality"], manifest["tokenizer"]["grid"]
    out.print(
        f"Trained the image tokenizer on {description['train_images']} images ({folder}): held-out PSNR "
        f"{quality['psnr']:.2f} dB, SSIM {quality['ssim']:.3f} over {quality['images']} images (each "
        f"image's mean colour: {quality['mean_colour']['psnr']:.2f} dB); encoded "
        f"{manifest['items_with_codes']} catalog images as {grid}x{grid} codes ({manifest['codes_used']} "
        f"of {config.codebook_size} codes used).",
        highlight=False,
    )


@tokenizer_app.command("encode")
@friendly_errors
def tokenizer_encode_command(
    data: Data,
    tokenizer_dir: Annotated[
        Path | None,
        typer.Option(
            "--tokenizer",
            help="A tokenizer folder: one `tokenizer train` wrote, or a pretrained diffusers VQModel "
            "in safetensors (default: DATA/image_tokens/tokenizer).",
        ),
    ] = None,
    resolution: Resolution = None,
):
    """Encode every catalog image into codes, cached with the dataset (DATA/image_tokens).

    Example: unimp-bench tokenizer encode data/synthetic --tokenizer models/amused-256/vqvae --resolution 256
    """
    from unimp_bench.image_tokens.catalog import encode_catalog_images
    from unimp_bench.progress import ProgressReporter

    with ProgressReporter(show_progress()) as progress:
        manifest = encode_catalog_images(data, tokenizer_dir, resolution, progress)
    print_json(manifest)


@tokenizer_app.command("decode")
@friendly_errors
def tokenizer_decode_command(
    data: Data,
    image: Annotated[Path, typer.Option("--out", help="The PNG to write.")],
    item: Annotated[
        str | None, typer.Option(help="Decode this item's cached codes (its ASIN or item_idx).")
    ] = None,
    codes: Annotated[str | None, typer.Option(help="Decode these comma-separated codes instead.")] = None,
):
    """Decode codes back to pixels with the dataset's tokenizer: an item's cached codes (what the
    model learns to produce for it) or a sequence given on the command line.

    Example: unimp-bench tokenizer decode data/synthetic --item S000000000 --out item.png
    """
    import polars as pl
    import torch

    from unimp_bench.data.contract import open_dataset
    from unimp_bench.image_tokens.catalog import catalog_codes, write_png

    if (item is None) == (codes is None):
        raise UnimpError("pass exactly one of --item and --codes")
    if image.suffix.lower() != ".png":
        raise UnimpError(f"--out must name a .png file, got {image}")
    cached = catalog_codes(data)
    if item is not None:
        items = open_dataset(data).scan("items").select("item_idx", "asin").collect()
        match = items.filter((pl.col("asin") == item) | (pl.col("item_idx").cast(pl.String) == item))
        if match.is_empty():
            raise UnimpError(f"{data} has no item {item!r} (an ASIN or an item_idx)")
        sequence = cached.codes[int(match["item_idx"][0])]
        if sequence is None:
            raise UnimpError(f"item {item} has no image, so it has no codes")
    else:
        try:
            sequence = [int(c) for c in codes.split(",")]
        except ValueError:
            raise UnimpError("--codes must be comma-separated integers") from None
    if len(sequence) != cached.sequence_length or not all(0 <= c < cached.codebook_size for c in sequence):
        raise UnimpError(
            f"the tokenizer decodes {cached.sequence_length} codes between 0 and {cached.codebook_size - 1}, "
            f"got {len(sequence)} codes"
        )
    pixels = cached.tokenizer().decode(torch.tensor(sequence)[None])
    write_png(pixels[0], image)
    out.print(f"Wrote {image}.", highlight=False)
