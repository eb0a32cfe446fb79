"""Builds UniMP from a ModelConfig: language model, vision tower, decoder-layer discovery, freezing,
and the trainable-parameter modes of the learning strategies (LoRA included).

Weights are never downloaded: a pretrained LM or CLIP tower comes from a local folder/file or from the
Hugging Face cache, and its absence is one error naming what to fetch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unimp_bench.errors import UnimpError
from unimp_bench.models.config import LanguageModelConfig, ModelConfig, VisionConfig
from unimp_bench.models.tokenization import AddedVocabulary
from unimp_bench.models.unimp import CrossAttentionDecoderLayer, UniMP, resolve_attribute

# where each supported family keeps its decoder layers (Hugging Face model_type -> attribute path)
DECODER_LAYERS = {
    "gpt_neox": "gpt_neox.layers",
    "llama": "model.layers",
    "qwen2": "model.layers",
    "mistral": "model.layers",
    "gpt2": "transformer.h",
    "mpt": "transformer.blocks",
    "opt": "model.decoder.layers",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_lm_config(cfg: LanguageModelConfig, vocab_size: int):
    """A small Hugging Face config of `cfg.family` with the given sizes (no dropout, untied head)."""
    import transformers as hf

    h, n, heads, ff, pos = cfg.hidden_size, cfg.layers, cfg.heads, cfg.intermediate_size, cfg.max_positions
    common = {"vocab_size": vocab_size, "tie_word_embeddings": False}
    if cfg.family == "gpt_neox":
        return hf.GPTNeoXConfig(
            hidden_size=h,
            num_hidden_layers=n,
            num_attention_heads=heads,
            intermediate_size=ff,
            max_position_embeddings=pos,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
    if cfg.family in ("llama", "qwen2", "mistral"):
        config_class = {"llama": hf.LlamaConfig, "qwen2": hf.Qwen2Config, "mistral": hf.MistralConfig}
        return config_class[cfg.family](
            hidden_size=h,
            num_hidden_layers=n,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            intermediate_size=ff,
            max_position_embeddings=pos,
            **common,
        )
    if cfg.family == "gpt2":
        return hf.GPT2Config(
            n_embd=h, n_layer=n, n_head=heads, n_inner=ff, n_positions=pos,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1, **common,
        )  # fmt: skip
    if cfg.family == "mpt":
        return hf.MptConfig(
            d_model=h, n_heads=heads, n_layers=n, expansion_ratio=max(1, ff // h), max_seq_len=pos,
            resid_pdrop=0.0, emb_pdrop=0.0, **common,
        )  # fmt: skip
    if cfg.family == "opt":
        return hf.OPTConfig(
            hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, ffn_dim=ff,
            max_position_embeddings=pos, word_embed_proj_dim=h, dropout=0.0, attention_dropout=0.0,
            **common,
        )  # fmt: skip
    raise UnimpError(f"no random configuration for the LM family {cfg.family!r}")


def build_language_model(cfg: LanguageModelConfig, vocab_size: int) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if cfg.source == "random":
        return AutoModelForCausalLM.from_config(random_lm_config(cfg, vocab_size))
    try:
        return AutoModelForCausalLM.from_pretrained(
            cfg.name, local_files_only=True, dtype=DTYPES[cfg.dtype], low_cpu_mem_usage=True
        )
    except (OSError, ValueError) as exc:
        raise UnimpError(
            f"the language model {cfg.name} is not available locally ({str(exc).splitlines()[0]}); "
            f"download it first (huggingface-cli download {cfg.name}) or set model.lm.name to its folder"
        ) from None


def load_pretrained_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UnimpError(
            f"the tokenizer of {name} is not available locally ({str(exc).splitlines()[0]}); "
            f"download it first (huggingface-cli download {name}) or set model.lm.name to its folder"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_vision_tower(cfg: VisionConfig) -> nn.Module:
    """An open_clip VisionTransformer that returns (pooled, patch tokens)."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    if cfg.source == "random":
        return VisionTransformer(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.width,
            layers=cfg.layers,
            heads=cfg.heads,
            mlp_ratio=2.0,
            output_dim=cfg.width,
            output_tokens=True,
        )
    weights = resolve_clip_weights(cfg)
    model = open_clip.create_model(cfg.model, pretrained=str(weights), weights_only=True)
    vision = model.visual
    vision.output_tokens = True  # open_clip's own switch: forward returns (pooled, patch tokens)
    return vision


