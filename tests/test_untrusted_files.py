"""Files people pass around are untrusted: nothing in a baseline YAML or a run folder may run code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unimp_bench.baselines.registry import available_baselines
from unimp_bench.baselines.runner import run_baseline
from unimp_bench.errors import UnimpError

PAYLOAD = "__import__('pathlib').Path('pwned').touch() or 1"


def evil_yaml(tmp_path: Path, model: str, recbole: dict) -> Path:
    spec = yaml.safe_load(available_baselines()[model].read_text())
    spec["params"]["recbole"] = spec["params"].get("recbole", {}) | recbole
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_string_option_in_a_baseline_yaml_is_never_evaluated(synthetic_data, tmp_path, monkeypatch):
    """The issue's exploit through the command line: RecBole's Config would eval the string."""
    from typer.testing import CliRunner

    from unimp_bench.cli import app

    monkeypatch.chdir(tmp_path)
    config = evil_yaml(tmp_path, "recbole-pop", {"train_batch_size": PAYLOAD})
    args = ["baselines", "run", str(synthetic_data), "--model", "recbole-pop", "--task", "recommendation"]
    result = CliRunner().invoke(app, [*args, "--config", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and not (tmp_path / "pwned").exists()
    assert "train_batch_size must be a number" in result.output
    assert "Traceback" not in result.output


def test_recbole_config_parses_literals_and_runs_nothing(tmp_path, monkeypatch):
    """Below our own checks, the Config we hand RecBole converts strings as literals only."""
    from unimp_bench.baselines.recbole_compat import literal_config, literal_value

    monkeypatch.chdir(tmp_path)
    assert literal_value("[1, 2]") == [1, 2] and literal_value("1e-3") == 0.001
    assert literal_value("TRUE") is True and literal_value("relu") == "relu"
    assert literal_value("9" * 5000) == "9" * 5000  # beyond int's digit limit: stays text
    assert literal_value("[" * 2000) == "[" * 2000
    config = literal_config("Pop", "unimp", {"train_batch_size": PAYLOAD, "learning_rate": "0.5"})
    assert not (tmp_path / "pwned").exists()
    assert config["train_batch_size"] == PAYLOAD and config["learning_rate"] == 0.5


@pytest.mark.parametrize(
    "key, value",
    [
        ("dataset_save_path", "planted.pth"),
        ("save_dataset", True),
        ("save_dataloaders", True),
        ("dataloaders_save_path", "planted.pth"),
        ("checkpoint_dir", "/tmp/elsewhere"),
        ("data_path", "/tmp/elsewhere"),
        ("pre_model_path", "planted.pth"),
        ("some_new_path", "planted.pth"),  # a future RecBole option that names a file
    ],
)
def test_recbole_options_that_name_files_are_refused(synthetic_data, tmp_path, key, value):
    config = evil_yaml(tmp_path, "sasrec", {key: value})
    with pytest.raises(UnimpError, match=f"{key} are set by unimp-bench"):
        run_baseline("SASRec", "recommendation", synthetic_data, tmp_path / "r", ["test"], config=config)


def test_recbole_option_values_of_the_wrong_kind_are_refused(synthetic_data, tmp_path):
    for key, value, kind in (("hidden_size", "64 units", "number"), ("hidden_act", 3, "string")):
        config = evil_yaml(tmp_path, "sasrec", {key: value})
        with pytest.raises(UnimpError, match=f"{key} must be a {kind}"):
            run_baseline("SASRec", "recommendation", synthetic_data, tmp_path / "r", ["test"], config=config)
