"""Helpers that several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from unimp_bench.baselines.registry import available_baselines

# a small, deterministic transformer (no dropout) for the RecBole sequence models
TINY_SASREC = {
    "learning_rate": 0.01,
    "train_batch_size": 64,
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "hidden_dropout_prob": 0.0,
    "attn_dropout_prob": 0.0,
}


def quick_config(tmp_path: Path, model: str, **params) -> Path:
    """The shipped YAML of `model` with a short training, for tests."""
    spec = yaml.safe_load(available_baselines()[model.lower()].read_text())
    spec["params"] |= {"epochs": 1} | params
    if "pretrain_epochs" in spec["params"]:
        spec["params"]["pretrain_epochs"] = 1
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
