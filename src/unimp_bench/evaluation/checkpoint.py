"""`unimp-bench eval`: a trained UniMP on one task and split; writes predictions and a Result."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import open_dataset
from unimp_bench.data.transfer import FinetuneSettings, candidates_tag, describe_candidates
from unimp_bench.errors import UnimpError
from unimp_bench.evaluation.parallel import Parallel, ShardJob, launch_ranks
from unimp_bench.evaluation.predictions import align, load_examples_to_score, write_predictions
from unimp_bench.evaluation.records import not_applicable_result, record_scores
from unimp_bench.evaluation.run import score_predictions
from unimp_bench.evaluation.scoring import ScoringSettings
from unimp_bench.evaluation.shards import predictions_key, sharded_predictions
from unimp_bench.examples import ExampleSet, examples_for
from unimp_bench.metrics import rating_metrics
from unimp_bench.models.predictor import ModelEvalSettings
from unimp_bench.prompts import PromptSettings, item_attributes
from unimp_bench.results import Result, safe_name
from unimp_bench.robustness import perturb
from unimp_bench.tasks import EVALUATION_SPLITS, Task, registry


def _default_method(export: Path, meta: dict) -> str:
    run = meta.get("provenance", {}).get("run")
    name = "UniMP" + (f"-{Path(run).name}" if run else "")
    finetune = meta.get("provenance", {}).get("finetune")
    if finetune:  # the tag baselines get under the same regime: the rows never mix on a leaderboard
        name += FinetuneSettings(finetune["regime"], finetune["target_share"], finetune["share_seed"]).tag
    if export.parent.name.startswith("step_"):
        name += f"@{export.parent.name}"
    return name


def evaluate_checkpoint(
    task_name: str,
    checkpoint: Path,
    data_dir: Path,
    split: str,
    out: Path,
    *,
    settings: ModelEvalSettings = ModelEvalSettings(),
    scoring: ScoringSettings = ScoringSettings(),
    examples_dir: Path | None = None,
    seed: int = 0,
    method: str | None = None,
    show_progress: bool = False,
    parallel: Parallel = Parallel(),
) -> tuple[Result, Path, dict]:
    """`unimp-bench eval`: a trained UniMP on one task and split; writes predictions and a Result.
    Returns the result, its path and a run report (shards reused, perturbation counts). With
    `parallel` the shards are predicted by several ranks (evaluation/parallel.py), with the same
    predictions and result."""
    from unimp_bench.models.export import WEIGHTS_FILE, load_exported, resolve_export
    from unimp_bench.models.predictor import UniMPPredictor

    task = registry().get(task_name)
    if split not in EVALUATION_SPLITS:
        raise UnimpError(f"--split must be one of {', '.join(EVALUATION_SPLITS)}")
    export = resolve_export(checkpoint)
    dataset = dataclasses.replace(open_dataset(data_dir), candidates=settings.candidates)
    loaded = load_exported(export)
    if split == "new_domain_finetune" and not loaded.meta.get("provenance", {}).get("finetune"):
        raise UnimpError(
            f"{checkpoint} was not fine-tuned on the held-out domain's train part, so it cannot be "
            "scored on new_domain_finetune; train one with --set train.transfer.regime=source+target "
            "(and --set train.init_from=SOURCE_RUN to fine-tune), or evaluate this one on new_domain"
        )
    trained_on = loaded.meta.get("provenance", {}).get("dataset", {}).get("content_hash")
    if trained_on and trained_on != dataset.manifest["content_hash"]:
        raise UnimpError(
            f"{checkpoint} was trained on another dataset than {data_dir}; "
            "its item tokens would name other items"
        )
    # the options' tags follow a chosen name too: a perturbed or partial run never replaces the
    # result of the plain one in the same folder
    method = (method or _default_method(export, loaded.meta)) + settings.method_tag(task)
    reason = UniMPPredictor.cannot_serve(task, loaded.meta)
    if reason:
        raise UnimpError(f"{method} cannot be evaluated on {task.name}: {reason}")
    method += candidates_tag(dataset, split)
    predictor = UniMPPredictor(loaded, dataset, settings, method, show_progress)
    with examples_for(data_dir, [task.name], [split], examples_dir, seed, show_progress) as example_set:
        examples = load_examples_to_score(example_set, task, split)
        reason = predictor.not_applicable(task, split)
        if reason:
            result, path = not_applicable_result(
                method, task, split, example_set, len(examples), reason, predictor.config(), out
            )
            return result, path, {"reused_shards": 0, "robustness": {}}
        if not parallel.active:  # the ranks load the model themselves
            _ = predictor.store  # encode the images now, before the shards' progress bar takes the console
        if settings.limit is not None:
            examples = examples.head(settings.limit)
        attributes, has_image = [], np.zeros(0, dtype=bool)  # unperturbed runs need no item texts
        if settings.perturbation.active:
            attributes, has_image = item_text_and_images(dataset, example_set)
        examples, robustness = perturb(examples, attributes, has_image, settings.perturbation)
        stem = f"{safe_name(method)}__{task.name}__{split}"
        predictor.image_folder = (out / "predictions", f"{stem}.images")  # image_generation writes there
        partial = out / "predictions" / ".partial" / stem
        key = predictions_key(export / WEIGHTS_FILE, example_set, task, split, settings, method)
        job = ShardJob(
            export=str(export.resolve()),
            data=str(data_dir.resolve()),
            task=task.name,
            method=method,
            settings=to_mapping(settings),
            partial=str(partial.resolve()),
            image_root=str((out / "predictions").resolve()),
            image_folder=f"{stem}.images",
            device="cuda" if parallel.on_gpus else "cpu",
        )
        predictions, reused = sharded_predictions(
            lambda chunk: predictor.predict(task, chunk),
            examples,
            partial,
            key,
            settings.shard_size,
            show_progress,
            ranks=(lambda: launch_ranks(job, examples, parallel)) if parallel.active else None,
        )
        predictions_path = write_predictions(predictions, out / "predictions" / f"{stem}.parquet")
        scores, used, statistics = score_predictions(
            task, examples, predictions, scoring, dataset.root, predictions_path.parent
        )
        scores |= extra_model_scores(task, examples, predictions)
        config = predictor.config() | {"robustness": robustness, "limit": settings.limit}
        if task.metric_family == "image":  # what the model was given and what it made, per user
            from unimp_bench.evaluation.contact_sheets import write_contact_sheets

            sheets = write_contact_sheets(
                examples,
                predictions,
                dataset,
                out / "predictions",
                f"{stem}.sheets",
                settings.contact_sheets,
            )
            config["contact_sheets"] = [f"predictions/{name}" for name in sheets]
        if task.metric_family == "ranking":
            config |= describe_candidates(dataset, split)
        result, path = record_scores(
            method,
            task,
            split,
            example_set,
            len(examples),
            config,
            scores,
            used,
            predictions_path,
            out,
            checkpoint=str(export.resolve()),
            statistics=statistics,
        )
    shutil.rmtree(partial, ignore_errors=True)
    return result, path, {"reused_shards": reused, "robustness": robustness}


def extra_model_scores(task: Task, examples: pl.DataFrame, predictions: pl.DataFrame) -> dict[str, float]:
    """Scores beyond the task's metrics that only model predictions carry, from the saved file:
    invalid-ID and duplicate rates of generated rankings (per returned beam), and MAE/RMSE of the
    expected rating next to those of the most likely rating."""
    scores: dict[str, float] = {}
    if task.metric_family == "ranking" and "invalid" in predictions.columns:
        beams = max(1, int(predictions["beams"].sum()))
        scores["invalid_id_rate"] = int(predictions["invalid"].sum()) / beams
        scores["duplicate_rate"] = int(predictions["duplicates"].sum()) / beams
    if task.metric_family == "rating" and "rating_expected" in predictions.columns:
        joined = align(
            examples.select("example_id", "rating"), predictions.select("example_id", "rating_expected")
        )
        expected = rating_metrics(joined["rating_expected"], joined["rating"])
        scores |= {f"{name}-expected": value for name, value in expected.items()}
    return scores


def item_text_and_images(dataset, example_set: ExampleSet) -> tuple[list[list[tuple[str, str]]], np.ndarray]:
    """Each item's (key, value) attributes as the examples' prompts show them, and whether it has an image."""
    prompt_settings = from_mapping(
        PromptSettings, example_set.manifest["settings"]["prompt"], "prompt settings"
    )
    items = dataset.scan("items").sort("item_idx").collect()
    attributes = [item_attributes(row, prompt_settings) for row in items.iter_rows(named=True)]
    return attributes, items["image_path"].is_not_null().to_numpy()
