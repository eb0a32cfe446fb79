"""Where a task meets a model or a baseline: predictions are checked against examples and scored.

Every predictor (a baseline, or `UniMPPredictor` for a trained UniMP) hands over one prediction per
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

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from unimp_bench import __version__
from unimp_bench.clip_scoring import ClipEmbedder, ClipSettings
from unimp_bench.config import to_mapping
from unimp_bench.data.contract import CANDIDATE_CATALOGS
from unimp_bench.data.transfer import candidates_tag, describe_candidates
from unimp_bench.errors import UnimpError
from unimp_bench.examples import ExampleSet
from unimp_bench.fileio import file_sha256, write_bytes_atomic
from unimp_bench.metrics import (
    diversity,
    paired_cosine,
    ranking_metrics,
    rating_metrics,
    set_metrics,
    target_rank_counts,
    target_rank_from_list,
    text_metrics,
)
from unimp_bench.results import Result, safe_name, write_result
from unimp_bench.robustness import Perturbation
from unimp_bench.tasks import Task

PREDICTION_FIELDS = {
    "ranking": {"ranked": pl.List(pl.Int64), "greater": pl.Float64, "ties": pl.Float64},
    "rating": {"rating": pl.Float64},
    "text": {"text": pl.String},
    "set": {"selected": pl.List(pl.Int64)},
    "image": {"image": pl.String},
}

logger = logging.getLogger(__name__)


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
                    except (ValueError, RecursionError):  # JSONDecodeError, 4,300+ digit integers
                        raise UnimpError(f"{path} line {number} is not valid JSON") from None
                    if not isinstance(row, dict):
                        raise UnimpError(f"{path} line {number} is not a JSON object")
                    rows.append(row)
            except UnicodeDecodeError:
                raise UnimpError(f"{path} is not UTF-8 text; write predictions as JSONL or Parquet") from None
        columns = sorted({key for row in rows for key in row})
        try:
            frame = pl.DataFrame({c: [row.get(c) for row in rows] for c in columns}, strict=False)
        except Exception as exc:  # values polars cannot put in one column (objects beside lists, ...)
            raise UnimpError(f"{path} holds values of incompatible types in one field ({exc})") from None
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


def not_applicable_result(
    method: str,
    task: Task,
    split: str,
    example_set: ExampleSet,
    n_examples: int,
    reason: str,
    config: dict,
    out: Path,
) -> tuple[Result, Path]:
    """A result that says the method cannot serve this split: every metric of the task is null and
    the reason is recorded, so the leaderboard shows "n/a" instead of silently missing a row."""
    result = Result(
        method=method,
        task=task.name,
        task_version=task.version,
        split=split,
        dataset={k: v for k, v in example_set.manifest["dataset"].items() if k != "path"},
        scores={metric: float("nan") for metric in task.metrics},
        n_examples=n_examples,
        provenance={
            "package_version": __version__,
            "seed": example_set.manifest["settings"]["seed"],
            "examples": _examples_provenance(example_set, task, split),
            "not_applicable": reason,
            "config": config,
        },
    )
    return result, write_result(result, out)


def evaluate_predictor(
    predictor,
    task: Task,
    split: str,
    example_set: ExampleSet,
    out: Path,
    settings: ScoringSettings,
) -> tuple[Result, Path]:
    """Run a predictor on one split. A predictor has `name`, `config()`, `predict(task, examples)`,
    `tunes_on_valid(task)` and, where that is true, `tune(task, valid_examples)`; it may have
    `not_applicable(task, split)`, a reason why it cannot serve that split, which is then recorded as
    a result without scores rather than skipped."""
    examples = load_examples_to_score(example_set, task, split)
    reason = predictor.not_applicable(task, split) if hasattr(predictor, "not_applicable") else None
    if reason:
        return not_applicable_result(
            predictor.name, task, split, example_set, len(examples), reason, predictor.config(), out
        )
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


# ---------------------------------------------------------------------------------------------------
# a trained UniMP: `unimp-bench eval`

RANKING_DECODING = ("exact", "beam", "unconstrained")
SEEN_ITEMS = ("keep", "exclude")
TEXT_DECODING = ("greedy", "beam")
UNCONSTRAINED_MAX_TOKENS = 4  # an answer is one item token then EOS; longer beams are invalid anyway


@dataclass(frozen=True)
class ModelEvalSettings:
    ranking: str = "exact"  # exact: one forward pass, softmax over item tokens | beam | unconstrained
    beams: int = 10  # beams (and returned items) of beam and unconstrained ranking
    seen_items: str = "exclude"  # exclude (the protocol) | keep the items the user had before the target
    candidates: str = "domain"  # new_domain splits rank the held-out domain's catalog | all items
    text_decoding: str = "greedy"  # explanation: greedy | beam
    text_beams: int = 4
    max_new_tokens: int = 80  # length cap of explanations, in tokens
    batch_size: int = 16
    shard_size: int = 256  # examples per resumable shard
    limit: int | None = None  # the first N examples only (quick looks)
    perturbation: Perturbation = field(default_factory=Perturbation)

    def __post_init__(self) -> None:
        if self.ranking not in RANKING_DECODING:
            raise UnimpError(f"--ranking must be one of {', '.join(RANKING_DECODING)}")
        if self.seen_items not in SEEN_ITEMS:
            raise UnimpError(f"--seen-items must be one of {', '.join(SEEN_ITEMS)}")
        if self.candidates not in CANDIDATE_CATALOGS:
            raise UnimpError(f"--candidates must be one of {', '.join(CANDIDATE_CATALOGS)}")
        if self.text_decoding not in TEXT_DECODING:
            raise UnimpError(f"--text-decoding must be one of {', '.join(TEXT_DECODING)}")
        if min(self.beams, self.text_beams, self.max_new_tokens, self.batch_size, self.shard_size) < 1:
            raise UnimpError(
                "--beams, --text-beams, --max-new-tokens, --batch-size and --shard-size must be >= 1"
            )
        if self.limit is not None and self.limit < 1:
            raise UnimpError("--limit must be at least 1")

    def method_tag(self, task: Task) -> str:
        """What sets this run apart from the defaults, for the method name (e.g. '+beam+keep_seen')."""
        tag = ""
        if task.metric_family == "ranking":
            tag += "" if self.ranking == "exact" else f"+{self.ranking}"
            tag += "+keep_seen" if self.seen_items == "keep" else ""
        if task.metric_family == "text" and self.text_decoding == "beam":
            tag += f"+beam{self.text_beams}"
        tag += self.perturbation.tag()
        # a quick look must never replace the full result of the same model in a results folder
        return tag + (f"+first_{self.limit}" if self.limit is not None else "")


class UniMPPredictor:
    """A trained UniMP answering task examples; every decision it takes is in `config()`."""

    def __init__(self, loaded, dataset, settings: ModelEvalSettings, name: str, show_progress: bool = False):
        from unimp_bench.models.inputs import catalog_image_paths

        self.name = name
        self.model, self.tokenizer, self.meta = loaded.model, loaded.tokenizer, loaded.meta
        self.dataset = dataset
        self.settings = settings
        self.show_progress = show_progress
        self.max_length = self.model.config.max_length
        self.image_paths = catalog_image_paths(dataset)
        if len(self.image_paths) != self.model.vocabulary.num_items:
            raise UnimpError(
                f"the checkpoint knows {self.model.vocabulary.num_items} items, the dataset has "
                f"{len(self.image_paths)}; evaluate it on the dataset it was trained on"
            )

    @functools.cached_property
    def store(self):
        """The catalog's image features, encoded on first use (a not-applicable split never pays for
        encoding every image)."""
        from unimp_bench.models.inputs import ImageFeatureStore, ItemImages
        from unimp_bench.progress import ProgressReporter

        with ProgressReporter(self.show_progress) as progress:
            return ImageFeatureStore(
                self.model,
                ItemImages(self.dataset.root, self.image_paths, self.model.vision.image_size[0]),
                self.model.config.vision.feature_cache_gb,
                progress=progress,
            )

    @staticmethod
    def cannot_serve(task: Task) -> str | None:
        if task.metric_family == "image":
            return "this UniMP checkpoint has no image tokenizer, so it cannot generate images"
        return None

    def not_applicable(self, task: Task, split: str) -> str | None:
        """UniMP names items by one learned token each; a held-out-domain item's token never met a
        training example, so zero-shot rankings would only read its initial row."""
        if task.metric_family == "ranking":
            from unimp_bench.baselines.history import no_item_evidence

            return no_item_evidence(self.name, split)
        return None

    def config(self) -> dict:
        provenance = self.meta.get("provenance", {})
        return {
            "eval": to_mapping(self.settings),
            "model": {
                "run": provenance.get("run"),
                "step": provenance.get("step"),
                "stage": provenance.get("stage"),
            },
            "training_config": provenance.get("config"),
        }

    # -- tasks --------------------------------------------------------------------------------------

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        family = task.metric_family
        if family == "ranking":
            from unimp_bench.baselines.history import excluded_items

            seen = excluded_items(self.dataset, examples, self.settings.seen_items == "exclude")
            if self.settings.ranking == "exact":
                return self._rank_exact(examples, seen)
            return self._rank_generated(examples, seen)
        if family == "rating":
            return self._rate(examples)
        if family == "text":
            return self._explain(examples)
        if family == "set":
            return self._select(examples)
        raise UnimpError(self.cannot_serve(task) or f"UniMP does not serve task {task.name}")

    def _scores(self, examples: pl.DataFrame, vocabulary: str) -> np.ndarray:
        """Next-token logits after each prompt over the `items` or `ratings` rows, [n, width]."""
        from unimp_bench.models.predict import next_token_scores

        return next_token_scores(
            self.model,
            self.tokenizer,
            self.store,
            examples["prompt"].to_list(),
            examples["image_items"].to_list(),
            self.max_length,
            vocabulary,
            self.settings.batch_size,
        ).astype(np.float64)

    def _generate(self, examples: pl.DataFrame, processors, **options) -> list[list[list[int]]]:
        """generate() over the examples' prompts; see models.predict.generate for the options."""
        from unimp_bench.models.predict import generate

        options.setdefault("batch_size", self.settings.batch_size)
        return generate(
            self.model,
            self.tokenizer,
            self.store,
            examples["prompt"].to_list(),
            examples["image_items"].to_list(),
            self.max_length,
            processors,
            **options,
        )

    def _rank_exact(self, examples: pl.DataFrame, seen: list[np.ndarray] | None) -> pl.DataFrame:
        from unimp_bench.baselines.ranking import SHOWN_TOP, mask_seen, ranking_predictions

        targets = examples["target_item"].to_numpy()
        scores = mask_seen(self._scores(examples, "items"), seen, targets)
        greater, ties = target_rank_counts(scores, targets)  # NaN scores are refused there
        order = np.argsort(-scores, axis=1, kind="stable")[:, :SHOWN_TOP]  # equal scores: lower item id first
        return ranking_predictions(examples["example_id"], greater, ties, order.tolist())

    def _rank_generated(self, examples: pl.DataFrame, seen: list[np.ndarray] | None) -> pl.DataFrame:
        import torch

        from unimp_bench.models.generation import ItemThenEnd

        vocabulary, beams = self.model.vocabulary, self.settings.beams
        constrained = self.settings.ranking == "beam"
        banned = None
        if seen is not None:
            banned = torch.zeros(len(examples), vocabulary.num_items, dtype=torch.bool)
            for row, items in enumerate(seen):
                banned[row, items] = True

        def processors(prompt_length: int, rows: np.ndarray) -> list:
            if not constrained:
                return []
            rows_banned = banned[torch.as_tensor(rows)] if banned is not None else None
            return [ItemThenEnd(prompt_length, vocabulary.item_start, self.tokenizer.eos_id, rows_banned)]

        outputs = self._generate(
            examples,
            processors,
            num_beams=beams,
            num_return=beams,
            max_new_tokens=2 if constrained else UNCONSTRAINED_MAX_TOKENS,
            renormalize=constrained,
            batch_size=max(1, self.settings.batch_size // 2),
        )
        ranked, invalid, duplicates, texts = [], [], [], []
        for row, sequences in enumerate(outputs):
            items, bad, repeated = [], 0, 0
            excluded = set(seen[row].tolist()) if seen is not None else set()
            for tokens in sequences:
                if len(tokens) != 1 or tokens[0] < vocabulary.item_start:
                    bad += 1  # anything but exactly one item token before EOS names no item
                    continue
                item = tokens[0] - vocabulary.item_start
                if item in items:
                    repeated += 1
                elif item not in excluded:
                    items.append(item)
            ranked.append(items)
            invalid.append(bad)
            duplicates.append(repeated)
            texts.append([self.tokenizer.decode(tokens) for tokens in sequences])
        return pl.DataFrame(
            {
                "example_id": examples["example_id"],
                "ranked": ranked,
                "beams": [len(s) for s in outputs],
                "invalid": invalid,
                "duplicates": duplicates,
                "generated": texts,
            },
            schema_overrides={
                "ranked": pl.List(pl.Int64),
                "beams": pl.Int64,
                "invalid": pl.Int64,
                "duplicates": pl.Int64,
            },
        )

    def _rate(self, examples: pl.DataFrame) -> pl.DataFrame:
        logits = self._scores(examples, "ratings")
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)  # softmax over the rating tokens only
        levels = np.arange(1, logits.shape[1] + 1, dtype=np.float64)
        return pl.DataFrame(
            {
                "example_id": examples["example_id"],
                "rating": levels[probabilities.argmax(axis=1)],
                "rating_expected": probabilities @ levels,
                "rating_probabilities": probabilities.tolist(),
            }
        )

    def _explain(self, examples: pl.DataFrame) -> pl.DataFrame:
        from unimp_bench.models.generation import BaseVocabularyOnly

        beam = self.settings.text_decoding == "beam"
        base_size = self.model.vocabulary.base_size
        outputs = self._generate(
            examples,
            lambda prompt_length, rows: [BaseVocabularyOnly(base_size)],
            num_beams=self.settings.text_beams if beam else 1,
            num_return=1,
            max_new_tokens=self.settings.max_new_tokens,
            renormalize=beam,
        )
        texts = [self.tokenizer.decode(sequences[0]) for sequences in outputs]
        lengths = [len(sequences[0]) for sequences in outputs]
        return pl.DataFrame(
            {"example_id": examples["example_id"], "text": texts, "generated_tokens": lengths}
        )

    def _select(self, examples: pl.DataFrame) -> pl.DataFrame:
        from unimp_bench.models.generation import DistinctCandidates

        vocabulary, eos = self.model.vocabulary, self.tokenizer.eos_id
        candidates = examples["candidates"].to_list()
        candidate_ids = [[vocabulary.item_id(c) for c in row] for row in candidates]
        outputs = self._generate(
            examples,
            lambda prompt_length, rows: [
                DistinctCandidates(prompt_length, [candidate_ids[i] for i in rows], vocabulary.total, eos)
            ],
            num_beams=1,
            num_return=1,
            max_new_tokens=max(len(row) for row in candidates) + 1,
            renormalize=False,
        )
        selected = [[token - vocabulary.item_start for token in sequences[0]] for sequences in outputs]
        return pl.DataFrame(
            {"example_id": examples["example_id"], "selected": selected},
            schema_overrides={"selected": pl.List(pl.Int64)},
        )


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


