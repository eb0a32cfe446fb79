"""A metric whose system resource is absent (METEOR without WordNet): every other metric is still
written, the missing one is recorded with its reason and shown as missing on the leaderboard, and
--strict-metrics turns it into a one-sentence error."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from helpers import invoke
from unimp_bench.cli import app
from unimp_bench.errors import MissingResource
from unimp_bench.examples import open_examples
from unimp_bench.metrics import text_metrics
from unimp_bench.tasks import registry


@pytest.fixture
def no_wordnet(tmp_path, monkeypatch):
    """WordNet looked up in an empty folder, with an empty private cache."""
    from unimp_bench.text_resources import wordnet_reader

    monkeypatch.setenv("UNIMP_BENCH_WORDNET_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("UNIMP_BENCH_CACHE", str(tmp_path / "cache"))
    wordnet_reader.cache_clear()
    yield
    wordnet_reader.cache_clear()


def test_meteor_without_wordnet_is_missing_not_a_crash(no_wordnet):
    with pytest.raises(MissingResource, match="wordnet-base and wordnet-sense-index"):
        text_metrics(["a car"], ["a car"], ["METEOR"])
    missing: dict[str, str] = {}
    same = ["the cat sat on the mat"]
    scores = text_metrics(same, same, ["BLEU-4", "METEOR"], missing=missing)
    assert scores["BLEU-4"] == pytest.approx(1.0)
    assert scores["METEOR"] != scores["METEOR"]  # NaN
    assert list(missing) == ["METEOR"] and "WordNet" in missing["METEOR"]


def test_score_writes_every_other_metric_and_the_leaderboard_says_missing(
    no_wordnet, synthetic_examples, tmp_path
):
    examples = open_examples(synthetic_examples).load(registry().get("explanation"), "new_user")
    predictions = tmp_path / "echo.jsonl"
    predictions.write_text(
        "".join(
            json.dumps({"example_id": e, "text": r}) + "\n"
            for e, r in zip(examples["example_id"], examples["review"])
        )
    )
    common = ["score", predictions, "--task", "explanation", "--examples", synthetic_examples]
    common += ["--bertscore-model", "minilm"]
    output = " ".join(invoke(*common, "--out", tmp_path / "results").split())
    assert "METEOR not computed: METEOR needs the WordNet database" in output  # the one-line warning
    result = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert result["scores"]["METEOR"] is None
    assert result["scores"]["BLEU-4"] == pytest.approx(1.0)
    assert result["scores"]["BERTScore-F1"] == pytest.approx(1.0, abs=1e-4)
    assert "WordNet" in result["provenance"]["metric_settings"]["missing_metrics"]["METEOR"]

    board = tmp_path / "board.md"
    invoke("leaderboard", tmp_path / "results", "--csv", tmp_path / "b.csv", "--markdown", board)
    header, _, row = board.read_text().splitlines()[:3]
    cells = dict(zip(header.split(" | "), row.split(" | ")))
    assert cells["METEOR"] == "missing" and cells["BLEU-4"] == "1.0000 [1.0000, 1.0000]"
    assert "not computed: METEOR (METEOR needs the WordNet database" in row
    assert pl.read_csv(tmp_path / "b.csv")["METEOR"].is_null().all()

    failed = CliRunner().invoke(app, [str(a) for a in [*common, "--out", tmp_path / "s", "--strict-metrics"]])
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "METEOR needs the WordNet database" in " ".join(failed.output.split())
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("*.json"))