def resolve_clip_weights(cfg: VisionConfig) -> Path:
    """A local weights file for the open_clip model: the path given, or the tag's file in the HF cache."""
    import open_clip

    if cfg.model not in open_clip.list_models():
        raise UnimpError(f"open_clip has no model {cfg.model!r}")
    if Path(cfg.pretrained).is_file():
        return Path(cfg.pretrained)
    pretrained = open_clip.pretrained.get_pretrained_cfg(cfg.model, cfg.pretrained)
    hub = (pretrained or {}).get("hf_hub", "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(hub, filename)
            if isinstance(cached, str):
                return Path(cached)
    raise UnimpError(
        f"the open_clip weights {cfg.model}/{cfg.pretrained} are not in the Hugging Face cache; "
        f"download them first (huggingface-cli download {hub or 'the weights'}) or set "
        "model.vision.pretrained to a local weights file"
    )


def find_decoder_layers(lm: nn.Module, override: str | None) -> str:
    """Attribute path of the LM's decoder layer list (explicit override first, then the family table)."""
    model_type = getattr(lm.config, "model_type", None)
    path = override or DECODER_LAYERS.get(model_type)
    if path is None:
        raise UnimpError(
            f"cannot find the decoder layers of a {model_type!r} model; set model.lm.decoder_layers to "
            "the attribute path of its layer list (for example model.layers)"
        )
    try:
        layers = resolve_attribute(lm, path)
    except AttributeError:
        raise UnimpError(f"the {model_type!r} model has no attribute path {path!r}") from None
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnimpError(f"{path!r} of the {model_type!r} model is not a non-empty list of layers")
    return path


def build_model(
    config: ModelConfig, base_vocab_size: int, num_items: int, seed: int, num_image_codes: int = 0
) -> UniMP:
    """The whole model, seeded, with the vision tower (and a pretrained LM when configured) frozen
    (num_image_codes: the image tokenizer's codebook, when the model generates images)."""
    torch.manual_seed(seed)
    lm = build_language_model(config.lm, base_vocab_size)
    vision = build_vision_tower(config.vision)
    vocabulary = AddedVocabulary(
        base_size=lm.get_input_embeddings().num_embeddings,
        num_items=num_items,
        num_ratings=config.num_ratings,
        num_image_codes=num_image_codes,
    )
    path = find_decoder_layers(lm, config.lm.decoder_layers)
    model = UniMP(lm, vision, config, vocabulary, path)
    set_trainable(model, "default")
    return model


TRAINABLE_MODES = ("default", "full", "last_layer", "lora")


def set_trainable(model: UniMP, mode: str, lm_embeddings: bool = False) -> None:
    """Which parameters learn.

    default:    everything except the vision tower, and except the LM's own weights when it is frozen;
                the added token rows, resampler and cross-attention always learn.
    full:       also the LM's own weights (the "then full fine-tune" strategy).
    last_layer: the last decoder layer (with its cross-attention, if any) and the added tokens'
                output rows (with content rows, their output projection too): the item and rating
                rows are what ranking and rating read, so a stage that trains the last layer must
                keep them learning.
    lora:       only LoRA adapters (inject_lora must have run).
    lm_embeddings: also the LM's own input and output embeddings (any mode).
    """
    if mode not in TRAINABLE_MODES:
        raise UnimpError(f"unknown trainable mode {mode!r}; use one of {', '.join(TRAINABLE_MODES)}")
    model.vision.eval()
    for name, parameter in model.named_parameters():
        if name.startswith("vision."):
            learns = False
        elif mode == "lora":
            learns = "lora_" in name
        elif mode == "last_layer":
            learns = False
        elif name.startswith("lm.") and not _is_cross_attention(name):
            learns = mode == "full" or not model.config.lm.freeze
        else:
            learns = True
        parameter.requires_grad_(learns)
    if mode == "last_layer":
        layers = resolve_attribute(model.lm, model.decoder_layers)
        for parameter in layers[len(layers) - 1].parameters():
            parameter.requires_grad_(True)
        model.added_output.requires_grad_(True)
        if model.items is not None:  # content rows: the output projection is the item rows' head
            model.items.to_output.requires_grad_(True)
    if lm_embeddings:
        model.lm.get_input_embeddings().weight.requires_grad_(True)
        model.lm.get_output_embeddings().weight.requires_grad_(True)


def _is_cross_attention(name: str) -> bool:
    return ".cross_attention." in name


def inject_lora(model: UniMP, rank: int, alpha: int, dropout: float, target_modules: tuple[str, ...]) -> None:
    """Add LoRA adapters (peft) to the LM's decoder linear layers named in target_modules."""
    from peft import LoraConfig, inject_adapter_in_model

    if not target_modules:
        target_modules = _default_lora_targets(model)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    layers = resolve_attribute(model.lm, model.decoder_layers)
    for index in range(len(layers)):
        layer = layers[index]
        inner = layer.decoder_layer if isinstance(layer, CrossAttentionDecoderLayer) else layer
        try:
            inject_adapter_in_model(config, inner)
        except ValueError as exc:
            raise UnimpError(f"LoRA found no target modules {list(target_modules)}: {exc}") from None


def _default_lora_targets(model: UniMP) -> tuple[str, ...]:
    """The attention projections of the LM's family."""
    names = {
        name.rsplit(".", 1)[-1] for name, module in model.lm.named_modules() if isinstance(module, nn.Linear)
    }
    for candidates in (("q_proj", "v_proj"), ("query_key_value",), ("c_attn",), ("Wqkv",)):
        if all(c in names for c in candidates):
            return candidates
    raise UnimpError("cannot guess the LoRA target modules of this LM; set train.lora.target_modules")
