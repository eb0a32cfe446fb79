"""The benchmark path from the command line: build -> baselines -> score -> leaderboard."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from helpers import invoke, link_raw
from unimp_bench.cli import app

runner = CliRunner()


def fails(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.shared
def test_gift_cards_from_raw_files_to_a_traceable_leaderboard(shared_raw, tmp_path):
    folder = shared_raw / "ncloud50__giftcard"
    raw = link_raw(tmp_path, folder / "Gift_Cards_5.json.gz", folder / "meta_Gift_Cards.json.gz")
    data, examples, results = tmp_path / "data", tmp_path / "examples", tmp_path / "results"
    invoke("prepare", "amazon", "--raw-dir", raw, "--out", data)
    built = invoke("build", data, "--out", examples, "--splits", "valid,test,new_user")
    assert "recommendation v2: valid" in built and "search v2" in built
    for model, task in (("pop", "recommendation"), ("pop", "selection"), ("bm25", "search")):
        output = invoke(
            "baselines",
            "run",
            data,
            "--model",
            model,
            "--task",
            task,
            "--examples",
            examples,
            "--out",
            results,
            "--splits",
            "valid,test,new_user",
        )
        assert f"{model} {task}/test" in output
    # an outside method's predictions go through `score`: rank only the most recent history item
    test = pl.read_parquet(examples / "recommendation" / "test.parquet")
    predictions = tmp_path / "last-item.jsonl"
    predictions.write_text(
        "".join(
            json.dumps({"example_id": e, "ranked": h[-1:]}) + "\n"
            for e, h in zip(test["example_id"], test["history"].to_list())
        )
    )
    scored = invoke(
        "score", predictions, "--task", "recommendation", "--examples", examples, "--out", results
    )
    assert "last-item recommendation/test" in scored
    board = tmp_path / "board.csv"
    invoke("leaderboard", results, "--csv", board, "--markdown", tmp_path / "board.md", "--with-paper")
    wide = pl.read_csv(board)
    measured = wide.filter(pl.col("source") == "measured")
    assert measured.height == 3 * 3 + 1
    content_hash = json.loads((data / "manifest.json").read_text())["content_hash"]
    for row in measured.iter_rows(named=True):  # every number traces back to its inputs
        stored = json.loads((results / row["origin"]).read_text())
        assert stored["dataset"]["content_hash"] == content_hash
        for metric, value in stored["scores"].items():
            assert row[metric] == pytest.approx(value, abs=1e-6)
        predictions_file = stored["provenance"]["predictions"]["file"]
        assert (results / "predictions" / predictions_file).exists() or predictions_file == "last-item.jsonl"
    assert wide.filter(pl.col("source") == "paper (reported)").height > 0
    # Gift_Cards has no held-out domain and no images: asking for those splits says why, in one sentence
    message = fails(
        "baselines",
        "run",
        data,
        "--model",
        "pop",
        "--task",
        "recommendation",
        "--examples",
        examples,
        "--splits",
        "new_domain",
    )
    assert "no new_domain examples of recommendation" in message


def test_demo_sized_synthetic_path_from_the_cli(synthetic_data, tmp_path):
    results = tmp_path / "results"
    # pop's zero-shot new_domain row is n/a: the plot must leave it out rather than fail
    invoke(
        "baselines", "run", synthetic_data, "--model", "pop", "--task", "recommendation", "--out", results,
        "--splits", "test,new_domain",
    )  # fmt: skip
    invoke(
        "baselines",
        "run",
        synthetic_data,
        "--model",
        "bm25",
        "--task",
        "search",
        "--out",
        results,
        "--splits",
        "test,new_domain",
    )
    output = invoke("leaderboard", results, "--csv", tmp_path / "b.csv", "--plot", tmp_path / "b.png")
    assert "4 measured row(s)" in output


def test_task_commands(tmp_path):
    listed = invoke("tasks", "list")
    for name in ("recommendation", "preference", "explanation", "selection", "search"):
        assert name in listed
    shown = invoke("tasks", "show", "selection")
    assert "num_candidates: 10" in shown and "version: 2" in shown
    assert "unknown task 'nope'" in fails("tasks", "show", "nope")


def test_user_errors_end_in_one_sentence(synthetic_data, tmp_path):
    assert "is not a prepared dataset" in fails("build", tmp_path, "--out", tmp_path / "ex")
    assert "unknown split(s) holdout" in fails(
        "build", synthetic_data, "--out", tmp_path / "ex", "--splits", "holdout"
    )
    assert "holds no examples" in fails(
        "score", tmp_path / "p.jsonl", "--task", "search", "--examples", tmp_path
    )
    assert "does not exist" in fails("leaderboard", tmp_path / "missing", "--csv", tmp_path / "b.csv")
    assert "--tie-rule must be one of" in fails(
        "baselines",
        "run",
        synthetic_data,
        "--model",
        "pop",
        "--task",
        "recommendation",
        "--tie-rule",
        "random",
    )
