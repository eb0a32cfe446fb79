"""Training configuration: frozen dataclasses read from a preset (with `base:` inheritance and
`--set section.key=value` overrides); unknown keys are errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from unimp_bench.config import check_choices, from_mapping, load_yaml, to_mapping
from unimp_bench.data.transfer import FinetuneSettings
from unimp_bench.errors import UnimpError
from unimp_bench.models.config import ModelConfig
from unimp_bench.models.export import LoraSettings
from unimp_bench.objective import LossConfig
from unimp_bench.tasks import registry

Strategy = Literal["multitask", "continual", "multitask_then_finetune", "multitask_then_efficient"]
Precision = Literal["fp32", "bf16", "fp16"]
# the shipped tasks trained by default; any registered task whose kind trains may be named instead
DEFAULT_TASKS = ("recommendation", "preference", "explanation", "selection", "search")
BPE_TRAINING_TEXTS = 200_000


@dataclass(frozen=True)
class TrainConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    task_sampling: dict[str, float] = field(default_factory=dict)  # relative share of each task's examples
    strategy: Strategy = "multitask"
    finetune_task: str = "recommendation"  # the second stage's task of the *_then_* strategies
    finetune_epochs: float = 1.0
    efficient: Literal["lora", "last_layer"] = "lora"  # what multitask_then_efficient trains
    lm_embeddings: bool = False  # also train the LM's own input and output embeddings, in every stage
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 10.0
    steps: int | None = None  # stage length in optimizer steps instead of epochs (the schedule spans it)
    max_steps: int | None = None  # stop after this many optimizer steps; the schedule still spans epochs
    micro_batch: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.01
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up
    grad_clip: float = 1.0
    precision: Precision = "fp32"
    zero_stage: int = 0
    seed: int = 0
    instruction: str = "random"  # instruction paraphrase per example: random | first | an index
    max_examples_per_task: int | None = None
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    # new_domain_finetune: train on the held-out domain's fine-tuning view (data/transfer.py), e.g.
    # {regime: source+target}; the run may then be scored on new_domain_finetune
    transfer: FinetuneSettings | None = None
    init_from: str | None = None  # start from this run's (or export's) weights and tokenizer

    def __post_init__(self) -> None:
        check_choices(self, "train.")
        if self.zero_stage not in (0, 1, 2):
            # stage 3 partitions the weights themselves: exports would need them gathered first
            raise UnimpError("train.zero_stage must be 0, 1 or 2 (ZeRO-3 exports are not supported yet)")
        if not self.tasks:
            raise UnimpError("train.tasks must name at least one task")
        unknown = sorted(set(self.task_sampling) - set(self.tasks))
        if unknown:
            raise UnimpError(f"train.task_sampling names tasks that are not trained: {', '.join(unknown)}")
        if self.strategy.startswith("multitask_then") and self.finetune_task not in self.tasks:
            raise UnimpError(f"train.finetune_task {self.finetune_task!r} is not one of train.tasks")
        if self.micro_batch < 1 or self.grad_accum < 1 or self.epochs <= 0 or self.lr <= 0:
            raise UnimpError("train.micro_batch, grad_accum, epochs and lr must be positive")
        if (self.max_steps is not None and self.max_steps < 1) or (self.steps is not None and self.steps < 1):
            raise UnimpError("train.steps and train.max_steps must be at least 1")


def check_trainable(config: TrainConfig) -> None:
    """Every task of train.tasks is registered (shipped or on UNIMP_BENCH_TASK_PATH) and its kind
    trains. Checked where the run starts; workers read the definitions saved with the run's examples."""
    tasks = registry()
    for name in config.tasks:
        if name not in tasks.tasks:
            trainable = [t.name for t in tasks.tasks.values() if t.kind.untrainable is None]
            raise UnimpError(f"train.tasks: unknown task {name!r}; trainable: {', '.join(trainable)}")
        reason = tasks.get(name).kind.untrainable
        if reason:
            raise UnimpError(f"{reason}; remove {name} from train.tasks")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.loss.task_weights) - set(self.train.tasks))
        if unknown:
            raise UnimpError(f"loss.task_weights names tasks that are not trained: {', '.join(unknown)}")


# configuration


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`section.key=value` pairs (value parsed as YAML) applied to a nested mapping."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise UnimpError(f"override {override!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError):
            raise UnimpError(f"override {override!r} has a value that is not valid YAML") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UnimpError(f"override {override!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_mapping(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A preset's mapping; `base: other.yaml` (relative to the file) is loaded first and overlaid."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise UnimpError(f"config file {path} must hold a mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise UnimpError(f"config file {path} inherits from itself through {base}")
    return _merge(read_config_mapping(base_path, (*seen, path.resolve())), data)


def resolve_preset(path: Path) -> Path:
    """A config file path, or the name of a shipped preset (`tiny`, `paper`, `ablations/no_vision`)."""
    if path.is_file():
        return path
    from unimp_bench.resources import resource_dir

    shipped = resource_dir("configs") / f"{str(path).removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise UnimpError(
        f"config file {path} does not exist (and it is not a shipped preset such as tiny or paper)"
    )


def ablation_names() -> list[str]:
    """The shipped ablations (configs/ablations/*.yaml)."""
    from unimp_bench.resources import resource_dir

    return sorted(path.stem for path in (resource_dir("configs") / "ablations").glob("*.yaml"))


def ablation_overlay(name: str) -> dict:
    """What ablation `name` changes: its file's keys without its `base:`, to lay over any preset."""
    if name not in ablation_names():
        raise UnimpError(f"unknown ablation {name!r}; shipped: {', '.join(ablation_names())}")
    data = load_yaml(resolve_preset(Path("ablations") / name)) or {}
    data.pop("base", None)
    return data


def load_run_config(path: Path, overrides: list[str] = (), ablation: str | None = None) -> RunConfig:
    """The preset at `path` (a file or a shipped name), then the ablation's changes, then `overrides`
    (`section.key=value`), which win."""
    path = resolve_preset(path)
    data = read_config_mapping(path)
    if ablation is not None:
        data = _merge(data, ablation_overlay(ablation))
    data = apply_overrides(data, list(overrides))
    return from_mapping(RunConfig, data, path.name + (f" + ablation {ablation}" if ablation else ""))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(to_mapping(config), sort_keys=False)