def _predictions_key(
    path_of_weights: Path, example_set: ExampleSet, task: Task, split: str, settings, method
) -> dict:
    return {
        "weights_sha256": file_sha256(path_of_weights),
        "examples_sha256": example_set.entry(task, split)["sha256"],
        "task": task.name,
        "task_version": task.version,
        "split": split,
        "method": method,
        "settings": to_mapping(settings),
    }


def sharded_predictions(
    predict, examples: pl.DataFrame, partial: Path, key: dict, shard_size: int, show_progress: bool
) -> tuple[pl.DataFrame, int]:
    """Predictions shard by shard; each finished shard is written atomically under `partial`, so an
    interrupted evaluation resumes at the first missing shard (if `key`, what determines the
    predictions, is unchanged; otherwise the old shards are discarded). Returns (predictions, shards
    reused)."""
    import shutil

    from unimp_bench.fileio import read_json, write_json_atomic
    from unimp_bench.progress import ProgressReporter

    key_path = partial / "key.json"
    if partial.exists() and (not key_path.is_file() or read_json(key_path, "delete it") != key):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json_atomic(key_path, key)
    shards, reused = [], 0
    count = max(1, -(-len(examples) // shard_size))
    with ProgressReporter(show_progress) as progress:
        bar = progress.add("evaluating", len(examples))
        for index in range(count):
            path = partial / f"shard_{index:05d}.parquet"
            chunk = examples.slice(index * shard_size, shard_size)
            shard = _saved_shard(path, chunk)
            if shard is not None:
                reused += 1
            else:
                shard = predict(chunk)
                write_predictions(shard, path)
            shards.append(shard)
            progress.advance(bar, len(chunk))
    return pl.concat(shards, how="vertical"), reused


def _saved_shard(path: Path, chunk: pl.DataFrame) -> pl.DataFrame | None:
    """A finished shard of an earlier run, or None when there is none or it is damaged (unreadable, or
    not the predictions of exactly this chunk's examples): a damaged one is removed and recomputed."""
    if not path.is_file():
        return None
    try:
        shard = pl.read_parquet(path)
        same = shard["example_id"].to_list() == chunk["example_id"].to_list()
    except Exception:  # polars raises several error types for a damaged file
        same = False
    if same:
        return shard
    logger.warning("shard %s is damaged; computing it again", path.name)
    path.unlink(missing_ok=True)
    return None


def _default_method(export: Path, meta: dict) -> str:
    run = meta.get("provenance", {}).get("run")
    name = "UniMP" + (f"-{Path(run).name}" if run else "")
    if export.parent.name.startswith("step_"):
        name += f"@{export.parent.name}"
    return name


def evaluate_checkpoint(
    task_name: str,
    checkpoint: Path,
    data_dir: Path,
    split: str,
    out: Path,
    settings: ModelEvalSettings = ModelEvalSettings(),
    scoring: ScoringSettings = ScoringSettings(),
    examples_dir: Path | None = None,
    seed: int = 0,
    method: str | None = None,
    show_progress: bool = False,
) -> tuple[Result, Path, dict]:
    """`unimp-bench eval`: a trained UniMP on one task and split; writes predictions and a Result.
    Returns the result, its path and a run report (shards reused, perturbation counts)."""
    import shutil

    from unimp_bench.data.contract import open_dataset
    from unimp_bench.examples import examples_for
    from unimp_bench.models.export import WEIGHTS_FILE, load_exported, resolve_export
    from unimp_bench.robustness import perturb
    from unimp_bench.tasks import EVALUATION_SPLITS, registry

    task = registry().get(task_name)
    if split not in EVALUATION_SPLITS:
        raise UnimpError(f"--split must be one of {', '.join(EVALUATION_SPLITS)}")
    export = resolve_export(checkpoint)
    dataset = dataclasses.replace(open_dataset(data_dir), candidates=settings.candidates)
    loaded = load_exported(export)
    if split == "new_domain_finetune" and not loaded.meta.get("provenance", {}).get("finetune"):
        raise UnimpError(
            f"{checkpoint} was not fine-tuned on the held-out domain's train part, so it cannot be "
            "scored on new_domain_finetune (UniMP training has no fine-tuning regime yet); "
            "evaluate it on new_domain"
        )
    trained_on = loaded.meta.get("provenance", {}).get("dataset", {}).get("content_hash")
    if trained_on and trained_on != dataset.manifest["content_hash"]:
        raise UnimpError(
            f"{checkpoint} was trained on another dataset than {data_dir}; "
            "its item tokens would name other items"
        )
    method = method or _default_method(export, loaded.meta) + settings.method_tag(task)
    reason = UniMPPredictor.cannot_serve(task)
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
        _ = predictor.store  # encode the images now, before the shards' progress bar takes the console
        if settings.limit is not None:
            examples = examples.head(settings.limit)
        attributes, has_image = [], np.zeros(0, dtype=bool)  # unperturbed runs need no item texts
        if settings.perturbation.active:
            attributes, has_image = _item_text_and_images(dataset, example_set)
        examples, robustness = perturb(examples, attributes, has_image, settings.perturbation)
        stem = f"{safe_name(method)}__{task.name}__{split}"
        partial = out / "predictions" / ".partial" / stem
        key = _predictions_key(export / WEIGHTS_FILE, example_set, task, split, settings, method)
        predictions, reused = sharded_predictions(
            lambda chunk: predictor.predict(task, chunk),
            examples,
            partial,
            key,
            settings.shard_size,
            show_progress,
        )
        predictions_path = write_predictions(predictions, out / "predictions" / f"{stem}.parquet")
        scores, used = score_predictions(
            task, examples, predictions, scoring, dataset.root, predictions_path.parent
        )
        scores |= extra_model_scores(task, examples, predictions)
        config = predictor.config() | {"robustness": robustness, "limit": settings.limit}
        if task.metric_family == "ranking":
            config |= describe_candidates(dataset, split)
        result = make_result(
            method,
            task,
            split,
            example_set,
            scores,
            len(examples),
            used,
            predictions_path,
            config=config,
            checkpoint=str(export.resolve()),
        )
        path = write_result(result, out)
    shutil.rmtree(partial, ignore_errors=True)
    return result, path, {"reused_shards": reused, "robustness": robustness}


def _item_text_and_images(dataset, example_set: ExampleSet) -> tuple[list[list[tuple[str, str]]], np.ndarray]:
    """Each item's (key, value) attributes as the examples' prompts show them, and whether it has an image."""
    from unimp_bench.config import from_mapping
    from unimp_bench.prompts import PromptSettings, item_attributes

    prompt_settings = from_mapping(
        PromptSettings, example_set.manifest["settings"]["prompt"], "prompt settings"
    )
    items = dataset.scan("items").sort("item_idx").collect()
    attributes = [item_attributes(row, prompt_settings) for row in items.iter_rows(named=True)]
    return attributes, items["image_path"].is_not_null().to_numpy()
