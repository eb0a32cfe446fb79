"""Where a task meets a model or a baseline: predictions are checked against examples and scored.

Every predictor (a baseline here, the UniMP model in its own issue) hands over one prediction per
example, keyed by `example_id`. The fields a prediction needs depend on the task's metric family:

| family  | tasks                   | prediction fields                                                     |
|---------|-------------------------|-----------------------------------------------------------------------|
| ranking | recommendation, search  | `ranked` (item ids, best first) or `greater` + `ties` (see metrics)    |
| rating  | preference              | `rating` (a number)                                                   |
| text    | explanation             | `text`                                                                |
| set     | selection               | `selected` (item ids)                                                 |
| image   | image_generation        | `image` (path of the generated image, relative to the predictions file)|

`greater`/`ties` are the exact rank counts of the target in a full score vector, which keeps ties
honest; `ranked` lists are taken as given. Predictions and examples must match one to one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench import __version__
from unimp_bench.clip_scoring import ClipEmbedder, ClipSettings
from unimp_bench.config import to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.examples import ExampleSet
from unimp_bench.fileio import file_sha256, write_bytes_atomic
from unimp_bench.metrics import (
    diversity,
    paired_cosine,
    ranking_metrics,
    rating_metrics,
    set_metrics,
    target_rank_from_list,
    text_metrics,
)
from unimp_bench.results import Result, write_result
from unimp_bench.tasks import Task

PREDICTION_FIELDS = {
    "ranking": {"ranked": pl.List(pl.Int64), "greater": pl.Float64, "ties": pl.Float64},
    "rating": {"rating": pl.Float64},
    "text": {"text": pl.String},
    "set": {"selected": pl.List(pl.Int64)},
    "image": {"image": pl.String},
}


@dataclass(frozen=True)
class ScoringSettings:
    tie_rule: str = "expected"
    bertscore_model: str = "auto"  # auto | minilm | a local folder | a model in the Hugging Face cache
    bertscore_layers: int | None = None
    clip: ClipSettings = field(default_factory=ClipSettings)


def _required(family: str, columns: list[str]) -> list[str]:
    if family == "ranking":
        if "greater" in columns or "ties" in columns:
            return ["greater", "ties"]
        return ["ranked"]
    return list(PREDICTION_FIELDS[family])


def read_predictions(path: Path, family: str) -> pl.DataFrame:
    """example_id plus the family's fields, from JSONL (one object per line) or Parquet."""
    if not path.is_file():
        raise UnimpError(f"predictions file {path} does not exist")
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception:  # polars raises several error types for a damaged file
            raise UnimpError(f"{path} is not a readable Parquet file") from None
    else:
        rows = []
        with open(path, encoding="utf-8", errors="strict") as handle:
            try:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise UnimpError(f"{path} line {number} is not valid JSON") from None
                    if not isinstance(row, dict):
                        raise UnimpError(f"{path} line {number} is not a JSON object")
                    rows.append(row)
            except UnicodeDecodeError:
                raise UnimpError(f"{path} is not UTF-8 text; write predictions as JSONL or Parquet") from None
        columns = sorted({key for row in rows for key in row})
        frame = pl.DataFrame({c: [row.get(c) for row in rows] for c in columns}, strict=False)
    required = ["example_id", *_required(family, frame.columns)]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UnimpError(f"{path} lacks the prediction field(s) {', '.join(missing)} this task needs")
    frame = frame.select(required)
    try:
        frame = frame.cast(
            {"example_id": pl.String, **{c: PREDICTION_FIELDS[family][c] for c in required[1:]}}
        )
    except Exception:
        raise UnimpError(
            f"{path} has prediction fields of the wrong type; expected "
            + ", ".join(f"{c}: {PREDICTION_FIELDS[family][c]}" for c in required[1:])
        ) from None
    return frame


