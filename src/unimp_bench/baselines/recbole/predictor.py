"""A RecBole baseline behind the Predictor seam (evaluation/predictor.py): built at construction
(our split exported, RecBole's dataset, train loader and model made, nothing trained), then trained by
`fit()`; `RecBolePredictor.from_spec(spec, dataset).fit()` is what the baseline runner does."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from unimp_bench.baselines.history import item_histories, no_user_vector, valid_interactions, valid_outside
from unimp_bench.baselines.recbole.batching import TrainBatches
from unimp_bench.baselines.recbole.fitting import fit, pretrain
from unimp_bench.baselines.recbole.params import (
    DATASET_NAME,
    RecBoleParams,
    check_options,
    recbole_defaults,
    recbole_options,
    resolve_model_class,
)
from unimp_bench.baselines.recbole.scoring import CatalogScorer, ItemIndex, internal_users
from unimp_bench.baselines.recbole_compat import literal_config, quiet_recbole
from unimp_bench.baselines.recbole_export import export_recbole
from unimp_bench.baselines.recbole_objectives import sliding_windows
from unimp_bench.baselines.selection import SelectionThreshold
from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.data.transfer import FinetuneView, no_item_evidence
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import ranking_metrics
from unimp_bench.ranking import SHOWN_TOP, examples_split, outside_candidates, ranking_predictions
from unimp_bench.tasks import Task


class RecBolePredictor:
    """One RecBole model: `model`, its `batches` (the steps of an epoch) and its `scorer` (full-catalog
    scores) are ready after construction; `fit()` trains it."""

    def __init__(self, name: str, params: RecBoleParams, dataset: PreparedDataset):
        from recbole.data import create_dataset
        from recbole.data.utils import create_samplers, get_dataloader
        from recbole.utils import ModelType, init_seed

        check_options(params)
        self.name, self.params, self.dataset = name, params, dataset
        self.histories = item_histories(dataset)
        # trained on the held-out domain alone (new_domain_finetune from scratch), a model reads
        # histories of that domain's items only; None: every item
        self.history_items = dataset.history_items() if isinstance(dataset, FinetuneView) else None
        self.catalog_size = dataset.catalog_size
        self.training: dict[str, Any] = {}
        self.selection = SelectionThreshold()
        self.fitted = False
        started = time.perf_counter()
        self.model_class = resolve_model_class(params)
        self.layout = "sequential" if self.model_class.type == ModelType.SEQUENTIAL else "general"
        # the exported files, and S3Rec's pre-trained weights between its two stages; removed by fit()
        self._scratch = tempfile.TemporaryDirectory(prefix="unimp-bench-recbole-")
        self.folder = Path(self._scratch.name) / "atomic"
        exported = export_recbole(dataset, self.folder, self.layout, params.max_history, DATASET_NAME)
        self.sequence_width = max(1, exported.longest_history)
        config = self._config("pretrain" if params.pretrain_epochs > 0 else None)
        init_seed(config["seed"], config["reproducibility"])
        with quiet_recbole():
            self.rb_dataset = create_dataset(config)
            built = self.rb_dataset.build()
            train_sampler, _, _ = create_samplers(config, self.rb_dataset, built)
            self.train_data = get_dataloader(config, "train")(config, built[0], train_sampler, shuffle=True)
        self.device = config["device"]
        self.index = ItemIndex.of(self.rb_dataset, self.catalog_size)
        self.train_users, self.train_sequences, windows = None, None, None
        if params.train_rows != "prefixes":
            self.train_users, self.train_sequences = self._train_sequences()
        if params.train_rows == "windows":  # L = the model's history width (HGN needs it whole)
            windows = sliding_windows(self.train_sequences, self.sequence_width, params.window_targets)
        self.windows = windows
        self._use(self.model_class(config, self.train_data.dataset).to(self.device), config)
        self._build_seconds = time.perf_counter() - started

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset) -> RecBolePredictor:
        return cls(spec.name, from_mapping(RecBoleParams, spec.params, f"{spec.name} params"), dataset)

    @property
    def internal_of_item(self) -> np.ndarray:
        return self.index.internal_of_item

    def _config(self, stage: str | None = None):
        options = recbole_options(self.params, self.folder, self.layout, self.sequence_width, stage)
        return literal_config(self.model_class, DATASET_NAME, options)

    def _use(self, model, config) -> None:
        """Make `model` (built from `config`) the one that trains and scores."""
        self.model, self.rb_config = model, config
        self.uses_user_ids = hasattr(model, "user_embedding")
        self.batches = TrainBatches(
            self.params, model, self.train_data, config, self.train_users, self.train_sequences, self.windows
        )
        self.scorer = CatalogScorer(
            self.name,
            self.params,
            model,
            self.rb_dataset,
            self.index,
            self.histories,
            self.sequence_width,
            self.device,
            self.history_items,
        )

    def _train_sequences(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each training user (RecBole's id) and their train items in RecBole's ids, chronological. The
        sequence batches read the last max_history + 1 of them (input = all but the last, targets = all
        but the first): the (history, target) pairs of the exported prefix rows, one row per user;
        window rows cut them into windows. Users with a single train item have no pair and are left
        out."""
        frame = (
            self.dataset.training_scan()
            .sort("user_idx", "pos")
            .group_by("user_idx", maintain_order=True)
            .agg("item_idx")
            .filter(pl.col("item_idx").list.len() >= 2)
            .collect()
        )
        sequences = frame["item_idx"]
        if sequences.is_empty():
            raise UnimpError(f"{self.name} needs training users with at least two training interactions")
        if int(sequences.list.n_unique().max()) >= self.catalog_size:
            raise UnimpError(f"{self.name} cannot sample negatives: a user had every item in training")
        users = internal_users(self.rb_dataset, self.name, frame["user_idx"].to_numpy())
        items = [self.index.internal_of_item[np.asarray(row, dtype=np.int64)] for row in sequences.to_list()]
        return users, items

    # ------------------------------------------------------------------ training

    def fit(self) -> RecBolePredictor:
        """Train: S3Rec's pre-training stage first (its weights then load into the fine-tuned model),
        then our loop with early stopping on valid NDCG@10 (recbole/fitting.py)."""
        from recbole.utils import init_seed

        started = time.perf_counter()
        try:
            if self.params.pretrain_epochs > 0:
                self.training |= pretrain(
                    self.model, self.rb_config, self.batches, self.device, self.params.pretrain_epochs
                )
                torch.save({"state_dict": self.model.state_dict()}, self.folder / "pretrained.pth")
                config = self._config("finetune")
                init_seed(config["seed"], config["reproducibility"])
                self._use(self.model_class(config, self.train_data.dataset).to(self.device), config)
            users, positions = self._valid_targets()
            valid_outside_items = valid_outside(self.dataset)
            self.training |= fit(
                self.name,
                self.model,
                self.rb_config,
                self.batches,
                self.params,
                self.device,
                lambda: self._valid_ndcg(users, positions, valid_outside_items),
            )
        finally:
            self._scratch.cleanup()
        self.training["seconds"] = round(self._build_seconds + time.perf_counter() - started, 3)
        self.fitted = True
        return self

    def _valid_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Every training user and their valid interaction's position: what early stopping looks at."""
        # a valid target at position 0 has no history to rank from (a user with two interactions;
        # its example would be skipped for the same reason)
        valid = valid_interactions(self.dataset, ["user_idx", "pos"]).filter(pl.col("pos") >= 1)
        return valid["user_idx"].to_numpy(), valid["pos"].to_numpy()

    def _valid_ndcg(self, users: np.ndarray, positions: np.ndarray, outside: np.ndarray | None) -> float:
        targets = np.asarray([self.histories[u][p] for u, p in zip(users.tolist(), positions.tolist())])
        greater, ties, _ = self.scorer.rank(users, positions, targets, shown=0, outside=outside)
        return ranking_metrics(greater, ties, ["NDCG@10"])["NDCG@10"]

    # ------------------------------------------------------------------ the predictor seam

    def not_applicable(self, task: Task, split: str) -> str | None:
        reason = no_user_vector(self.params.model, split, self.dataset) if self.uses_user_ids else None
        return reason or no_item_evidence(self.params.model, split)  # item vectors are ids

    def config(self) -> dict:
        effective = {k: self.config_value(k) for k in sorted(recbole_defaults(self.params.model))}
        config = {
            "engine": "recbole",
            "params": to_mapping(self.params),
            "recbole_options": effective,
            "training": self.training,
            "history": f"every interaction before the target, the last {self.params.max_history}",
        }
        return config | self.selection.describe()

    def config_value(self, key: str):
        value = self.rb_config[key]
        value = value if isinstance(value, (int, float, str, bool, list, dict, type(None))) else str(value)
        if isinstance(value, str) and value.startswith(self._scratch.name):
            # the exported files live in a random temporary folder: recorded by role, so that the
            # same run gives the same result record
            return "<temporary folder>" + value[len(self._scratch.name) :]
        return value

    def _refuse_unfitted(self) -> None:
        if not self.fitted:
            raise UnimpError(f"{self.name} was built but not trained: call fit() before predicting")

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        self._refuse_unfitted()
        users = examples["user_idx"].to_numpy().astype(np.int64)
        positions = examples["target_pos"].to_numpy().astype(np.int64)
        if task.builder == "recommendation":
            targets = examples["target_item"].to_numpy().astype(np.int64)
            outside = outside_candidates(self.dataset, examples_split(examples))
            greater, ties, shown = self.scorer.rank(users, positions, targets, SHOWN_TOP, outside)
            return ranking_predictions(examples["example_id"], greater, ties, shown)
        if task.builder == "selection":
            candidates = examples["candidates"].to_list()
            scores = self.scorer.candidate_scores(users, positions, candidates)
            return examples.select(
                "example_id", pl.Series("selected", self.selection.select(candidates, scores))
            )
        raise UnimpError(f"{self.name} does not serve task {task.name}")

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return task.builder == "selection"

    def tune(self, task: Task, valid: pl.DataFrame) -> None:
        self._refuse_unfitted()
        users = valid["user_idx"].to_numpy().astype(np.int64)
        positions = valid["target_pos"].to_numpy().astype(np.int64)
        candidates = valid["candidates"].to_list()
        self.selection.tune(
            candidates,
            self.scorer.candidate_scores(users, positions, candidates),
            valid["positives"].to_list(),
        )
