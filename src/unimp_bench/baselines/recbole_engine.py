"""RecBole models trained on OUR split and scored by OUR metrics.

The dataset is exported to RecBole's pre-split atomic files (`recbole_export`), RecBole builds its
dataset, train dataloader (negative sampling, BERT4Rec masking, ...) and model from those files, and
this module runs the training loop itself: Adam (or the configured learner) over
`model.calculate_loss`, one validation pass per epoch over every training user's valid interaction
scored with our NDCG@10, early stopping after `stopping_step` epochs without improvement, and the best
epoch's weights kept in memory. S3Rec runs its self-supervised pre-training stage first
(`pretrain_epochs`) and is fine-tuned from those weights.

Scoring uses the model's `full_sort_predict` over the whole catalog for each example's user and
history (every interaction before the target, the last `max_history` of them), mapped back to our
item ids, and turned into exact (greater, ties) counts, so RecBole's metric code is never involved.

SASRec can also train the way the published model did (`train_rows: sequences`, `position_origin:
latest`, `loss_type: BCE`; see recbole_objectives): one row per user whose every position predicts the
next item, batched here from our own train split, with the same validation and early stopping.
BERT4Rec likewise (`train_rows: sequences`): one cloze-masked row per user.

A model that learned one vector per user (BPR, LightGCN, HGN: it has a `user_embedding`) cannot score
a user it never saw; on the new_user and new_domain splits it is reported as not applicable.

RecBole's own options go under `recbole:` in the baseline YAML; a key RecBole does not define, or one
unimp-bench sets itself (data paths, split, epochs, seed, ...), is an error.
"""

from __future__ import annotations

import functools
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from unimp_bench.baselines.early_stopping import BestEpoch
from unimp_bench.baselines.history import item_histories, no_user_vector, valid_interactions, valid_outside
from unimp_bench.baselines.recbole_compat import (
    literal_config,
    literal_value,
    prepare_recbole,
    quiet_recbole,
)
from unimp_bench.baselines.recbole_export import export_recbole
from unimp_bench.baselines.recbole_objectives import (
    BINARY_CROSS_ENTROPY,
    CASER_OUTPUTS,
    POSITION_ORIGINS,
    TARGET_SEQUENCE,
    TRAIN_ROWS,
    model_class,
    sliding_windows,
)
from unimp_bench.baselines.selection import SelectionThreshold
from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset
from unimp_bench.data.transfer import FinetuneView, no_item_evidence
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import ranking_metrics, target_rank_counts
from unimp_bench.ranking import (
    SHOWN_TOP,
    earlier_items,
    examples_split,
    leave_out,
    outside_candidates,
    ranking_predictions,
)
from unimp_bench.tasks import Task

