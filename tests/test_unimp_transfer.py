"""UniMP on new_domain_finetune: a run trained on the held-out domain's fine-tuning view, started from
a source run's weights (train.transfer, train.init_from)."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from helpers import SHRUNK_TINY_MODEL, invoke, tiny_train_args
from unimp_bench.cli import app

FINETUNE = ["train.transfer.regime=source+target", "train.tasks=[recommendation]"]


@pytest.fixture(scope="module")
def source_run(synthetic_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("transfer") / "source"
    invoke(*tiny_train_args(synthetic_data, run, 3, [*SHRUNK_TINY_MODEL, "train.tasks=[recommendation]"]))
    return run


def test_a_fine_tuned_run_starts_from_its_source_and_serves_new_domain_finetune(
    source_run, synthetic_data, tmp_path
):
    run = tmp_path / "tuned"
    overrides = [*SHRUNK_TINY_MODEL, *FINETUNE, f"train.init_from={source_run}", "train.lr=1e-12"]
    invoke(*tiny_train_args(synthetic_data, run, 1, overrides))
    # it starts from the source's weights: with a vanishing learning rate it still holds them
    source = load_file(str(source_run / "export" / "model.safetensors"))
    tuned = load_file(str(run / "export" / "model.safetensors"))
    for name in ("added_output", "items.to_output.weight", "lm.gpt_neox.layers.0.mlp.dense_h_to_4h.weight"):
        torch.testing.assert_close(tuned[name], source[name], rtol=0, atol=1e-6)
    fresh = tmp_path / "fresh"  # the control: the same run without init_from is not the source
    invoke(*tiny_train_args(synthetic_data, fresh, 1, [*SHRUNK_TINY_MODEL, *FINETUNE, "train.lr=1e-12"]))
    assert not torch.allclose(load_file(str(fresh / "export" / "model.safetensors"))["added_output"],
                              source["added_output"], atol=1e-6)  # fmt: skip
    # the held-out items its view trains on are now seen; what the source saw stays seen
    assert bool((tuned["items.seen"] >= source["items.seen"]).all())
    assert int(tuned["items.seen"].sum()) > int(source["items.seen"].sum())

    meta = json.loads((run / "export" / "unimp.json").read_text())["provenance"]
    assert meta["finetune"]["regime"] == "source+target" and meta["init_from"].endswith("export")
    out = tmp_path / "results"
    common = ["--task", "recommendation", "--data", str(synthetic_data), "--out", str(out), "--limit", "10"]
    invoke("eval", "--checkpoint", str(run), "--split", "new_domain_finetune", *common)
    [result] = out.glob("UniMP-tuned-finetune-first_10__recommendation__new_domain_finetune__*.json")
    assert json.loads(result.read_text())["n_examples"] == 10


def test_the_fine_tuning_view_never_trains_on_a_new_domain_finetune_target(synthetic_data, tmp_path):
    run = tmp_path / "tuned"
    invoke(*tiny_train_args(synthetic_data, run, 1, [*SHRUNK_TINY_MODEL, *FINETUNE]))
    trained = pl.read_parquet(run / "examples" / "recommendation" / "train.parquet")
    built = tmp_path / "examples"
    invoke("build", str(synthetic_data), "--out", str(built), "--tasks", "recommendation",
           "--splits", "new_domain_finetune")  # fmt: skip
    targets = pl.read_parquet(built / "recommendation" / "new_domain_finetune.parquet")
    held_out_users = set(targets["user_idx"].to_list())
    assert held_out_users & set(trained["user_idx"].to_list())  # the view trains held-out users...
    overlap = trained.join(targets, on=["user_idx", "target_pos"], how="inner")
    assert len(overlap) == 0  # ...never on their evaluated target
    later = trained.join(targets.select("user_idx", pl.col("target_pos").alias("test_pos")), on="user_idx")
    assert (later["target_pos"] < later["test_pos"]).all()


def test_init_from_another_model_configuration_is_one_sentence(source_run, synthetic_data, tmp_path):
    overrides = [*SHRUNK_TINY_MODEL, f"train.init_from={source_run}", "model.items=id"]
    args = tiny_train_args(synthetic_data, tmp_path / "x", 1, overrides)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "another model configuration" in result.output
    assert "Traceback" not in result.output