def align(examples: pl.DataFrame, predictions: pl.DataFrame) -> pl.DataFrame:
    """Examples joined one to one with their predictions, in example order."""
    duplicated = predictions.filter(pl.col("example_id").is_duplicated())["example_id"]
    if len(duplicated):
        raise UnimpError(
            f"{duplicated.n_unique()} example ids have more than one prediction, e.g. {duplicated[0]}"
        )
    joined = examples.join(predictions, on="example_id", how="left", maintain_order="left")
    extra = predictions.join(examples.select("example_id"), on="example_id", how="anti")
    if len(extra):
        raise UnimpError(
            f"{len(extra)} predictions name examples that do not exist here, e.g. {extra['example_id'][0]}; "
            "were they made for other examples (task, split or seed)?"
        )
    value_columns = [c for c in predictions.columns if c != "example_id"]
    missing = joined.filter(pl.all_horizontal(pl.col(value_columns).is_null()))
    if len(missing):
        raise UnimpError(
            f"{len(missing)} of {len(examples)} examples have no prediction, e.g. {missing['example_id'][0]}"
        )
    return joined


def score_aligned(
    task: Task,
    joined: pl.DataFrame,
    settings: ScoringSettings,
    dataset_root: Path | None = None,
    predictions_root: Path | None = None,
    embedder: ClipEmbedder | None = None,
) -> tuple[dict[str, float], dict]:
    """The task's metrics over examples joined with predictions, and the metric settings used."""
    family = task.metric_family
    used: dict = {}
    if family == "ranking":
        if "greater" in joined.columns:
            greater = joined["greater"].to_numpy()
            ties = joined["ties"].to_numpy()
            if (greater < 0).any() or (ties < 0).any() or np.isnan(greater).any() or np.isnan(ties).any():
                raise UnimpError("greater and ties must be non-negative counts")
        else:
            greater = np.array(
                [
                    target_rank_from_list(r, t)
                    for r, t in zip(joined["ranked"].to_list(), joined["target_item"])
                ]
            )
            ties = np.zeros(len(greater))
        used["tie_rule"] = settings.tie_rule
        return ranking_metrics(greater, ties, task.metrics, settings.tie_rule), used
    if family == "rating":
        return rating_metrics(joined["rating_right"], joined["rating"]), used
    if family == "set":
        candidates = joined["candidates"].to_list()
        selected = joined["selected"].to_list()
        outside = sum(1 for chosen, allowed in zip(selected, candidates) if not set(chosen) <= set(allowed))
        if outside:
            raise UnimpError(f"{outside} selections name items that are not among their candidates")
        scores = set_metrics(selected, joined["positives"].to_list())
        return {name: scores[name] for name in task.metrics}, used
    if family == "text":
        from unimp_bench.text_resources import resolve_bertscore_model

        scorer = None
        if any(m.startswith("BERTScore") for m in task.metrics):
            model = resolve_bertscore_model(settings.bertscore_model, settings.bertscore_layers)
            scorer = (model.path, model.num_layers)
            used["bertscore_model"] = model.describe()
        hypotheses = [t or "" for t in joined["text"].to_list()]
        return text_metrics(hypotheses, joined["review"].to_list(), task.metrics, scorer), used
    if family == "image":
        if embedder is None:
            embedder = ClipEmbedder.from_settings(settings.clip)
            used["clip"] = settings.clip.describe()
        generated = [predictions_root / p for p in joined["image"].to_list()]
        targets = [dataset_root / p for p in joined["target_image"].to_list()]
        generated_embeddings = embedder.images(generated)
        scores = {
            "CLIP-I": paired_cosine(generated_embeddings, embedder.images(targets)),
            "CLIP-T": paired_cosine(generated_embeddings, embedder.texts(joined["query"].to_list())),
            "Diversity": diversity(generated_embeddings),
        }
        return {name: scores[name] for name in task.metrics}, used
    raise UnimpError(f"no scorer for metric family {family}")


def _rename_conflicts(examples: pl.DataFrame, predictions: pl.DataFrame) -> pl.DataFrame:
    # the preference example's own `rating` is the truth; the prediction's is renamed
    clash = [c for c in predictions.columns if c != "example_id" and c in examples.columns]
    return predictions.rename({c: f"{c}_right" for c in clash})


def score_predictions(
    task: Task,
    examples: pl.DataFrame,
    predictions: pl.DataFrame,
    settings: ScoringSettings,
    dataset_root: Path | None = None,
    predictions_root: Path | None = None,
    embedder: ClipEmbedder | None = None,
) -> tuple[dict[str, float], dict]:
    joined = align(examples, _rename_conflicts(examples, predictions))
    return score_aligned(task, joined, settings, dataset_root, predictions_root, embedder)