DATASET_NAME = "unimp"
# options unimp-bench sets itself; a baseline YAML changes them through the fields of RecBoleParams
OWNED_KEYS = {
    "data_path",
    "dataset",
    "benchmark_filename",
    "load_col",
    "unload_col",
    "eval_args",
    "epochs",
    "stopping_step",
    "valid_metric",
    "MAX_ITEM_LIST_LENGTH",
    "seed",
    "reproducibility",
    "use_gpu",
    "gpu_id",
    "device",
    "checkpoint_dir",
    "show_progress",
    "state",
    "train_stage",
    "pre_model_path",
    "pretrain_epochs",
    "save_step",
    "eval_batch_size",
    "USER_ID_FIELD",
    "ITEM_ID_FIELD",
    "TIME_FIELD",
    "RATING_FIELD",
    "field_separator",
    "seq_separator",
    "log_wandb",
    "alias_of_item_id",
    # options that make RecBole read, write or run something named in the option: paths it would
    # torch.load or pickle.load (dataset_save_path, pre_model_path, ...), folders it writes, the
    # teacher model KD_DAGFM passes to eval
    "dataset_save_path",
    "save_dataset",
    "save_dataloaders",
    "dataloaders_save_path",
    "pretrain_path",
    "mf_pretrain_path",
    "mlp_pretrain_path",
    "warm_up",
    "teacher",
    "config_file_list",
}
# any other option whose name says it names a file or folder is owned as well
_FILE_KEY = re.compile(r"(^save_|_path$|_paths$|_dir$|_file$|_files$|_filename$)")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecBoleParams:
    model: str  # a RecBole model class name, e.g. SASRec
    max_history: int = 50  # the history a sequential model reads (RecBole's MAX_ITEM_LIST_LENGTH)
    epochs: int = 200  # at most; training stops earlier when valid NDCG@10 stops improving
    stopping_step: int = 10  # validations without a better valid NDCG@10 before stopping
    # validate after the first epoch that completes at least this many optimizer steps since the last
    # validation (0: after every epoch), so that on a small dataset, whose epochs are a few steps,
    # the patience above still spans a fair amount of training
    valid_every_steps: int = 0
    pretrain_epochs: int = 0  # S3Rec's self-supervised pre-training stage
    exclude_seen: bool = True  # leave the user's earlier items out of the ranking (as S3-Rec/RecBole)
    seed: int = 2020
    eval_batch_size: int = 1024  # examples scored per full-sort batch
    # each random batch computed as parts of similar history length, each part cut to its longest
    # history and the parts' gradients accumulated: the gradient of the whole batch for a fraction of
    # the compute. Only for models whose outputs do not depend on the padded width (SASRec, GRU4Rec:
    # positions count from the left, padding sits on the right, attention is causal); HGN, for one,
    # needs the full width. Sequence rows (train_rows: sequences) are always computed this way.
    length_buckets: bool = False
    # SASRec and BERT4Rec (recbole_objectives): `prefixes` trains RecBole's way, one row per training
    # position (SASRec: the loss on its last position; BERT4Rec: masked items of that prefix);
    # `sequences` the published way, one row per user (its last training items): SASRec's every
    # position predicts the next item, BERT4Rec recovers cloze-masked items
    train_rows: str = "prefixes"
    # SASRec only: `first` numbers positions from the oldest item of the window (RecBole); `latest`
    # pads on the left so the latest item always takes the last position (the published code)
    position_origin: str = "first"
    # Caser and HGN with train_rows windows (recbole_objectives): the items after each window of
    # max_history items that it predicts (the papers' T), and sampled negatives per window
    window_targets: int = 3
    window_negatives: int = 3
    # Caser with train_rows windows: `published` scores items as the published Caser does (a separate
    # output table and item bias over [z, user]); `recbole` as RecBole's Caser
    caser_output: str = "recbole"
    recbole: dict[str, Any] = field(default_factory=dict)  # RecBole's own options

    def __post_init__(self) -> None:
        if self.max_history < 1 or self.epochs < 1 or self.stopping_step < 1 or self.eval_batch_size < 1:
            raise UnimpError(
                "recbole params: max_history, epochs, stopping_step, eval_batch_size must be >= 1"
            )
        if self.caser_output not in CASER_OUTPUTS:
            raise UnimpError(f"recbole params: caser_output must be one of {', '.join(CASER_OUTPUTS)}")
        if self.window_targets < 1 or self.window_negatives < 1:
            raise UnimpError("recbole params: window_targets and window_negatives must be >= 1")
        if self.pretrain_epochs < 0 or self.valid_every_steps < 0:
            raise UnimpError("recbole params: pretrain_epochs and valid_every_steps must be >= 0")
        if self.train_rows not in TRAIN_ROWS:
            raise UnimpError(f"recbole params: train_rows must be one of {', '.join(TRAIN_ROWS)}")
        if self.position_origin not in POSITION_ORIGINS:
            raise UnimpError(f"recbole params: position_origin must be one of {', '.join(POSITION_ORIGINS)}")

    @property
    def width_invariant(self) -> bool:
        """Whether histories may be cut to their batch's longest one: declared by length_buckets, and
        true of the published SASRec and BERT4Rec subclasses (tested)."""
        return self.length_buckets or (self.model in ("SASRec", "BERT4Rec") and self.published_rows)

    @property
    def published_rows(self) -> bool:
        """Whether the model trains on rows other than RecBole's or with the binary cross-entropy,
        through a subclass of recbole_objectives."""
        return (
            _loss_type(self) == BINARY_CROSS_ENTROPY
            or self.train_rows != "prefixes"
            or self.position_origin != "first"
        )


