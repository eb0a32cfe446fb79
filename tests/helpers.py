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


# RecBole's sampler with one uniform negative per row (its pairwise losses need one)
ONE_NEGATIVE = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}


def learns_the_cycle(model: str, data: Path, tmp_path: Path, **params):
    """Trains `model` (its shipped YAML with `params`) on the cyclic corpus, whose next item is always
    the successor of the last one, and checks that it ranks that item first; returns the result."""
    from unimp_bench.baselines.runner import run_baseline

    config = quick_config(tmp_path, model, **params)
    [(result, _)] = run_baseline(model, "recommendation", data, tmp_path / "r", ["test"], config=config)
    assert result.scores["HR@3"] == 1.0 and result.scores["MRR@3"] > 0.9
    return result


def refused(model: str, data: Path, tmp_path: Path, message: str, **params) -> None:
    """Running `model` with `params` stops with an UnimpError matching `message`."""
    import pytest

    from unimp_bench.baselines.runner import run_baseline
    from unimp_bench.errors import UnimpError

    config = quick_config(tmp_path, model, **params)
    with pytest.raises(UnimpError, match=message):
        run_baseline(model, "recommendation", data, tmp_path / "refused", ["test"], config=config)
