"""`unimp-bench baselines run`: a baseline on the same examples every other method is scored on."""

from __future__ import annotations

from pathlib import Path

from unimp_bench.baselines.registry import load_baseline, make_predictor
from unimp_bench.data.contract import open_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.evaluate import ScoringSettings, evaluate_predictor
from unimp_bench.examples import examples_for
from unimp_bench.results import Result
from unimp_bench.tasks import EVALUATION_SPLITS, registry


def run_baseline(
    model: str,
    task_name: str,
    data_dir: Path,
    out: Path,
    splits: list[str],
    examples_dir: Path | None = None,
    config: Path | None = None,
    seed: int = 0,
    scoring: ScoringSettings = ScoringSettings(),
    show_progress: bool = False,
) -> list[tuple[Result, Path]]:
    spec = load_baseline(model, config)
    task = registry().get(task_name)
    if task.name not in spec.tasks:
        raise UnimpError(
            f"baseline {spec.name} does not serve task {task.name}; it serves {', '.join(spec.tasks)}"
        )
    unknown = [s for s in splits if s not in EVALUATION_SPLITS]
    if unknown:
        raise UnimpError(
            f"baselines are scored on {', '.join(EVALUATION_SPLITS)}; not on {', '.join(unknown)}"
        )
    dataset = open_dataset(data_dir)
    predictor = make_predictor(spec, dataset, show_progress)
    tuned = predictor.tunes_on_valid(task)
    needed = sorted(set(splits) | ({"valid"} if tuned else set()), key=EVALUATION_SPLITS.index)
    with examples_for(data_dir, [task.name], needed, examples_dir, seed, show_progress) as example_set:
        if tuned:
            predictor.tune(task, example_set.load(task, "valid"))
        return [evaluate_predictor(predictor, task, split, example_set, out, scoring) for split in splits]
