"""Model configuration: frozen dataclasses, filled from the `model:` section of a training preset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unimp_bench.config import check_choices
from unimp_bench.errors import UnimpError

LM_FAMILIES = ("gpt_neox", "llama", "qwen2", "mistral", "gpt2", "mpt", "opt")
Mask = Literal["exclusive", "previous", "all"]
Fusion = Literal["cross_attention", "early", "late", "inline", "none"]
Source = Literal["random", "pretrained"]
Items = Literal["id", "content", "content+id"]


def _positive(section: str, **values: int) -> None:
    """One sentence for the first size that is not a positive number."""
    for name, value in values.items():
        if value < 1:
            raise UnimpError(f"{section}.{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class LanguageModelConfig:
    source: Source = "random"  # random (built locally from the sizes below) | pretrained
    name: str | None = None  # pretrained: a local folder or a Hugging Face id already in the cache
    family: str = "gpt_neox"  # random: which architecture to build
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 1024
    tokenizer: Literal["bpe", "pretrained"] = (
        "bpe"  # bpe: trained on the dataset's text; pretrained: the LM's own
    )
    bpe_vocab_size: int = 2000
    decoder_layers: str | None = None  # attribute path of the decoder layer list, overrides discovery
    freeze: bool = False
    dtype: str = "float32"  # weights are loaded in this dtype (the trainer's precision casts later)

    def __post_init__(self) -> None:
        check_choices(self, "model.lm.")
        if self.source == "pretrained" and not self.name:
            raise UnimpError("model.lm.name must name the pretrained language model (a folder or a HF id)")
        if self.source == "random" and self.family not in LM_FAMILIES:
            raise UnimpError(f"model.lm.family must be one of {', '.join(LM_FAMILIES)}, got {self.family!r}")
        if self.tokenizer == "pretrained" and self.source == "random":
            raise UnimpError("a random language model has no pretrained tokenizer; use tokenizer: bpe")
        _positive("model.lm", hidden_size=self.hidden_size, layers=self.layers, heads=self.heads,
                  intermediate_size=self.intermediate_size, max_positions=self.max_positions,
                  bpe_vocab_size=self.bpe_vocab_size)  # fmt: skip
        if self.source == "random" and self.hidden_size % self.heads:
            raise UnimpError(
                f"model.lm.hidden_size {self.hidden_size} must be a multiple of model.lm.heads {self.heads}"
            )


@dataclass(frozen=True)
class VisionConfig:
    source: Source = "random"  # random (a small open_clip ViT built locally) | pretrained
    model: str = "ViT-L-14"  # pretrained: the open_clip architecture
    pretrained: str = "openai"  # pretrained: an open_clip tag found in the HF cache, or a weights file
    image_size: int = 32
    patch_size: int = 8
    width: int = 64
    layers: int = 2
    heads: int = 4
    feature_cache_gb: float = 4.0  # precompute the frozen tower's output when it fits in this budget

    def __post_init__(self) -> None:
        check_choices(self, "model.vision.")
        _positive("model.vision", image_size=self.image_size, patch_size=self.patch_size, width=self.width,
                  layers=self.layers, heads=self.heads)  # fmt: skip
        if self.source == "random" and (self.width % self.heads or self.image_size % self.patch_size):
            raise UnimpError(
                "model.vision.width must be a multiple of its heads and image_size of its patch_size"
            )


@dataclass(frozen=True)
class ResamplerConfig:
    latents: int = 8  # visual tokens per image
    depth: int = 2
    heads: int = 4
    head_dim: int = 32

    def __post_init__(self) -> None:
        _positive("model.resampler", latents=self.latents, depth=self.depth, heads=self.heads,
                  head_dim=self.head_dim)  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    cross_attn_every: int = 2
    cross_attn_heads: int = 4
    cross_attn_head_dim: int = 32
    mask: Mask = "exclusive"
    fusion: Fusion = "cross_attention"
    max_length: int = 512
    num_ratings: int = 5
    # item rows: id (one learned row per item, the paper's item tokens) | content (computed from the
    # item's chunk and image) | content+id (content plus an ID residual); see models/item_rows.py
    items: Items = "id"
    item_id_dropout: float = 0.5  # content+id: share of items whose ID residual a training step drops
    item_chunk_tokens: int = 48  # content: an item chunk is cut to this many tokens ([EOC] kept last)
    # content: optimizer steps between re-encodings of the whole catalog. 1 keeps every row exact; a
    # larger value is cheaper on a large catalog but trains against stale rows (benchmarks/NOTES.md)
    item_refresh_every: int = 1
    item_fresh_per_batch: int = 256  # content: at most this many batch items encoded with gradient

    def __post_init__(self) -> None:
        check_choices(self, "model.")
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise UnimpError(f"model.item_id_dropout must be in [0, 1), got {self.item_id_dropout}")
        _positive("model", item_refresh_every=self.item_refresh_every,
                  item_fresh_per_batch=self.item_fresh_per_batch)  # fmt: skip
        if self.item_chunk_tokens < 3:
            raise UnimpError("model.item_chunk_tokens must be at least 3 ([IMG], a word, [EOC])")
        _positive("model", cross_attn_every=self.cross_attn_every, cross_attn_heads=self.cross_attn_heads,
                  cross_attn_head_dim=self.cross_attn_head_dim, num_ratings=self.num_ratings)  # fmt: skip
        if self.max_length < 16:
            raise UnimpError("model.max_length must be at least 16 tokens")