def _properties(*relative: str) -> dict[str, Any]:
    """The options in RecBole's property files under recbole/properties, later files winning."""
    import recbole

    properties = Path(recbole.__file__).parent / "properties"
    keys: dict[str, Any] = {}
    for name in relative:
        path = properties / name
        if path.exists():
            keys |= yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return keys


@functools.cache
def _recbole_defaults(model: str) -> dict[str, Any]:
    """Every option RecBole defines for `model`: its overall, dataset and model property files
    (read once per model; callers only read the mapping)."""
    return _properties("overall.yaml", "dataset/sample.yaml", f"model/{model}.yaml")


def _loss_type(params: RecBoleParams) -> str | None:
    return params.recbole.get("loss_type", _recbole_defaults(params.model).get("loss_type"))


def _model_class(params: RecBoleParams):
    """RecBole's class for the model, or the subclass of recbole_objectives its settings need."""
    prepare_recbole()
    from recbole.utils import get_model

    chosen = model_class(
        params.model, _loss_type(params), params.train_rows, params.position_origin, params.caser_output
    )
    if chosen is not None:
        return chosen
    try:
        return get_model(params.model)
    except ValueError:
        raise UnimpError(f"RecBole has no model named {params.model!r}") from None


def owned_key(key: str) -> bool:
    """Whether a RecBole option is unimp-bench's to set (paths, split, epochs, ...), never a YAML's."""
    return key in OWNED_KEYS or bool(_FILE_KEY.search(key))


def _check_options(params: RecBoleParams) -> None:
    """Refuse options a baseline YAML may not set, options RecBole does not define, and values whose
    type differs from RecBole's default (a string where it expects a number would otherwise reach
    RecBole's code), all in one sentence."""
    owned = sorted(str(key) for key in params.recbole if owned_key(str(key)))
    if owned:
        raise UnimpError(
            f"recbole option(s) {', '.join(owned)} are set by unimp-bench and may not come from a baseline "
            "YAML (they name files, folders or the split); use the baseline's own fields "
            "(max_history, epochs, stopping_step, pretrain_epochs, seed, eval_batch_size)"
        )
    known = _recbole_defaults(params.model)
    unknown = sorted(str(key) for key in params.recbole if key not in known)
    if unknown:
        raise UnimpError(f"RecBole {params.model} has no option(s) {', '.join(unknown)}")
    for key, raw in params.recbole.items():
        # RecBole's YAML loader reads 1e-05 as a number, safe_load as a string: both sides are parsed
        value, default = literal_value(raw), literal_value(known[key])
        if not _same_kind(value, default):
            raise UnimpError(
                f"recbole option {key} must be a {_kind(default)} like its default {default!r}, "
                f"got {str(raw)[:80]!r}"
            )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    return "mapping" if isinstance(value, dict) else "string"


def _same_kind(value: Any, default: Any) -> bool:
    """Whether an option's value has the shape of RecBole's default (any literal where it is null)."""
    if default is None or value is None:
        return True
    if isinstance(default, (list, tuple)) and _kind(value) != "mapping":
        return True  # RecBole widens a single value to a list (topk: 10, metrics: Recall)
    return _kind(value) == _kind(default)


