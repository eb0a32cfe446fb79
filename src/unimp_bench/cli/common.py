"""What every command shares: the Typer apps, the consoles, error handling, logging and the options
that several commands take (one definition each, as `Annotated` types)."""

import functools
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from unimp_bench.errors import UnimpError

app = typer.Typer(
    help="unimp-bench: benchmark toolkit for unified multi-modal personalization (UniMP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prepare_app = typer.Typer(
    help="Build the benchmark dataset from raw Amazon dumps or the synthetic corpus.", no_args_is_help=True
)
app.add_typer(prepare_app, name="prepare")
tasks_app = typer.Typer(
    help="The registered personalization tasks (tasks/*.yaml and UNIMP_BENCH_TASK_PATH).",
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")
baselines_app = typer.Typer(
    help="Baselines scored on the same examples as every other method.", no_args_is_help=True
)
app.add_typer(baselines_app, name="baselines")
ablations_app = typer.Typer(
    help="The paper's ablations (configs/ablations/*.yaml) trained and evaluated over seeds.",
    no_args_is_help=True,
)
app.add_typer(ablations_app, name="ablations")

SEED_MAX = 2**32 - 1  # numpy's seed range
DEBUG_VARIABLE = "UNIMP_BENCH_DEBUG"
err = Console(stderr=True, soft_wrap=True, markup=False)  # user text (paths, domains) is never markup
out = Console(soft_wrap=True, markup=False)


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log what each stage does (to stderr); also shows tracebacks."),
    ] = False,
) -> None:
    """unimp-bench: benchmark toolkit for unified multi-modal personalization (UniMP)."""
    configure_logging(verbose)


def configure_logging(verbose: bool) -> None:
    """Warnings always, and with --verbose every INFO message of unimp_bench, on stderr."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err, show_time=verbose, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s" if verbose else "%(message)s"))
    package = logging.getLogger("unimp_bench")
    package.handlers[:] = [handler]
    package.setLevel(logging.INFO if verbose else logging.WARNING)
    package.propagate = False


def show_tracebacks() -> bool:
    """UNIMP_BENCH_DEBUG=1, or --verbose (this invocation's logging level) shows a failure's traceback."""
    return bool(os.environ.get(DEBUG_VARIABLE)) or logging.getLogger("unimp_bench").isEnabledFor(logging.INFO)


def _error(message: str) -> None:
    """One error sentence; the message is user text (paths, ids, domain names), never rich markup."""
    err.print(Text.assemble(("Error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def friendly_errors(command):
    """Print a user error as one sentence and exit 1, never a traceback (UNIMP_BENCH_DEBUG=1 or
    --verbose shows it)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            err.print("Interrupted; nothing was written in place of the output.", markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            if isinstance(exc, UnimpError):
                message = str(exc)
            elif isinstance(exc, OSError):  # unreadable input, unwritable output, full disk
                where = f" {exc.filename}" if exc.filename else ""
                message = f"cannot use{where}: {exc.strerror or exc}."
            elif type(exc).__module__.startswith(("polars", "pyarrow")):
                # a damaged data file found only while reading it (its footer was fine)
                message = f"a data file could not be read: {str(exc).splitlines()[0][:200]}"
            else:
                raise
            _error(message)
            if show_tracebacks():
                raise
            raise typer.Exit(1) from None

    return wrapper


def split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def show_progress() -> bool:
    return err.is_terminal and not os.environ.get("UNIMP_BENCH_NO_PROGRESS")


def print_json(value) -> None:
    out.print_json(json.dumps(value), highlight=False)


LISTING_MIN_WIDTH = 8  # the narrowest a wrapped column of a listing table may get


def print_listing(columns: list[str], rows: list[list[str]], whole: tuple[str, ...]) -> None:
    """A listing that never cuts a name. In a terminal wide enough: a table whose `whole` columns keep
    their full width while the other columns wrap. In a pipe or a terminal too narrow for that:
    tab-separated lines, a header first, every value whole (`... list | grep NAME` finds a name,
    `cut -f1` takes them all)."""
    widths = [
        max(len(value) for value in [column, *(row[i] for row in rows)]) for i, column in enumerate(columns)
    ]
    needed = sum(w if c in whole else min(w, LISTING_MIN_WIDTH) for c, w in zip(columns, widths))
    needed += 3 * len(columns) + 1  # borders and padding
    if not out.is_terminal or out.width < needed:
        out.file.write("".join("\t".join(row) + "\n" for row in [columns, *rows]))  # rich would expand tabs
        return
    table = Table()
    for column, width in zip(columns, widths):
        if column in whole:
            table.add_column(column, no_wrap=True, min_width=width)
        else:  # a word longer than the column folds onto the next line, never an ellipsis
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(value) for value in row))
    out.print(table)


