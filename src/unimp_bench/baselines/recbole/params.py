"""The parameters of a RecBole baseline (its YAML's `params`) and the RecBole config they give: our
split, epochs and seed first, then the baseline's own `recbole:` options, each checked against the
options RecBole defines for the model (a key RecBole does not define, or one unimp-bench sets itself,
is an error)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from unimp_bench.baselines.recbole_compat import literal_value, prepare_recbole
from unimp_bench.baselines.recbole_objectives import (
    BINARY_CROSS_ENTROPY,
    CaserOutput,
    PositionOrigin,
    TrainRows,
    model_class,
)
from unimp_bench.config import check_choices
from unimp_bench.errors import UnimpError

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
    train_rows: TrainRows = "prefixes"
    # SASRec only: `first` numbers positions from the oldest item of the window (RecBole); `latest`
    # pads on the left so the latest item always takes the last position (the published code)
    position_origin: PositionOrigin = "first"
    # Caser and HGN with train_rows windows (recbole_objectives): the items after each window of
    # max_history items that it predicts (the papers' T), and sampled negatives per window
    window_targets: int = 3
    window_negatives: int = 3
    # Caser with train_rows windows: `published` scores items as the published Caser does (a separate
    # output table and item bias over [z, user]); `recbole` as RecBole's Caser
    caser_output: CaserOutput = "recbole"
    recbole: dict[str, Any] = field(default_factory=dict)  # RecBole's own options

    def __post_init__(self) -> None:
        if self.max_history < 1 or self.epochs < 1 or self.stopping_step < 1 or self.eval_batch_size < 1:
            raise UnimpError(
                "recbole params: max_history, epochs, stopping_step, eval_batch_size must be >= 1"
            )
        if self.window_targets < 1 or self.window_negatives < 1:
            raise UnimpError("recbole params: window_targets and window_negatives must be >= 1")
        if self.pretrain_epochs < 0 or self.valid_every_steps < 0:
            raise UnimpError("recbole params: pretrain_epochs and valid_every_steps must be >= 0")
        check_choices(self, "recbole params: ")

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
            loss_type_of(self) == BINARY_CROSS_ENTROPY
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
def recbole_defaults(model: str) -> dict[str, Any]:
    """Every option RecBole defines for `model`: its overall, dataset and model property files
    (read once per model; callers only read the mapping)."""
    return _properties("overall.yaml", "dataset/sample.yaml", f"model/{model}.yaml")


def loss_type_of(params: RecBoleParams) -> str | None:
    return params.recbole.get("loss_type", recbole_defaults(params.model).get("loss_type"))


def resolve_model_class(params: RecBoleParams):
    """RecBole's class for the model, or the subclass of recbole_objectives its settings need."""
    prepare_recbole()
    from recbole.utils import get_model

    chosen = model_class(
        params.model, loss_type_of(params), params.train_rows, params.position_origin, params.caser_output
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


def check_options(params: RecBoleParams) -> None:
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
    known = recbole_defaults(params.model)
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
    loss_type = loss_type_of(params)
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
