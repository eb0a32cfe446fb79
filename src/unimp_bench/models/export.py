"""Exported UniMP weights: a folder with model.safetensors, unimp.json and the tokenizer.

What is exported: every weight that is not simply a pretrained checkpoint's, i.e. all of a randomly
initialised component (the tiny preset's LM and vision tower) plus everything that was trainable in
some training stage (added token rows, resampler, cross-attention, LoRA adapters, a fine-tuned LM).
Loading rebuilds the model from unimp.json (pretrained parts again from their local weights) and
overlays the exported tensors; nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from unimp_bench import __version__
from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import atomic_directory, read_json
from unimp_bench.models.config import ModelConfig
from unimp_bench.models.factory import build_model, inject_lora
from unimp_bench.models.tokenization import PromptTokenizer, load_saved_tokenizer
from unimp_bench.models.unimp import UniMP

EXPORT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "unimp.json"


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()


def exported_names(model: UniMP, changed: set[str]) -> list[str]:
    """State-dict keys to export: random-init components whole, and every parameter that learned."""
    random_prefixes = []
    if model.config.lm.source == "random":
        random_prefixes.append("lm.")
    if model.config.vision.source == "random":
        random_prefixes.append("vision.")
    names = []
    for name in model.state_dict():
        pretrained_part = name.startswith(("lm.", "vision.")) and not name.startswith(tuple(random_prefixes))
        is_new = ".cross_attention." in name or "lora_" in name
        if not pretrained_part or is_new or name in changed:
            names.append(name)
    return names


def export_model(
    model: UniMP,
    out: Path,
    tokenizer_dir: Path,
    changed: set[str],
    lora: LoraSettings | None,
    provenance: dict,
) -> None:
    """Write the export folder atomically (a reader never sees half an export)."""
    from safetensors.torch import save_file

    state = model.state_dict()
    tensors = {
        name: state[name].detach().cpu().contiguous().clone() for name in exported_names(model, changed)
    }
    meta = {
        "export_version": EXPORT_VERSION,
        "unimp_bench_version": __version__,
        "model": to_mapping(model.config),
        "vocabulary": {
            "base_size": model.vocabulary.base_size,
            "num_items": model.vocabulary.num_items,
            "num_ratings": model.vocabulary.num_ratings,
            "num_image_codes": model.vocabulary.num_image_codes,
        },
        "decoder_layers": model.decoder_layers,
        "lora": to_mapping(lora) if lora else None,
        "provenance": provenance,
    }
    with atomic_directory(out, overwrite=True) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        shutil.copytree(tokenizer_dir, staging / "tokenizer")


@dataclass
class LoadedModel:
    model: UniMP
    tokenizer: PromptTokenizer
    meta: dict


def load_exported(folder: Path) -> LoadedModel:
    """Rebuild a model from an export folder (see export_model)."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise UnimpError(f"{folder} is not an exported UniMP model (no {META_FILE})")
    meta = read_json(meta_path, "export the model again")
    if meta.get("export_version") != EXPORT_VERSION:
        raise UnimpError(
            f"{folder} has export version {meta.get('export_version')}, expected {EXPORT_VERSION}"
        )
    config = from_mapping(ModelConfig, meta["model"], "model")
    base = load_saved_tokenizer(folder / "tokenizer")
    vocabulary = meta["vocabulary"]
    codes = vocabulary.get("num_image_codes", 0)  # exports from before image generation have none
    model = build_model(config, len(base), vocabulary["num_items"], seed=0, num_image_codes=codes)
    if model.vocabulary.base_size != vocabulary["base_size"]:
        raise UnimpError(f"{folder}: the rebuilt LM has a different vocabulary size than the exported one")
    if meta.get("lora"):
        lora = from_mapping(LoraSettings, meta["lora"], "lora")
        inject_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules)
    load_weights(model, folder)
    model.eval()
    return LoadedModel(model, PromptTokenizer(base, model.vocabulary), meta)


def load_weights(model: UniMP, folder: Path) -> None:
    """Overlay an export's tensors on a model built from the same configuration."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as exc:
        raise UnimpError(f"cannot read {folder / WEIGHTS_FILE}: {exc}") from None
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise UnimpError(f"{folder} holds weights this model does not have, e.g. {unknown[0]}")
    missing = sorted(set(exported_names(model, set())) - set(tensors))
    if missing:
        raise UnimpError(f"{folder} lacks weights this model needs, e.g. {missing[0]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor.to(state[name].dtype))


def resolve_export(checkpoint: Path) -> Path:
    """The export folder a --checkpoint names: a run folder (its latest export), one checkpoint folder
    inside it (checkpoints/step_N), or an export folder itself."""
    if not checkpoint.exists():
        raise UnimpError(f"checkpoint {checkpoint} does not exist")
    for folder in (checkpoint, checkpoint / "export"):
        if (folder / META_FILE).is_file():
            return folder
    if (checkpoint / "checkpoints").is_dir():
        raise UnimpError(f"run {checkpoint} has no export yet; train at least until its first checkpoint")
    raise UnimpError(
        f"{checkpoint} is neither a training run, nor one of its checkpoints, nor an exported model"
    )