def recbole_options(
    params: RecBoleParams, folder: Path, layout: str, sequence_width: int, stage: str | None = None
) -> dict[str, Any]:
    """RecBole's config for `params` on the atomic files exported under `folder`: our split, our
    epochs and seed, then the baseline's own `recbole:` options."""
    options = {
        "data_path": str(folder),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": None,
        # one id space for the history and the target: without the alias RecBole numbers the
        # item_id_list tokens on their own, and histories would name other items than targets
        "alias_of_item_id": ["item_id_list"] if layout == "sequential" else None,
        "eval_args": {"order": "TO", "split": {"LS": "valid_and_test"}, "mode": "full", "group_by": "user"},
        # RecBole pads histories to the longest one in the files, and some models (HGN) need
        # that width to equal MAX_ITEM_LIST_LENGTH
        "MAX_ITEM_LIST_LENGTH": sequence_width,
        "seed": params.seed,
        "reproducibility": True,
        "use_gpu": torch.cuda.is_available(),
        "checkpoint_dir": str(folder / "saved"),
        "show_progress": False,
        "epochs": params.epochs,
        "stopping_step": params.stopping_step,
        "eval_batch_size": params.eval_batch_size,
        "log_wandb": False,
    }
    loss_type = _loss_type(params)
    if loss_type == "CE":  # a softmax over all items: RecBole refuses negative sampling with it
        if params.recbole.get("train_neg_sample_args") is not None:
            raise UnimpError("loss_type CE uses no sampled negatives: set train_neg_sample_args to null")
        options["train_neg_sample_args"] = None
    if params.published_rows:
        # RecBole reads a model's property file by class name, and a subclass may have none: the
        # base model's own defaults come first, as RecBole would have loaded them
        options = _properties(f"model/{params.model}.yaml") | options
    if stage is not None:
        options |= {"train_stage": stage, "pre_model_path": str(folder / "pretrained.pth")}
    return options | params.recbole


