"""The image tokenizer of personalized image generation (paper section 2.4): a VQ model that turns an
image into a grid of discrete codes and back. It is diffusers' `VQModel`, either trained here at
small resolution on the catalog's images (CPU-feasible: 32 px, the tiny preset's vision resolution,
256 codes, an 8 x 8 grid) or loaded
from a local folder holding a pretrained one (safetensors only, e.g. the VQGAN of the aMUSEd release).

A tokenizer folder is diffusers' own (`config.json`, `diffusion_pytorch_model.safetensors`) plus
`unimp_tokenizer.json`: the resolution images are read at and, for one trained here, how it was
trained and how well it reconstructs the catalog images it never saw.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unimp_bench.config import to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import atomic_directory, file_sha256, read_json, write_json_atomic

log = logging.getLogger(__name__)

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
DESCRIPTION_FILE = "unimp_tokenizer.json"
PRETRAINED_HINT = (
    "download a diffusers VQModel in safetensors (e.g. the `vqvae` folder of "
    "huggingface.co/amused/amused-256) and pass its folder"
)


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """A VQ model small enough to train on CPU. Each entry of `channels` after the first halves the
    resolution, so the code grid is resolution / 2^(len(channels) - 1) on a side."""

    resolution: int = 32
    codebook_size: int = 256
    channels: tuple[int, ...] = (32, 64, 64)  # 32 px -> 8 x 8 codes
    latent_channels: int = 8
    layers_per_block: int = 1

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 or c % 32 for c in self.channels):
            raise UnimpError(
                "image tokenizer channels must be positive multiples of 32 (group normalization)"
            )
        if self.resolution % 2 ** (len(self.channels) - 1):
            raise UnimpError(
                f"the image tokenizer's resolution {self.resolution} is not divisible by its downsampling "
                f"2^{len(self.channels) - 1}"
            )
        if self.codebook_size < 2 or self.latent_channels < 1 or self.layers_per_block < 1:
            raise UnimpError("the image tokenizer needs codebook_size >= 2, latent_channels and layers >= 1")


@dataclass(frozen=True)
class TokenizerTraining:
    steps: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    holdout_fraction: float = 0.1  # catalog images kept out of training, for the reconstruction scores

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UnimpError("tokenizer training needs steps >= 1, batch_size >= 1 and lr > 0")
        if not 0 < self.holdout_fraction < 1:
            raise UnimpError("the tokenizer's holdout_fraction must lie strictly between 0 and 1")


class ImageTokenizer:
    """A VQ model and the resolution it reads images at. Pixels are [B, 3, R, R] in [-1, 1]; codes are
    [B, G*G] row-major over the G x G grid."""

    def __init__(self, vq, resolution: int, folder: Path | None = None):
        self.vq = vq.eval()
        self.resolution = resolution
        self.grid = resolution // 2 ** (len(vq.config.block_out_channels) - 1)
        self.codebook_size = int(vq.config.num_vq_embeddings)
        self.folder = folder

    @property
    def sequence_length(self) -> int:
        return self.grid * self.grid

    def sha256(self) -> str:
        if self.folder is None:
            raise UnimpError("this image tokenizer was never saved, so it has no weights hash")
        return file_sha256(self.folder / WEIGHTS_FILE)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        latents = self.vq.encode(pixels).latents  # [B, D, G, G]
        _, _, (_, _, indices) = self.vq.quantize(latents)  # indices [B*G*G] (or [B*G*G, 1])
        return indices.reshape(pixels.shape[0], -1).long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codes = codes.long().reshape(-1)
        batch = codes.numel() // self.sequence_length
        shape = (batch, self.grid, self.grid, self.vq.quantize.vq_embed_dim)
        if self.vq.config.lookup_from_codebook:  # e.g. aMUSEd: decode() looks the codes up itself
            return self.vq.decode(codes, force_not_quantize=True, shape=shape).sample.clamp(-1, 1)
        quantized = self.vq.quantize.get_codebook_entry(codes, shape)  # [B, D, G, G]
        return self.vq.decode(quantized, force_not_quantize=True).sample.clamp(-1, 1)


def build_vq(config: ImageTokenizerConfig, seed: int):
    from diffusers import VQModel

    torch.manual_seed(seed)
    depth = len(config.channels)
    return VQModel(
        down_block_types=("DownEncoderBlock2D",) * depth,
        up_block_types=("UpDecoderBlock2D",) * depth,
        block_out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        sample_size=config.resolution,
        num_vq_embeddings=config.codebook_size,
        norm_num_groups=32,
    )


def load_image_tokenizer(folder: Path, resolution: int | None = None) -> ImageTokenizer:
    """A tokenizer folder written by `tokenizer train`, or a pretrained diffusers VQModel folder
    (resolution: the size images are read at; default its description's, else its config's)."""
    from diffusers import VQModel

    folder = Path(folder)
    if not folder.is_dir():
        raise UnimpError(f"image tokenizer folder {folder} does not exist; {PRETRAINED_HINT}")
    if not (folder / "config.json").is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise UnimpError(
            f"{folder} holds no diffusers VQModel in safetensors (config.json and {WEIGHTS_FILE}); "
            f"only safetensors weights are loaded: {PRETRAINED_HINT}"
        )
    try:
        vq = VQModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnimpError(
            f"{folder} is not a loadable diffusers VQModel ({str(exc).splitlines()[0][:160]})"
        ) from None
    if resolution is None:
        description = folder / DESCRIPTION_FILE
        if description.is_file():
            resolution = int(read_json(description, "train the tokenizer again")["resolution"])
        else:
            resolution = int(vq.config.sample_size)
    return ImageTokenizer(vq, resolution, folder)


def read_pixels(root: Path, paths: list[str], resolution: int) -> torch.Tensor:
    """Images (dataset-relative paths) centre-cropped square, resized to resolution, [B, 3, R, R] in
    [-1, 1]."""
    from PIL import Image, UnidentifiedImageError

    tensors = []
    for relative in paths:
        path = root / relative
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side))
                image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
                array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        except (OSError, UnidentifiedImageError):
            raise UnimpError(f"image {path} cannot be read") from None
        tensors.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(tensors) if tensors else torch.zeros(0, 3, resolution, resolution)


def reconstruction_quality(tokenizer: ImageTokenizer, pixels: torch.Tensor, batch_size: int = 64) -> dict:
    """PSNR and SSIM (torchmetrics, pixels in [0, 1]) of encode -> decode over `pixels`, next to the
    same scores of each image's own mean colour: a reference any useful tokenizer must beat."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if len(pixels) == 0:
        raise UnimpError("no image to score the tokenizer's reconstruction on")
    decoded = torch.cat(
        [
            tokenizer.decode(tokenizer.encode(pixels[s : s + batch_size]))
            for s in range(0, len(pixels), batch_size)
        ]
    )
    target, decoded = (pixels + 1) / 2, (decoded + 1) / 2
    flat = target.mean(dim=(2, 3), keepdim=True).expand_as(target)

    def scores(images: torch.Tensor) -> dict:
        psnr = peak_signal_noise_ratio(images, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
        ssim = structural_similarity_index_measure(images, target, data_range=1.0, reduction="none")
        return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}

    return {"images": len(pixels), **scores(decoded), "mean_colour": scores(flat)}


