"""`unimp-bench baselines run`: a baseline on the same examples every other method is scored on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from unimp_bench.baselines.registry import load_baseline, make_predictor, predictor_class
from unimp_bench.data.contract import PreparedDataset, open_dataset
from unimp_bench.data.transfer import FinetuneSettings, candidates_tag, describe_candidates, finetune_view
from unimp_bench.errors import UnimpError
from unimp_bench.evaluation.run import evaluate_predictor
from unimp_bench.evaluation.scoring import ScoringSettings
from unimp_bench.examples import examples_for
from unimp_bench.results import Result
from unimp_bench.tasks import EVALUATION_SPLITS, registry


def run_baseline(
    model: str,
    task_name: str,
    data_dir: Path,
    out: Path,
    splits: list[str],
    *,
    examples_dir: Path | None = None,
    config: Path | None = None,
    seed: int = 0,
    scoring: ScoringSettings = ScoringSettings(),
    show_progress: bool = False,
    candidates: str = "domain",
    finetune: FinetuneSettings | tuple[FinetuneSettings, ...] = FinetuneSettings(),
) -> list[tuple[Result, Path]]:
    """One Result per split. new_domain_finetune is served by its own model per `finetune` setting
    (several give one result each, e.g. source+target and scratch), trained on the dataset as that
    setting sees it (data/transfer.py) and named with its regime's tag; the other splits share one
    model trained on the train split."""
    spec = load_baseline(model, config)
    task = registry().get(task_name)
    if task.builder not in spec.kinds:
        raise UnimpError(
            f"baseline {spec.name} does not serve task {task.name} (a {task.builder} task); "
            f"it serves {', '.join(spec.kinds)} tasks"
        )
    unknown = [s for s in splits if s not in EVALUATION_SPLITS]
    if unknown:
        raise UnimpError(
            f"baselines are scored on {', '.join(EVALUATION_SPLITS)}; not on {', '.join(unknown)}"
        )
    if "new_domain_finetune" in splits and predictor_class(spec).tunes_on_valid(task):
        # said before anything is trained
        raise UnimpError(f"{spec.name} tunes on valid examples, which new_domain_finetune does not have yet")
    dataset = dataclasses.replace(open_dataset(data_dir), candidates=candidates)
    settings = finetune if isinstance(finetune, tuple) else (finetune,)
    results = []
    for regime in (None, *settings):
        group = [s for s in splits if (s == "new_domain_finetune") == (regime is not None)]
        if not group:
            continue
        if regime is not None:
            view = finetune_view(dataset, regime)
            predictor = _FineTuned(make_predictor(spec, view), regime)
        else:
            predictor = make_predictor(spec, dataset)
        needed = _needed(predictor, task, group)
        with examples_for(data_dir, [task.name], needed, examples_dir, seed, show_progress) as example_set:
            results += _evaluate(predictor, task, group, dataset, example_set, out, scoring)
    return sorted(results, key=lambda pair: splits.index(pair[0].split))


def _needed(predictor, task, splits: list[str]) -> list[str]:
    tuned = predictor.tunes_on_valid(task)
    return sorted(set(splits) | ({"valid"} if tuned else set()), key=EVALUATION_SPLITS.index)


def _evaluate(predictor, task, splits, dataset, example_set, out, scoring) -> list[tuple[Result, Path]]:
    if predictor.tunes_on_valid(task):
        predictor.tune(task, example_set.load(task, "valid"))
    return [
        evaluate_predictor(
            _Described(predictor, _protocol(dataset, task, split), candidates_tag(dataset, split)),
            task,
            split,
            example_set,
            out,
            scoring,
        )
        for split in splits
    ]


def _protocol(dataset: PreparedDataset, task, split: str) -> dict:
    return describe_candidates(dataset, split) if task.metric_family == "ranking" else {}


class _Described:
    """A predictor whose recorded config also says what its rankings ranked over."""

    def __init__(self, predictor, protocol: dict, tag: str = ""):
        self._predictor, self._protocol = predictor, protocol
        self.name = predictor.name + tag

    def __getattr__(self, attribute):
        return getattr(self._predictor, attribute)

    def config(self) -> dict:
        return self._predictor.config() | self._protocol


class _FineTuned(_Described):
    """A baseline trained under a fine-tuning regime: its name carries the regime's tag."""

    def __init__(self, predictor, settings: FinetuneSettings):
        super().__init__(predictor, {"finetune": settings.describe()})
        self.name = predictor.name + settings.tag
