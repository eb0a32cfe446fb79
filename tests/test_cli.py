"""The command line itself: every command's help, listings that never cut a name, --json, --verbose."""

from __future__ import annotations

import json
import logging

import pytest
import typer
from typer.testing import CliRunner

from unimp_bench.cli import app
from unimp_bench.cli import common as cli_common


def command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group of subcommands
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


COMMANDS = command_paths(typer.main.get_command(app))


def test_the_command_list_is_complete():
    assert len(COMMANDS) == 20
    assert {("tasks", "list"), ("baselines", "export"), ("prepare", "sequences"), ("demo",)} <= set(COMMANDS)
    assert {("tokenizer", "train"), ("tokenizer", "encode"), ("tokenizer", "decode"), ("generate",)} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example_of_itself(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Example: unimp-bench {' '.join(command)}" in " ".join(result.output.split())


@pytest.mark.parametrize("command", [["tasks", "list"], ["baselines", "list"]])
@pytest.mark.parametrize("terminal_width", [None, 40, 100])  # a pipe, a narrow and a wide terminal
def test_listings_never_cut_a_name(command, terminal_width, monkeypatch):
    from unimp_bench.baselines.registry import available_baselines, load_baseline
    from unimp_bench.tasks import registry

    if terminal_width:
        monkeypatch.setattr(cli_common.out, "_force_terminal", True)
        monkeypatch.setattr(cli_common.out, "width", terminal_width)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    names = (
        registry().names()
        if command[0] == "tasks"
        else [load_baseline(n).name for n in available_baselines()]
    )
    lines = result.output.splitlines()
    if terminal_width == 100:  # a table whose name column holds each name whole
        rows = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
        assert set(names) <= set(rows)
        assert (
            "new_domain_finetune" in result.output.replace("│", "").replace(" ", "")
            or command[0] == "baselines"
        )
    else:  # tab-separated lines, every value whole: `grep NAME` and `cut -f1` work
        assert [line.split("\t")[0] for line in lines] == [command[0].removesuffix("s"), *names]
        if command[0] == "tasks":
            assert "\timage_generation\tCLIP-I, CLIP-T, Diversity\t" in result.output


def test_listings_and_stats_offer_json(synthetic_data):
    tasks = json.loads(CliRunner().invoke(app, ["tasks", "list", "--json"]).output)
    assert {"task": "image_generation", "kind": "image_generation"}.items() <= tasks[1].items()
    baselines = json.loads(CliRunner().invoke(app, ["baselines", "list", "--json"]).output)
    assert {"baseline": "SASRec", "engine": "recbole", "kinds": ["recommendation", "selection"]} in baselines
    stats = json.loads(
        CliRunner().invoke(app, ["stats", str(synthetic_data), "--json", "--with-paper"]).output
    )
    table = CliRunner().invoke(app, ["stats", str(synthetic_data)]).output
    for domain in stats["domains"]:  # the same numbers as the table
        assert f"{domain['interactions']:,}" in table and domain["paper"]["users"] > 0
    assert sum(d["interactions"] for d in stats["domains"]) == stats["all"]["interactions"]


def test_verbose_logs_and_shows_the_traceback_that_a_plain_run_hides(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIMP_BENCH_DEBUG", raising=False)
    missing = ["stats", str(tmp_path / "absent")]
    plain = CliRunner().invoke(app, missing)
    assert plain.exit_code == 1 and "Error:" in plain.output and plain.exc_info[0] is SystemExit
    verbose = CliRunner().invoke(app, ["--verbose", *missing])
    assert verbose.exit_code == 1 and verbose.exc_info[0].__name__ == "UnimpError"
    assert logging.getLogger("unimp_bench").isEnabledFor(logging.INFO)
    CliRunner().invoke(app, missing)  # the next plain run logs warnings only again
    assert not logging.getLogger("unimp_bench").isEnabledFor(logging.INFO)