class RecBolePredictor:
    """One RecBole model, trained at construction, behind the Predictor seam of evaluation/predictor.py."""

    def __init__(
        self, name: str, params: RecBoleParams, dataset: PreparedDataset, show_progress: bool = False
    ):
        self.name = name
        self.params = params
        self.dataset = dataset
        self.show_progress = show_progress
        self.histories = item_histories(dataset)
        # trained on the held-out domain alone (new_domain_finetune from scratch), a model reads
        # histories of that domain's items only; None: every item
        self.history_items = dataset.history_items() if isinstance(dataset, FinetuneView) else None
        self.valid_outside = valid_outside(dataset)
        self.catalog_size = dataset.catalog_size
        self.training: dict[str, Any] = {}
        self.selection = SelectionThreshold()
        _check_options(params)
        self._train()

    @classmethod
    def from_spec(cls, spec, dataset: PreparedDataset, show_progress: bool = False) -> RecBolePredictor:
        return cls(
            spec.name, from_mapping(RecBoleParams, spec.params, f"{spec.name} params"), dataset, show_progress
        )

    # ------------------------------------------------------------------ RecBole set-up and training

    def _config(self, folder: Path, stage: str | None = None):
        options = recbole_options(self.params, folder, self.layout, self.sequence_width, stage)
        return literal_config(self.model_class, DATASET_NAME, options)

    def _train(self) -> None:
        self.model_class = model_class = _model_class(self.params)
        from recbole.data import create_dataset
        from recbole.data.utils import create_samplers, get_dataloader
        from recbole.utils import ModelType, init_seed

        self.layout = layout = "sequential" if model_class.type == ModelType.SEQUENTIAL else "general"
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="unimp-bench-recbole-") as scratch:
            folder = Path(scratch) / "atomic"
            exported = export_recbole(self.dataset, folder, layout, self.params.max_history, DATASET_NAME)
            self.sequence_width = max(1, exported.longest_history)
            pretraining = self.params.pretrain_epochs > 0
            config = self._config(folder, "pretrain" if pretraining else None)
            self.rb_config = config
            init_seed(config["seed"], config["reproducibility"])
            with quiet_recbole():
                rb_dataset = create_dataset(config)
                built = rb_dataset.build()
                train_sampler, _, _ = create_samplers(config, rb_dataset, built)
                train_data = get_dataloader(config, "train")(config, built[0], train_sampler, shuffle=True)
            self.rb_dataset = rb_dataset
            self.device = config["device"]
            self._index_items()
            if self.params.train_rows != "prefixes":
                self.train_users, self.train_sequences = self._train_sequences()
            if self.params.train_rows == "windows":  # L = the model's history width (HGN needs it whole)
                self.windows = sliding_windows(
                    self.train_sequences, self.sequence_width, self.params.window_targets
                )
            if pretraining:
                model = model_class(config, train_data.dataset).to(self.device)
                self._pretrain(model, config, train_data)
                torch.save({"state_dict": model.state_dict()}, folder / "pretrained.pth")
                config = self._config(folder, "finetune")
                init_seed(config["seed"], config["reproducibility"])
            self.rb_config = config
            self.train_data = train_data  # RecBole's loader: its rows, sampler and collate
            self.model = model_class(config, train_data.dataset).to(self.device)
            self.uses_user_ids = hasattr(self.model, "user_embedding")
            self._fit(config, train_data)
        self.training["seconds"] = round(time.perf_counter() - started, 3)

    def _index_items(self) -> None:
        """Our item ids <-> RecBole's internal ids (0 is RecBole's padding)."""
        tokens = self.rb_dataset.field2id_token["item_id"]
        if len(tokens) - 1 != self.catalog_size:
            raise UnimpError(f"RecBole kept {len(tokens) - 1} of the {self.catalog_size} catalog items")
        self.item_of_internal = np.full(len(tokens), -1, dtype=np.int64)
        self.item_of_internal[1:] = np.asarray(tokens[1:], dtype=np.int64)
        self.internal_of_item = np.zeros(self.catalog_size, dtype=np.int64)
        self.internal_of_item[self.item_of_internal[1:]] = np.arange(1, len(tokens))

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
        users = self._internal_users(frame["user_idx"].to_numpy())
        items = [self.internal_of_item[np.asarray(row, dtype=np.int64)] for row in sequences.to_list()]
        return users, items

    def _optimizer(self, config, model: torch.nn.Module) -> torch.optim.Optimizer:
        learners = {
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "sgd": torch.optim.SGD,
            "adagrad": torch.optim.Adagrad,
            "rmsprop": torch.optim.RMSprop,
        }
        learner = str(config["learner"]).lower()
        if learner not in learners:
            raise UnimpError(f"learner {learner!r} is not supported; use one of {', '.join(learners)}")
        return learners[learner](
            model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
        )

    def _batches(self, train_data, epoch: int):
        """RecBole's shuffled batches, or (length_buckets) our shuffled batches, seeded by (seed,
        epoch), each computed as parts of similar history length (`_length_parts`); sequence rows are
        always computed in parts."""
        if self.params.train_rows == "sequences":
            yield from self._sequence_batches(train_data.step, epoch)
            return
        if self.params.train_rows == "windows":
            yield from self._window_batches(train_data.step, epoch)
            return
        if not self.params.length_buckets:
            yield from train_data
            return
        length_field = self.rb_config["ITEM_LIST_LENGTH_FIELD"]
        sequence_field = self.rb_config["ITEM_ID_FIELD"] + self.rb_config["LIST_SUFFIX"]
        lengths = train_data._dataset.inter_feat[length_field].numpy()
        rng = np.random.default_rng([self.params.seed, epoch])
        for rows in self._shuffled_batches(rng, len(lengths), train_data.step):
            batch = train_data.collate_fn(rows.tolist())  # RecBole's own rows, negatives included
            row_lengths = batch[length_field].numpy()
            parts = []
            for members in self._length_parts(row_lengths):
                part = batch[members]
                part[sequence_field] = part[sequence_field][:, : int(row_lengths[members].max())]
                parts.append((part, len(members) / len(row_lengths)))  # RecBole's losses: means over rows
            yield parts

    @staticmethod
    def _shuffled_batches(rng, rows: int, size: int) -> list[np.ndarray]:
        """Row indices 0..rows-1 in a random order, cut into batches of `size`."""
        order = rng.permutation(rows)
        return [order[i : i + size] for i in range(0, rows, size)]

    @staticmethod
    def _length_parts(lengths: np.ndarray) -> list[np.ndarray]:
        """The rows of a batch grouped by history length (within a power of two), so each part can be
        cut to its own longest history. Weighted by its share of the batch's loss terms, the parts'
        mean losses add up to the batch's mean loss: the gradient of the whole batch (random, as
        RecBole and the published code draw them) for a fraction of the compute, since a few long
        histories would otherwise pad every row of a batch. Only for models whose outputs do not
        depend on the padded width."""
        classes = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
        return [np.flatnonzero(classes == length_class) for length_class in np.unique(classes)]

    def _sequence_batches(self, size: int, epoch: int):
        """One step per random batch of users, seeded by (seed, epoch); each step is a list of (part,
        weight): the batch's rows grouped by length (`_parts_by_width`)."""
        rng = np.random.default_rng([self.params.seed, epoch])
        for rows in self._shuffled_batches(rng, len(self.train_sequences), size):
            yield self._parts_by_width(self._sequence_batch(rng, rows))

    def _window_batches(self, size: int, epoch: int):
        """One step per random batch of windows (recbole_objectives.sliding_windows, cut once in
        `_train`), seeded by (seed, epoch)."""
        from recbole.data.interaction import Interaction

        inputs, targets, owners = self.windows
        rng = np.random.default_rng([self.params.seed, epoch])
        for rows in self._shuffled_batches(rng, len(owners), size):
            batch = self.model.training_batch(
                rng,
                [self.train_sequences[o] for o in owners[rows].tolist()],
                inputs[rows],
                targets[rows],
                self.train_users[owners[rows]],
                self.params.window_negatives,
            )
            yield [(Interaction({k: torch.as_tensor(v) for k, v in batch.items()}), 1.0)]

    def _sequence_batch(self, rng, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The users `rows` as one training row each, laid out by the model (recbole_objectives)."""
        sequences = [self.train_sequences[u] for u in rows.tolist()]
        return self.model.training_batch(rng, sequences, self.params.max_history)

    def _parts_by_width(self, batch: dict[str, np.ndarray]) -> list[tuple[Any, float]]:
        """A batch of sequence rows as `_length_parts` of their input lengths, each part weighted by its
        share of the batch's target positions (the loss is a mean over positions)."""
        from recbole.data.interaction import Interaction

        lengths = (batch[self.model.ITEM_SEQ] > 0).sum(axis=1)
        counts = (batch[TARGET_SEQUENCE] > 0).sum(axis=1)
        width = batch[TARGET_SEQUENCE].shape[1]
        parts = []
        for members in self._length_parts(lengths):
            cut = int(lengths[members].max())
            columns = slice(width - cut, width) if self.model.latest_last else slice(0, cut)
            part = Interaction({k: torch.as_tensor(v[members][:, columns]) for k, v in batch.items()})
            parts.append((part, float(counts[members].sum() / counts.sum())))
        return parts

    def _epoch(self, model, optimizer, train_data, clip, epoch: int = 0) -> tuple[float, int]:
        """One pass over the batches: (summed loss, optimizer steps). A step given as weighted parts
        accumulates their gradients."""
        model.train()
        total, steps = 0.0, 0
        for batch in self._batches(train_data, epoch):
            optimizer.zero_grad()
            for part, weight in batch if isinstance(batch, list) else [(batch, 1.0)]:
                loss = model.calculate_loss(part.to(self.device))
                if isinstance(loss, tuple):  # some models return their loss terms separately
                    loss = sum(loss)
                if not torch.isfinite(loss):
                    raise UnimpError(
                        f"{self.params.model} training diverged (loss {loss.item()}); lower learning_rate"
                    )
                (loss * weight).backward()
                total += weight * float(loss.item())
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), **clip)
            optimizer.step()
            steps += 1
        return total, steps

    def _pretrain(self, model, config, train_data) -> None:
        optimizer = self._optimizer(config, model)
        losses = [
            self._epoch(model, optimizer, train_data, config["clip_grad_norm"], -epoch)[0]
            for epoch in range(1, self.params.pretrain_epochs + 1)
        ]
        self.training["pretrain_epochs"] = self.params.pretrain_epochs
        self.training["pretrain_last_loss"] = round(losses[-1], 4)

    def _fit(self, config, train_data) -> None:
        model = self.model
        trainable = [p for p in model.parameters() if p.requires_grad]
        from recbole.utils import ModelType

        if model.type == ModelType.TRADITIONAL or not trainable:  # Pop and friends: one counting pass
            for batch in train_data:
                model.calculate_loss(batch.to(self.device))
            self.training |= {"epochs_run": 1, "best_epoch": 1}
            return
        optimizer = self._optimizer(config, model)
        valid_users, valid_targets = self._valid_targets()
        best, epoch = BestEpoch(self.params.stopping_step), 0
        curve, validated, seconds, steps = [], [], [], 0
        for epoch in range(1, self.params.epochs + 1):
            started = time.perf_counter()
            loss, epoch_steps = self._epoch(model, optimizer, train_data, config["clip_grad_norm"], epoch)
            seconds.append(time.perf_counter() - started)
            steps += epoch_steps
            if steps < self.params.valid_every_steps and epoch < self.params.epochs:
                continue  # a small dataset: more epochs before the next validation
            steps = 0
            score = self._valid_ndcg(valid_users, valid_targets)
            curve.append(round(score, 5))
            validated.append(epoch)
            logger.info(
                "%s epoch %d: loss %.4f, valid NDCG@10 %.4f (%.1f s training, %.1f s in all)",
                self.name,
                epoch,
                loss,
                score,
                seconds[-1],
                time.perf_counter() - started,
            )
            if best.update(epoch, score, model.state_dict):
                break
        model.load_state_dict(best.state)
        self._forget_cached_embeddings()
        self.training |= {
            "epochs_run": epoch,
            "best_epoch": best.epoch,
            "best_valid_NDCG@10": round(best.score, 6),
            "valid_curve": curve,
            "seconds_per_epoch": round(float(np.mean(seconds)), 3),
        }
        if validated != list(range(1, epoch + 1)):
            self.training["validated_epochs"] = validated

    def _forget_cached_embeddings(self) -> None:
        """Graph models (LightGCN, ...) cache propagated embeddings for prediction; new weights void them."""
        for attribute in ("restore_user_e", "restore_item_e"):
            if hasattr(self.model, attribute):
                setattr(self.model, attribute, None)

    def _valid_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Every training user and their valid interaction's position: what early stopping looks at."""
        # a valid target at position 0 has no history to rank from (a user with two interactions;
        # its example would be skipped for the same reason)
        valid = valid_interactions(self.dataset, ["user_idx", "pos"]).filter(pl.col("pos") >= 1)
        return valid["user_idx"].to_numpy(), valid["pos"].to_numpy()

    def _valid_ndcg(self, users: np.ndarray, positions: np.ndarray) -> float:
        targets = np.asarray([self.histories[u][p] for u, p in zip(users.tolist(), positions.tolist())])
        greater, ties, _ = self._rank(users, positions, targets, shown=0, outside=self.valid_outside)
        self._forget_cached_embeddings()  # the next epoch changes the weights again
        return ranking_metrics(greater, ties, ["NDCG@10"])["NDCG@10"]

    # ------------------------------------------------------------------ scoring

    def _catalog_scores(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Scores [len(users), catalog] of the model for each (user, history before position)."""
        from recbole.data.interaction import Interaction

        model = self.model
        length = self.sequence_width
        sequences = np.zeros((len(users), length), dtype=np.int64)
        lengths = np.zeros(len(users), dtype=np.int64)
        for row, (user, position) in enumerate(zip(users.tolist(), positions.tolist())):
            history = self.histories[user][:position]
            if self.history_items is not None:
                history = history[self.history_items[history]]
            history = self.internal_of_item[history[-length:]]
            sequences[row, : len(history)] = history  # RecBole pads sequences on the right
            lengths[row] = len(history)
        fields = {}
        # models without user vectors still read the user field for the batch size: padding ids
        user_ids = self._internal_users(users) if self.uses_user_ids else np.zeros(len(users), dtype=np.int64)
        fields[model.USER_ID] = torch.as_tensor(user_ids)
        if hasattr(model, "ITEM_SEQ"):
            if (lengths == 0).any():
                raise UnimpError(f"{self.name} needs at least one earlier item for every example")
            if self.params.width_invariant:  # the same outputs without the all-padding columns
                sequences = sequences[:, : max(1, int(lengths.max()))]
            fields[model.ITEM_SEQ] = torch.as_tensor(sequences)
            fields[model.ITEM_SEQ_LEN] = torch.as_tensor(lengths)
        model.eval()
        with torch.no_grad():
            internal = model.full_sort_predict(Interaction(fields).to(self.device))
        internal = internal.view(len(users), -1).float().cpu().numpy()
        scores = np.empty((len(users), self.catalog_size), dtype=np.float64)
        scores[:, self.item_of_internal[1:]] = internal[:, 1 : len(self.item_of_internal)]
        return scores

    def _internal_users(self, users: np.ndarray) -> np.ndarray:
        tokens = [str(u) for u in users.tolist()]
        try:
            return np.asarray(self.rb_dataset.token2id("user_id", tokens), dtype=np.int64).reshape(-1)
        except ValueError:
            raise UnimpError(f"{self.name} has no vector for a user it did not train on") from None

    def _rank(
        self, users, positions, targets, shown: int, outside: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """(greater, ties) of each example's target over the catalog less `outside` (items outside the
        split's candidates), and its top `shown` items.

        For a model whose outputs do not depend on the padded width (`width_invariant`) the examples
        go through in order of history length, so each batch is cut to a width close to its rows'
        (most users have short histories; one long one in a batch would otherwise pad all of it), and
        the results come back in the examples' order."""
        order = np.arange(len(users))
        if self.params.width_invariant:
            order = np.argsort(np.minimum(positions, self.sequence_width), kind="stable")
        greater = np.empty(len(users), dtype=np.float64)
        ties = np.empty(len(users), dtype=np.float64)
        tops: list[list[int]] = [[] for _ in range(len(users))] if shown else []
        size = self.params.eval_batch_size
        for start in range(0, len(users), size):
            part = order[start : start + size]
            scores = self._catalog_scores(users[part], positions[part])
            seen = None
            if self.params.exclude_seen:
                seen = earlier_items(self.histories, users[part], positions[part])
            leave_out(scores, seen, targets[part], outside)
            greater[part], ties[part] = target_rank_counts(scores, targets[part])
            if shown:
                top = np.argsort(-scores, axis=1, kind="stable")[:, :shown]
                for row, example in enumerate(part.tolist()):
                    tops[example] = top[row].tolist()
        return greater, ties, tops

    def _probabilities(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Softmax over the catalog: comparable across users, so one threshold can serve them all."""
        scores = self._catalog_scores(users, positions)
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return weights / weights.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------------ the predictor seam

    def not_applicable(self, task: Task, split: str) -> str | None:
        reason = no_user_vector(self.params.model, split, self.dataset) if self.uses_user_ids else None
        return reason or no_item_evidence(self.params.model, split)  # item vectors are ids

    def config(self) -> dict:
        effective = {k: self.config_value(k) for k in sorted(_recbole_defaults(self.params.model))}
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
        return value if isinstance(value, (int, float, str, bool, list, dict, type(None))) else str(value)

    def predict(self, task: Task, examples: pl.DataFrame) -> pl.DataFrame:
        users = examples["user_idx"].to_numpy().astype(np.int64)
        positions = examples["target_pos"].to_numpy().astype(np.int64)
        if task.builder == "recommendation":
            targets = examples["target_item"].to_numpy().astype(np.int64)
            outside = outside_candidates(self.dataset, examples_split(examples))
            greater, ties, shown = self._rank(users, positions, targets, SHOWN_TOP, outside)
            return ranking_predictions(examples["example_id"], greater, ties, shown)
        if task.builder == "selection":
            candidate_scores = self._candidate_scores(users, positions, examples["candidates"].to_list())
            return examples.select(
                "example_id",
                pl.Series(
                    "selected", self.selection.select(examples["candidates"].to_list(), candidate_scores)
                ),
            )
        raise UnimpError(f"{self.name} does not serve task {task.name}")

    def _candidate_scores(self, users, positions, candidates: list[list[int]]) -> list[np.ndarray]:
        out = []
        size = self.params.eval_batch_size
        for start in range(0, len(users), size):
            probabilities = self._probabilities(users[start : start + size], positions[start : start + size])
            for row, items in enumerate(candidates[start : start + size]):
                out.append(probabilities[row, np.asarray(items, dtype=np.int64)])
        return out

    @classmethod
    def tunes_on_valid(cls, task: Task) -> bool:
        return task.builder == "selection"

    def tune(self, task: Task, valid: pl.DataFrame) -> None:
        users = valid["user_idx"].to_numpy().astype(np.int64)
        positions = valid["target_pos"].to_numpy().astype(np.int64)
        candidates = valid["candidates"].to_list()
        self.selection.tune(
            candidates, self._candidate_scores(users, positions, candidates), valid["positives"].to_list()
        )