def holdout_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..count-1 split into (train, held out), ceil(fraction x count) held out (at least one,
    and at least one left to train), drawn with a seeded generator."""
    if count < 2:
        raise UnimpError(
            f"training an image tokenizer needs at least 2 catalog images, the dataset has {count}"
        )
    held = min(count - 1, max(1, math.ceil(fraction * count)))
    order = np.random.default_rng([seed, 11]).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def train_tokenizer(
    root: Path,
    image_paths: list[str],
    out: Path,
    config: ImageTokenizerConfig,
    training: TokenizerTraining,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """Train a VQ model on the catalog images (dataset-relative paths) less a held-out share, and
    write its folder with the reconstruction scores on the held-out images. Same images + seed give
    the same weights at the same torch version and thread count, both recorded: the order of the CPU's
    float sums follows the thread count (measured: 1 and 2 threads give 29.42 and 29.30 dB)."""
    train_at, held_at = holdout_split(len(image_paths), training.holdout_fraction, training.seed)
    pixels = read_pixels(root, image_paths, config.resolution)
    vq = build_vq(config, training.seed).train()
    optimizer = torch.optim.AdamW(vq.parameters(), lr=training.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(training.seed)
    train_pixels = pixels[torch.from_numpy(train_at)]
    curve = []
    task = progress.add("image tokenizer", training.steps) if progress else None
    for step in range(1, training.steps + 1):
        batch = train_pixels[torch.randint(len(train_pixels), (training.batch_size,), generator=generator)]
        reconstruction, commitment = vq(batch, return_dict=False)
        loss = torch.nn.functional.mse_loss(reconstruction, batch) + commitment.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % max(1, training.steps // 20) == 0 or step == training.steps:
            curve.append({"step": step, "loss": round(loss.item(), 6)})
            log.info("image tokenizer step %d: loss %.4f", step, loss.item())
        if task is not None:
            progress.advance(task)
    tokenizer = ImageTokenizer(vq, config.resolution)
    held_out = pixels[torch.from_numpy(held_at)]
    description = {
        "resolution": config.resolution,
        "grid": tokenizer.grid,
        "codebook_size": config.codebook_size,
        "config": to_mapping(config),
        "training": to_mapping(training),
        "train_images": len(train_at),
        "held_out_images": len(held_at),
        "held_out_quality": reconstruction_quality(tokenizer, held_out),
        "loss_curve": curve,
        "trained_with": {"torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    }
    with atomic_directory(out, overwrite) as staging:
        vq.save_pretrained(staging, safe_serialization=True)
        write_json_atomic(staging / DESCRIPTION_FILE, description)
    return description
