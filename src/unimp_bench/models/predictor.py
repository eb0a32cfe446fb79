"""A trained UniMP answering task examples (`unimp-bench eval`): its decoding settings and predictor.

The predictor reads each example's prompt (text with image slots) and decodes the answer its task's
metric family asks for: exact item scores or beams over item tokens (ranking), a softmax over the
rating tokens (rating), greedy or beam text (text), distinct candidate tokens (set).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from unimp_bench.config import check_choices, to_mapping
from unimp_bench.data.contract import CandidateCatalog
from unimp_bench.data.transfer import no_item_evidence
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import target_rank_counts
from unimp_bench.ranking import SHOWN_TOP, excluded_items, mask_seen, ranking_predictions
from unimp_bench.robustness import Perturbation
from unimp_bench.tasks import Task

UNCONSTRAINED_MAX_TOKENS = 4  # an answer is one item token then EOS; longer beams are invalid anyway


@dataclass(frozen=True)
class ModelEvalSettings:
    ranking: Literal["exact", "beam", "unconstrained"] = "exact"  # exact: one pass, softmax over item tokens
    beams: int = 10  # beams (and returned items) of beam and unconstrained ranking
    seen_items: Literal["exclude", "keep"] = "exclude"  # exclude: the protocol; keep the user's earlier items
    candidates: CandidateCatalog = "domain"  # new_domain splits: the held-out domain's catalog | all items
    text_decoding: Literal["greedy", "beam"] = "greedy"  # explanation
    text_beams: int = 4
    max_new_tokens: int = 80  # length cap of explanations, in tokens
    image_decoding: Literal["greedy", "beam", "sample"] = "greedy"  # image_generation, over the codes
    image_beams: int = 4
    top_k: int = 50  # sample: the k most likely codes per step
    sample_seed: int = 0
    retrieval: Literal["model", "bm25"] = "model"  # image_generation's stage one (paper eq. 9)
    retrieved: int | None = None  # items retrieved (default: the task's retrieved_images)
    contact_sheets: int = 8  # image_generation: a contact sheet for each of the first N users
    batch_size: int = 16
    shard_size: int = 256  # examples per resumable shard
    limit: int | None = None  # the first N examples only (quick looks)
    perturbation: Perturbation = field(default_factory=Perturbation)

    def __post_init__(self) -> None:
        check_choices(self, lambda name: "--" + name.replace("_", "-"))  # built from command-line flags
        sizes = (self.beams, self.text_beams, self.max_new_tokens, self.image_beams, self.top_k)
        sizes += (self.retrieved,) if self.retrieved is not None else ()
        if min(*sizes, self.batch_size, self.shard_size) < 1:
            raise UnimpError(
                "--beams, --text-beams, --max-new-tokens, --image-beams, --top-k, --retrieved, "
                "--batch-size and --shard-size must be >= 1"
            )
        if self.contact_sheets < 0:
            raise UnimpError("--contact-sheets must be at least 0")
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
        if task.metric_family == "image":
            if self.image_decoding == "beam":
                tag += f"+beam{self.image_beams}"
            elif self.image_decoding == "sample":
                tag += f"+sample_k{self.top_k}_s{self.sample_seed}"
            tag += "+bm25_retrieval" if self.retrieval == "bm25" else ""
            tag += f"+retrieved{self.retrieved}" if self.retrieved is not None else ""
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
        self.image_folder: tuple | None = None  # image_generation: (predictions root, sub-folder)
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

    @functools.cached_property
    def reader(self):
        from unimp_bench.models.item_content import encode_catalog
        from unimp_bench.models.predict import PromptReader

        step = self.meta.get("provenance", {}).get("step", 0)
        perturbation = self.settings.perturbation  # content rows read the catalog: perturbed alike
        encode_catalog(self.model, self.dataset, self.tokenizer, self.store, step, perturbation)
        return PromptReader(self.model, self.tokenizer, self.store, self.max_length)

    @functools.cached_property
    def image_tokenizer(self):
        """The image tokenizer this checkpoint's codes belong to, loaded and checked once."""
        from unimp_bench.models.image_generation import run_image_tokenizer

        return run_image_tokenizer(self.meta, self.dataset.root)

    @functools.cached_property
    def catalog_texts(self) -> list[str]:
        """Every item's flattened chunk, by item_idx, as the examples show it (image generation
        renders prompts with them)."""
        from unimp_bench.examples import Catalog
        from unimp_bench.prompts import PromptSettings

        return Catalog(self.dataset, PromptSettings()).flat

    @staticmethod
    def cannot_serve(task: Task, meta: dict | None = None) -> str | None:
        """Why a checkpoint (its export's meta) cannot answer `task` at all, or None."""
        if task.metric_family == "image" and not (meta or {}).get("provenance", {}).get("image_codes"):
            return (
                "this checkpoint was not trained on image_generation, so it has no image codes to write; "
                "train one with image_generation in train.tasks (after `unimp-bench tokenizer train DATA`)"
            )
        return None

    def not_applicable(self, task: Task, split: str) -> str | None:
        """With `model.items: id` UniMP names items by one learned token each; a held-out-domain
        item's token never met a training example, so zero-shot rankings would only read its initial
        row. Content rows serve it: an unseen item is ranked by its content alone."""
        if task.metric_family == "ranking" and self.model.items is None:
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
        } | self._catalog_perturbation()

    def _catalog_perturbation(self) -> dict:
        """Content rows under --drop-text-attrs / --mismatch-images: how many catalog attribute slots
        were dropped and catalog items encoded from another product's image (robustness.catalog_report)."""
        from unimp_bench.models.item_content import catalog_texts_and_images
        from unimp_bench.robustness import catalog_report

        if self.model.items is None or not self.settings.perturbation.active:
            return {}
        return catalog_report(*catalog_texts_and_images(self.dataset), self.settings.perturbation)

    # -- tasks --------------------------------------------------------------------------------------

    def tunes_on_valid(self, task: Task) -> bool:
        return False

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        """The answers of the task's metric family: UniMP reads every kind's prompt the same way and
        differs only in how it decodes the answer."""
        answer = {"ranking": self._rank, "rating": self._rate, "text": self._explain, "set": self._select}
        answer["image"] = functools.partial(self._imagine, task)  # renders the task's prompts again
        reason = self.cannot_serve(task, self.meta)
        if reason or task.metric_family not in answer:
            raise UnimpError(reason or f"UniMP does not serve task {task.name}")
        return answer[task.metric_family](examples)

    def _rank(self, examples: pl.DataFrame) -> pl.DataFrame:
        seen = excluded_items(self.dataset, examples, self.settings.seen_items == "exclude")
        if self.settings.ranking == "exact":
            return self._rank_exact(examples, seen)
        return self._rank_generated(examples, seen)

    def _scores(self, examples: pl.DataFrame, vocabulary: str) -> np.ndarray:
        """Next-token logits after each prompt over the `items` or `ratings` rows, [n, width]."""
        from unimp_bench.models.predict import next_token_scores

        return next_token_scores(
            self.reader,
            examples["prompt"].to_list(),
            examples["image_items"].to_list(),
            vocabulary,
            self.settings.batch_size,
        ).astype(np.float64)

    def _generate(self, examples: pl.DataFrame, processors, **options) -> list[list[list[int]]]:
        """generate() over the examples' prompts; see models.predict.generate for the options."""
        from unimp_bench.models.predict import generate

        options.setdefault("batch_size", self.settings.batch_size)
        return generate(
            self.reader,
            examples["prompt"].to_list(),
            examples["image_items"].to_list(),
            processors,
            **options,
        )

    def _rank_exact(self, examples: pl.DataFrame, seen: list[np.ndarray] | None) -> pl.DataFrame:
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

    def _imagine(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        """Each example's image: retrieval, then exactly one grid of image codes, decoded to a PNG
        under `image_folder` (set by the evaluation: predictions root, sub-folder)."""
        from unimp_bench.models.image_generation import generate_images

        if self.image_folder is None:
            raise UnimpError("image generation needs a folder for its images (set by the evaluation)")
        return generate_images(self, task, examples, *self.image_folder)

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