def _examples_provenance(example_set: ExampleSet, task: Task, split: str) -> dict:
    entry = example_set.entry(task, split)
    return {
        "file": entry["file"],
        "sha256": entry["sha256"],
        "seed": example_set.manifest["settings"]["seed"],
        "instruction": example_set.manifest["settings"]["instruction"],
    }


def make_result(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    scores: dict[str, float],
    n_examples: int,
    metric_settings: dict,
    predictions_file: Path,
    config: dict | None = None,
    checkpoint: str | None = None,
) -> Result:
    return Result(
        method=method,
        task=task.name,
        task_version=task.version,
        split=split,
        dataset={k: v for k, v in example_set.manifest["dataset"].items() if k != "path"},
        scores=scores,
        n_examples=n_examples,
        provenance={
            "package_version": __version__,
            "seed": example_set.manifest["settings"]["seed"],
            "examples": _examples_provenance(example_set, task, split),
            "predictions": {"file": predictions_file.name, "sha256": file_sha256(predictions_file)},
            "metric_settings": metric_settings,
            "config": config or {},
            "checkpoint": checkpoint,
        },
    )


def split_of(predictions: pl.DataFrame) -> str:
    splits = predictions["example_id"].str.split(":").list.get(1, null_on_oob=True).unique().to_list()
    if len(splits) != 1 or splits[0] is None:
        raise UnimpError(
            "predictions must all belong to one split (example ids task:split:user:pos); pass --split"
        )
    return splits[0]


def load_examples_to_score(example_set: ExampleSet, task: Task, split: str) -> pl.DataFrame:
    examples = example_set.load(task, split)
    if examples.is_empty():
        skipped = example_set.entry(task, split)["skipped"]
        why = f" (skipped: {', '.join(f'{n} {reason}' for reason, n in skipped.items())})" if skipped else ""
        raise UnimpError(f"there are no {split} examples of {task.name} to score{why}")
    return examples


def _score_and_record(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    examples: pl.DataFrame,
    predictions: pl.DataFrame,
    predictions_path: Path,
    config: dict,
    settings: ScoringSettings,
    out: Path,
) -> tuple[Result, Path]:
    scores, used = score_predictions(
        task,
        examples,
        predictions,
        settings,
        Path(example_set.manifest["dataset"]["path"]),
        predictions_path.resolve().parent,
    )
    result = make_result(
        method, task, split, example_set, scores, len(examples), used, predictions_path, config=config
    )
    return result, write_result(result, out)


def score_file(
    task: Task,
    predictions_path: Path,
    example_set: ExampleSet,
    method: str,
    out: Path,
    split: str | None,
    settings: ScoringSettings,
) -> tuple[Result, Path]:
    """`unimp-bench score`: read predictions, score them against their examples, write a Result."""
    predictions = read_predictions(predictions_path, task.metric_family)
    split = split or split_of(predictions)
    examples = load_examples_to_score(example_set, task, split)
    config = {"scoring": to_mapping(settings) | {"clip": settings.clip.describe()}}
    return _score_and_record(
        method, task, split, example_set, examples, predictions, predictions_path, config, settings, out
    )


def write_predictions(frame: pl.DataFrame, path: Path) -> Path:
    """Predictions as Parquet, written atomically (the Result cites this file's sha256)."""
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def evaluate_predictor(
    predictor,
    task: Task,
    split: str,
    example_set: ExampleSet,
    out: Path,
    settings: ScoringSettings,
) -> tuple[Result, Path]:
    """Run a predictor on one split. A predictor has `name`, `config()`, `predict(task, examples)`,
    `tunes_on_valid(task)` and, where that is true, `tune(task, valid_examples)`."""
    examples = load_examples_to_score(example_set, task, split)
    predictions = predictor.predict(task, examples)
    predictions_path = write_predictions(
        predictions, out / "predictions" / f"{predictor.name}__{task.name}__{split}.parquet"
    )
    return _score_and_record(
        predictor.name,
        task,
        split,
        example_set,
        examples,
        predictions,
        predictions_path,
        predictor.config(),
        settings,
        out,
    )
