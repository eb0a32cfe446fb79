"""`unimp-bench demo`: the whole benchmark on the embedded synthetic corpus, on the CPU.

prepare -> build -> train the tiny UniMP (and fine-tune it on the held-out domain) -> evaluate it on
every task -> the baselines -> leaderboard and HTML report, all under one folder. Each stage records
what it was computed from (`.demo/<stage>.json`: the package version, its settings and the hashes of
its inputs); run again, a stage whose record still matches is skipped, so an interrupted demo
resumes and a finished one costs nothing. `force` redoes every stage; `quick` skips the model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from unimp_bench import __version__
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import write_json_atomic

# (baseline, task): each on every demo split its task has and it serves
DEMO_BASELINES = (
    ("pop", "recommendation"),
    ("uniform", "recommendation"),
    ("SASRec", "recommendation"),
    ("BPR", "recommendation"),
    ("vbpr-thumbnail", "recommendation"),
    ("content-knn", "recommendation"),
    ("pop", "selection"),
    ("bm25", "search"),
    ("user-mean", "preference"),
    ("item-mean", "preference"),
    ("review-retrieval", "explanation"),
)
DEMO_SPLITS = ("test", "new_user", "new_domain", "new_domain_finetune")
MODEL_TASKS = ("recommendation", "search", "preference", "explanation", "selection")
MODEL_SPLITS = ("test", "new_user", "new_domain")  # and new_domain_finetune with the fine-tuned run
STAMPS = ".demo"


@dataclass(frozen=True)
class DemoSettings:
    model_steps: int = 240  # optimizer steps of the tiny UniMP; 0 (--quick): no model
    finetune_steps: int = 48  # steps fine-tuning it on the held-out domain's train part
    force: bool = False

    def __post_init__(self) -> None:
        if self.model_steps < 0 or self.finetune_steps < 1:
            raise UnimpError("--model-steps must be 0 or more and --finetune-steps at least 1")


class Stages:
    """Skips a stage whose recorded inputs match, runs and records it otherwise."""

    def __init__(self, out: Path, force: bool, say: Callable[[object], None], total: int) -> None:
        self.folder, self.force, self.say, self.total, self.done = out / STAMPS, force, say, total, 0

    def run(self, name: str, title: str, inputs: dict, work: Callable[[], None], outputs: list[Path]) -> str:
        """Run `work` unless this stage's record matches `inputs` and its outputs exist; returns the
        stage's fingerprint (what later stages record as their input)."""
        self.done += 1
        fingerprint = hashlib.sha256(json.dumps([__version__, inputs], sort_keys=True).encode()).hexdigest()
        stamp = self.folder / f"{name}.json"
        recorded = json.loads(stamp.read_text()).get("fingerprint") if stamp.is_file() else None
        if not self.force and recorded == fingerprint and all(p.exists() for p in outputs):
            self.say(f"{self.done}/{self.total} {title}: up to date, skipped")
            return fingerprint
        self.say(f"{self.done}/{self.total} {title}")
        stamp.unlink(missing_ok=True)  # a stage that fails half-way is never taken as done
        work()
        write_json_atomic(stamp, {"fingerprint": fingerprint, "inputs": inputs})
        return fingerprint


def run_demo(
    out: Path,
    say: Callable[[object], None],
    settings: DemoSettings = DemoSettings(),
    show_progress: bool = False,
) -> pl.DataFrame:
    """The whole benchmark under `out` (see the module doc); returns the leaderboard."""
    from unimp_bench.baselines.runner import run_baseline
    from unimp_bench.data.api import dataset_statistics_table, prepare_synthetic_dataset
    from unimp_bench.examples import build_examples
    from unimp_bench.leaderboard import export_leaderboard
    from unimp_bench.report import write_report
    from unimp_bench.tasks import registry

    if out.exists() and any(out.iterdir()) and not (out / STAMPS).is_dir():
        raise UnimpError(f"{out} exists and is not a demo folder; choose another --out")
    data, examples, results = out / "data", out / "examples", out / "results"
    model = settings.model_steps > 0
    stages = Stages(out, settings.force, say, 6 if model else 4)

    prepared = stages.run(
        "prepare", "preparing the synthetic corpus", {},
        lambda: prepare_synthetic_dataset(data, overwrite=True, show_progress=show_progress),
        [data / "manifest.json"],
    )  # fmt: skip
    say(dataset_statistics_table(data))
    built = stages.run(
        "build", "building the task examples", {"prepared": prepared},
        lambda: build_examples(data, examples, overwrite=True, show_progress=show_progress),
        [examples / "manifest.json"],
    )  # fmt: skip
    evaluated = ""
    if model:
        trained = stages.run(
            "train",
            f"training the tiny UniMP ({settings.model_steps} steps), then fine-tuning it on the held-out "
            f"domain ({settings.finetune_steps} steps), on the CPU",
            {"built": built, "steps": settings.model_steps, "finetune": settings.finetune_steps},
            lambda: _train(out, data, settings, show_progress),
            [out / "run" / "export", out / "run-finetune" / "export"],
        )
        evaluated = stages.run(
            "eval", "evaluating the tiny UniMP on every task", {"trained": trained},
            lambda: _evaluate(out, data, examples, results / "unimp", show_progress),
            [results / "unimp"],
        )  # fmt: skip

    def baselines() -> None:
        shutil.rmtree(results / "baselines", ignore_errors=True)
        for name, task in DEMO_BASELINES:
            splits = [s for s in DEMO_SPLITS if s in registry().get(task).splits]
            run_baseline(name, task, data, results / "baselines", splits, examples_dir=examples)

    stages.run(
        "baselines", "running the baselines on the same examples",
        {"built": built, "baselines": DEMO_BASELINES}, baselines, [results / "baselines"],
    )  # fmt: skip
    say(f"{stages.total}/{stages.total} writing the leaderboard and the report")
    board = export_leaderboard(
        results, out / "leaderboard.csv", out / "leaderboard.md", out / "leaderboard.png"
    )
    runs = [out / "run", out / "run-finetune"] if model and evaluated else []
    write_report(results, out / "report.html", runs=runs, datasets=[data])
    return board


def _train(out: Path, data: Path, settings: DemoSettings, show_progress: bool) -> None:
    from unimp_bench.training.launcher import run_training

    steps = settings.model_steps
    run_training(
        Path("tiny"), data, out / "run",
        overrides=[f"train.steps={steps}", f"train.save_every={steps}"],
        overwrite=True, show_progress=show_progress,
    )  # fmt: skip
    finetune = settings.finetune_steps
    run_training(
        Path("tiny"), data, out / "run-finetune",
        overrides=[
            f"train.steps={finetune}", f"train.save_every={finetune}", "train.tasks=[recommendation]",
            "train.transfer.regime=source+target", f"train.init_from={out / 'run'}",
        ],
        overwrite=True, show_progress=show_progress,
    )  # fmt: skip


def _evaluate(out: Path, data: Path, examples: Path, results: Path, show_progress: bool) -> None:
    from unimp_bench.evaluation.checkpoint import evaluate_checkpoint

    shutil.rmtree(results, ignore_errors=True)
    for task in MODEL_TASKS:
        for split in MODEL_SPLITS:
            evaluate_checkpoint(
                task, out / "run", data, split, results, examples_dir=examples, method="UniMP-tiny",
                show_progress=show_progress,
            )  # fmt: skip
    evaluate_checkpoint(
        "recommendation", out / "run-finetune", data, "new_domain_finetune", results,
        examples_dir=examples, method="UniMP-tiny+finetune", show_progress=show_progress,
    )  # fmt: skip
