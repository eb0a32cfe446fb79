"""A task defined outside the package (a YAML on UNIMP_BENCH_TASK_PATH) that reuses a kind goes
through every stage with no code change: build, train, eval and the baselines that serve its kind."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from helpers import SHRUNK_TINY_MODEL, TINY_SASREC, invoke, quick_config, tiny_train_args
from unimp_bench.cli import app
from unimp_bench.errors import UnimpError
from unimp_bench.tasks import TASK_PATH_VARIABLE, registry

REC10 = """\
name: rec10
version: 1
description: Next-item recommendation over the last 10 items instead of 5.
builder: recommendation
instructions:
  - "{history} Which item does this user buy next?"
inputs: [history]
target: the item token of the next interaction
max_history: 10
metrics: [HR@10, NDCG@10]
splits: [train, valid, test]
"""


@pytest.fixture()
def task_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "rec10.yaml").write_text(REC10)
    monkeypatch.setenv(TASK_PATH_VARIABLE, str(folder))
    return folder


def result_of(folder: Path, method: str, task: str, split: str) -> dict:
    [path] = folder.glob(f"{method}__{task}__{split}__*.json")
    return json.loads(path.read_text())


def test_a_task_on_the_task_path_is_built_trained_evaluated_and_run_by_baselines(
    task_folder, synthetic_data, synthetic_examples, tmp_path
):
    assert "rec10" in invoke("tasks", "list")
    examples = tmp_path / "examples"
    invoke("build", str(synthetic_data), "--out", str(examples), "--tasks", "rec10")
    rec10 = pl.read_parquet(examples / "rec10" / "test.parquet")
    shipped = pl.read_parquet(synthetic_examples / "recommendation" / "test.parquet")
    # the YAML's max_history is what changed: the same targets, longer histories whose last five
    # items are the shipped task's history
    assert rec10["target_item"].to_list() == shipped["target_item"].to_list()
    lengths = rec10["history"].list.len()
    assert lengths.max() == 10 and (lengths > 5).sum() > 0
    assert [h[-5:] for h in rec10["history"].to_list()] == shipped["history"].to_list()

    run = tmp_path / "run"
    invoke(*tiny_train_args(synthetic_data, run, 3, [*SHRUNK_TINY_MODEL, "train.tasks=[rec10]"]))
    logged = [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]
    assert any("rec10" in json.dumps(entry) for entry in logged)

    results = tmp_path / "results"
    data, where = str(synthetic_data), ("--examples", str(examples), "--out", str(results))
    invoke("eval", "--task", "rec10", "--checkpoint", str(run), "--data", data, "--split", "test", *where)
    unimp = next(results.glob("UniMP*__rec10__test__*.json"))
    assert json.loads(unimp.read_text())["n_examples"] == len(rec10)

    sasrec = quick_config(tmp_path, "SASRec", recbole=TINY_SASREC, stopping_step=1)
    for model, extra in (("pop", ()), ("SASRec", ("--config", str(sasrec)))):
        invoke("baselines", "run", "--model", model, "--task", "rec10", data, *where, *extra)
        invoke(
            "baselines", "run", "--model", model, "--task", "recommendation", data,
            "--examples", str(synthetic_examples), "--out", str(tmp_path / "shipped"), *extra,
        )  # fmt: skip
        ours = result_of(results, model, "rec10", "test")
        theirs = result_of(tmp_path / "shipped", model, "recommendation", "test")
        assert ours["task"] == "rec10" and ours["n_examples"] == len(rec10)
        # both read each user's sequence from the dataset, not the prompt's history: the same
        # targets get the same ranks whatever history length the task shows
        assert ours["scores"]["HR@10"] == theirs["scores"]["HR@10"]
        assert ours["scores"]["NDCG@10"] == theirs["scores"]["NDCG@10"]

    invoke("leaderboard", str(results), "--csv", str(tmp_path / "board.csv"))
    board = pl.read_csv(tmp_path / "board.csv")
    assert set(board["task"]) == {"rec10"} and len(board) == 3  # UniMP, pop, SASRec


def test_the_task_path_refuses_a_missing_folder_and_a_name_defined_twice(tmp_path, monkeypatch):
    monkeypatch.setenv(TASK_PATH_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(UnimpError, match="not a folder"):
        registry()
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "recommendation.yaml").write_text(REC10.replace("rec10", "recommendation"))
    monkeypatch.setenv(TASK_PATH_VARIABLE, str(clash))
    with pytest.raises(UnimpError, match="task recommendation is defined twice"):
        registry()
    monkeypatch.delenv(TASK_PATH_VARIABLE)
    assert "rec10" not in registry().names()
    result = CliRunner().invoke(app, ["tasks", "show", "rec10"])
    assert result.exit_code == 1 and "unknown task 'rec10'" in result.output