# -- options several commands share ----------------------------------------------------------------


def seed_option(help: str) -> type[int]:
    return Annotated[int, typer.Option(min=0, max=SEED_MAX, help=help)]


def out_option(help: str, required: bool = False) -> type[Path]:
    return Annotated[Path, typer.Option("--out", help=help, show_default=not required)]


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
Data = Annotated[Path, typer.Argument(help="A prepared dataset folder.")]
DataOption = Annotated[Path, typer.Option("--data", help="The prepared dataset folder.")]
Examples = Annotated[
    Path | None, typer.Option("--examples", help="Use examples built by `unimp-bench build`.")
]
TieRule = Annotated[
    str,
    typer.Option(help="Where a target tied with other items lands: expected, pessimistic or optimistic."),
]
Candidates = Annotated[
    str,
    typer.Option(
        help="Ranking candidates on new_domain and new_domain_finetune: domain (the held-out domain's "
        "catalog, the protocol) or all (every item; recorded in the method name)."
    ),
]
TaskName = Annotated[str, typer.Option("--task", help="Task name (see `unimp-bench tasks list`).")]
BertscoreModel = Annotated[str, typer.Option(help="auto, minilm, a local folder or a cached model name.")]
BertscoreLayers = Annotated[
    int | None, typer.Option(min=1, help="Layer of the BERTScore model (needed for custom models).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ClipModel = Annotated[
    str | None, typer.Option(help="open_clip model of the image metrics (default ViT-L-14).")
]
ClipCheckpoint = Annotated[
    Path | None,
    typer.Option(
        help="Local weights file of that CLIP model, or `random` for a random-init tower (a pipeline "
        "check; its scores are marked not comparable)."
    ),
]


StrictMetrics = Annotated[
    bool,
    typer.Option(
        "--strict-metrics",
        help="Fail when a metric cannot be computed (METEOR without WordNet) instead of recording it as "
        "missing with its reason.",
    ),
]


def scoring_settings(
    tie_rule: str,
    bertscore_model: str = "auto",
    bertscore_layers: int | None = None,
    clip_model: str | None = None,
    clip_checkpoint: Path | None = None,
    strict_metrics: bool = False,
):
    from unimp_bench.clip_scoring import ClipSettings
    from unimp_bench.evaluation.scoring import ScoringSettings
    from unimp_bench.metrics import TIE_RULES

    if tie_rule not in TIE_RULES:
        raise UnimpError(f"--tie-rule must be one of {', '.join(TIE_RULES)}")
    return ScoringSettings(
        tie_rule=tie_rule,
        bertscore_model=bertscore_model,
        bertscore_layers=bertscore_layers,
        clip=ClipSettings(
            model=clip_model or ClipSettings.model,
            checkpoint=str(clip_checkpoint) if clip_checkpoint else None,
        ),
        strict_metrics=strict_metrics,
    )


def print_result(result, path: Path) -> None:
    reason = result.provenance.get("not_applicable")
    scores = (
        f"not applicable: {reason}" if reason else ", ".join(f"{k} {v:.4f}" for k, v in result.scores.items())
    )
    out.print(f"{result.method} {result.task}/{result.split} ({result.n_examples} examples): {scores}")
    out.print(f"  -> {path}", highlight=False)
