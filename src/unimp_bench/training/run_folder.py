"""The run folder, prepared once before any worker starts: config.yaml, the train examples of every
configured task and the tokenizer."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from unimp_bench.config import to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.examples import BuildSettings, build_examples, dataset_identity, open_examples
from unimp_bench.fileio import write_bytes_atomic
from unimp_bench.models.tokenization import (
    MARKER_PATTERN,
    train_bpe_tokenizer,
)
from unimp_bench.training.config import BPE_TRAINING_TEXTS, RunConfig, dump_config
from unimp_bench.training.plan import load_train_examples

# run folder preparation (once, before any worker starts)


def prepare_run(
    config: RunConfig,
    data: Path,
    run: Path,
    resume: bool,
    overwrite: bool,
    show_progress: bool,
) -> None:
    saved = run / "config.yaml"
    if resume:
        if not saved.is_file():
            raise UnimpError(f"{run} holds no training run to resume (no config.yaml)")
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
        current = to_mapping(config)
        for mapping in (previous, current):
            mapping["train"].pop("max_steps", None)
        if previous != current:
            raise UnimpError(
                f"the configuration differs from the one {run} was started with; resume needs the same"
            )
    elif run.exists() and any(run.iterdir()):
        if not overwrite:
            raise UnimpError(
                f"{run} already exists; pass --resume to continue it or --overwrite to start over"
            )
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "examples" / "manifest.json").is_file():
        build_examples(
            data,
            run / "examples",
            list(config.train.tasks),
            ["train"],
            BuildSettings(seed=config.train.seed, instruction=config.train.instruction),
            overwrite=True,
            show_progress=show_progress,
            finetune=config.train.transfer,
        )
    manifest = open_examples(run / "examples").manifest
    if resume and manifest["dataset"]["content_hash"] != dataset_identity_of(data)["content_hash"]:
        raise UnimpError(f"{data} is not the dataset {run} was trained on")
    check_image_codes(data, manifest)
    if config.train.init_from is not None:
        check_init_from(config, Path(config.train.init_from), manifest["dataset"]["content_hash"])
    if not (run / "tokenizer").is_dir():
        prepare_tokenizer(config, run)
    write_bytes_atomic(saved, dump_config(config).encode())


def check_image_codes(data: Path, manifest: dict) -> None:
    """A run that trains image_generation writes the catalog's image codes: the examples hold them,
    and they are still the dataset's (a tokenizer trained or encoded again would change them)."""
    from unimp_bench.image_tokens.catalog import catalog_codes

    entry = manifest["tasks"].get("image_generation")
    if entry is None:
        return
    if entry.get("image_codes") is None:
        raise UnimpError(
            f"train.tasks holds image_generation, but {data} has no image codes; run "
            f"`unimp-bench tokenizer train {data}` (or `tokenizer encode` with a pretrained tokenizer) first"
        )
    if catalog_codes(data).describe()["codes_sha256"] != entry["image_codes"]["codes_sha256"]:
        raise UnimpError(
            f"the image codes of {data} changed after this run's examples were built; start the run again"
        )


def check_init_from(config: RunConfig, source: Path, content_hash: str) -> None:
    """A run that starts from another one's weights: same model configuration, same dataset (its
    item tokens name the same items), no LoRA adapters to carry over."""
    from unimp_bench.fileio import read_json
    from unimp_bench.models.export import META_FILE, resolve_export

    meta = read_json(resolve_export(source) / META_FILE, "export the source run again")
    if meta["model"] != to_mapping(config.model):
        raise UnimpError(
            f"train.init_from {source} was trained with another model configuration; start from a run "
            "of the same preset (and the same model overrides)"
        )
    if meta.get("lora"):
        raise UnimpError(f"train.init_from {source} holds LoRA adapters; start from a run without LoRA")
    trained_on = meta.get("provenance", {}).get("dataset", {}).get("content_hash")
    if trained_on != content_hash:
        raise UnimpError(f"train.init_from {source} was trained on another dataset")


def dataset_identity_of(data: Path) -> dict:
    from unimp_bench.data.contract import open_dataset

    return dataset_identity(open_dataset(data))


def prepare_tokenizer(config: RunConfig, run: Path) -> None:
    from unimp_bench.models.factory import load_pretrained_tokenizer

    staging = run / ".tokenizer.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if config.train.init_from is not None:  # the source run's tokenizer: its token ids are the weights'
        from unimp_bench.models.export import resolve_export

        shutil.rmtree(staging)
        shutil.copytree(resolve_export(Path(config.train.init_from)) / "tokenizer", staging)
    elif config.model.lm.tokenizer == "bpe":
        examples = load_train_examples(run, replace(config.train, max_examples_per_task=None))
        texts = []
        for task in examples.values():
            for prompt, target in zip(task.prompts, task.targets):
                texts.append(MARKER_PATTERN.sub(" ", f"{prompt} {target}"))
        texts = texts[:BPE_TRAINING_TEXTS]
        train_bpe_tokenizer(texts, config.model.lm.bpe_vocab_size, staging)
    else:
        load_pretrained_tokenizer(config.model.lm.name).save_pretrained(str(staging))
    os.replace(staging, run / "tokenizer")
