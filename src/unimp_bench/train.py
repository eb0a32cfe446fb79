"""Multi-task UniMP training on a DeepSpeed engine (GPUs through the DeepSpeed launcher, or the CPU).

`run_training` is what `unimp-bench train` calls. It resolves the preset (plus command-line overrides),
prepares the run folder once (train examples, tokenizer, config.yaml), then either re-launches itself
through the `deepspeed` launcher (`--gpus N`, `--hostfile H`) or runs the worker in this process on
the CPU. The worker (`train_worker`) runs the learning strategy's stages; each stage is one DeepSpeed
engine over the parameters that stage trains.

Run folder:
    config.yaml               the resolved configuration (what --resume must match)
    examples/                 the train split of every configured task (unimp-bench build format)
    tokenizer/                the base tokenizer (trained BPE for random LMs, the LM's own otherwise)
    checkpoints/<tag>/        DeepSpeed checkpoints (model, optimizer, scheduler) + client state
                              (stage, step, sampler position, RNG states) + export/ of that step
    export/                   the latest export (safetensors + unimp.json + tokenizer), what eval loads
    logs/train.jsonl          one JSON line per logged step; logs/tensorboard/ the same for TensorBoard

The sampler's order is a pure function of (seed, stage, epoch), so resuming from a checkpoint replays
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from unimp_bench.checkpoint_trust import is_signed, sign_checkpoint, verify_checkpoint
from unimp_bench.config import from_mapping, load_yaml, to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.examples import BuildSettings, build_examples, dataset_identity, open_examples
from unimp_bench.fileio import copy_directory_atomic, read_json, write_bytes_atomic
from unimp_bench.models.config import ModelConfig
from unimp_bench.models.export import LoraSettings, export_model
from unimp_bench.models.factory import build_model, inject_lora, set_trainable
from unimp_bench.models.inputs import (
    ImageFeatureStore,
    ItemImages,
    catalog_image_paths,
    collate,
    encode_examples,
)
from unimp_bench.models.tokenization import (
    MARKER_PATTERN,
    PromptTokenizer,
    load_saved_tokenizer,
    train_bpe_tokenizer,
)
from unimp_bench.objective import LossConfig, unimp_loss
from unimp_bench.progress import ProgressReporter
from unimp_bench.tasks import registry

STRATEGIES = ("multitask", "continual", "multitask_then_finetune", "multitask_then_efficient")
# the shipped tasks trained by default; any registered task whose kind trains may be named instead
DEFAULT_TASKS = ("recommendation", "preference", "explanation", "selection", "search")
PRECISIONS = ("fp32", "bf16", "fp16")
BPE_TRAINING_TEXTS = 200_000


@dataclass(frozen=True)
class TrainConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    task_sampling: dict[str, float] = field(default_factory=dict)  # relative share of each task's examples
    strategy: str = "multitask"
    finetune_task: str = "recommendation"  # the second stage's task of the *_then_* strategies
    finetune_epochs: float = 1.0
    efficient: str = "lora"  # multitask_then_efficient: lora | last_layer
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 10.0
    steps: int | None = None  # stage length in optimizer steps instead of epochs (the schedule spans it)
    max_steps: int | None = None  # stop after this many optimizer steps; the schedule still spans epochs
    micro_batch: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.01
    schedule: str = "cosine"  # cosine | constant (after warm-up)
    grad_clip: float = 1.0
    precision: str = "fp32"
    zero_stage: int = 0
    seed: int = 0
    instruction: str = "random"  # instruction paraphrase per example: random | first | an index
    max_examples_per_task: int | None = None
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UnimpError(f"train.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.precision not in PRECISIONS:
            raise UnimpError(f"train.precision must be one of {', '.join(PRECISIONS)}")
        if self.zero_stage not in (0, 1, 2):
            # stage 3 partitions the weights themselves: exports would need them gathered first
            raise UnimpError("train.zero_stage must be 0, 1 or 2 (ZeRO-3 exports are not supported yet)")
        if self.efficient not in ("lora", "last_layer"):
            raise UnimpError("train.efficient must be lora or last_layer")
        if self.schedule not in ("cosine", "constant"):
            raise UnimpError("train.schedule must be cosine or constant")
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


# ---------------------------------------------------------------------------------------------------
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


def load_run_config(path: Path, overrides: list[str] = ()) -> RunConfig:
    path = resolve_preset(path)
    data = apply_overrides(read_config_mapping(path), list(overrides))
    return from_mapping(RunConfig, data, path.name)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(to_mapping(config), sort_keys=False)


@dataclass(frozen=True)
class Stage:
    name: str
    tasks: tuple[str, ...]
    epochs: float
    trainable: str  # default | full | last_layer | lora


def plan_stages(config: TrainConfig) -> list[Stage]:
    """The learning strategies of the paper's Table 7 as a list of stages."""
    if config.strategy == "multitask":
        return [Stage("multitask", config.tasks, config.epochs, "default")]
    if config.strategy == "continual":
        return [Stage(f"continual:{task}", (task,), config.epochs, "default") for task in config.tasks]
    second = "full" if config.strategy == "multitask_then_finetune" else config.efficient
    return [
        Stage("multitask", config.tasks, config.epochs, "default"),
        Stage(f"finetune:{config.finetune_task}", (config.finetune_task,), config.finetune_epochs, second),
    ]


# ---------------------------------------------------------------------------------------------------
# data


class EpochSampler:
    """Order of (task, row) pairs of one stage's epoch: a pure function of (seed, stage, epoch).

    Each task contributes round(share * its examples) rows per epoch (a share above 1 repeats rows,
    below 1 subsamples); the rows of all tasks are shuffled together, so batches mix tasks.
    """

    def __init__(self, sizes: dict[str, int], shares: dict[str, float], seed: int, stage: int):
        self.tasks = list(sizes)
        self.sizes = sizes
        self.counts = {t: int(round(shares.get(t, 1.0) * sizes[t])) for t in self.tasks}
        self.seed, self.stage = seed, stage
        self._cached: tuple[int, np.ndarray] | None = None

    @property
    def epoch_size(self) -> int:
        return sum(self.counts.values())

    def order(self, epoch: int) -> np.ndarray:
        if self._cached and self._cached[0] == epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, self.stage, epoch])
        parts = []
        for index, task in enumerate(self.tasks):
            size, count = self.sizes[task], self.counts[task]
            repeats = -(-count // size) if size else 0
            rows = np.concatenate([rng.permutation(size) for _ in range(repeats)])[:count] if count else []
            parts.append(np.stack([np.full(len(rows), index), np.asarray(rows, dtype=np.int64)], axis=1))
        pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        pairs = pairs[rng.permutation(len(pairs))]
        self._cached = (epoch, pairs)
        return pairs


@dataclass
class TaskExamples:
    prompts: list[str]
    targets: list[str]
    image_items: list[list[int]]
    history_spans: list[list[list[int]]]


def load_train_examples(run: Path, config: TrainConfig) -> dict[str, TaskExamples]:
    examples = open_examples(run / "examples")
    tasks = {}
    for name in config.tasks:
        frame = examples.load(examples.task(name), "train")
        if config.max_examples_per_task is not None and len(frame) > config.max_examples_per_task:
            frame = frame.sample(config.max_examples_per_task, seed=config.seed, shuffle=True)
        if len(frame) == 0:
            raise UnimpError(f"the dataset yields no {name} training examples; remove it from train.tasks")
        tasks[name] = TaskExamples(
            frame["prompt"].to_list(),
            frame["target_text"].to_list(),
            frame["image_items"].to_list(),
            frame["history_spans"].to_list(),
        )
    return tasks


# ---------------------------------------------------------------------------------------------------
# run folder preparation (once, before any worker starts)


def prepare_run(
    config: RunConfig,
    data: Path,
    run: Path,
    resume: bool,
    overwrite: bool,
    show_progress: bool,
) -> None:
    saved = run / "config.yaml"
    if resume:
        if not saved.is_file():
            raise UnimpError(f"{run} holds no training run to resume (no config.yaml)")
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
        current = to_mapping(config)
        for mapping in (previous, current):
            mapping["train"].pop("max_steps", None)
        if previous != current:
            raise UnimpError(
                f"the configuration differs from the one {run} was started with; resume needs the same"
            )
    elif run.exists() and any(run.iterdir()):
        if not overwrite:
            raise UnimpError(
                f"{run} already exists; pass --resume to continue it or --overwrite to start over"
            )
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "examples" / "manifest.json").is_file():
        build_examples(
            data,
            run / "examples",
            list(config.train.tasks),
            ["train"],
            BuildSettings(seed=config.train.seed, instruction=config.train.instruction),
            overwrite=True,
            show_progress=show_progress,
        )
    manifest = open_examples(run / "examples").manifest
    if resume and manifest["dataset"]["content_hash"] != dataset_identity_of(data)["content_hash"]:
        raise UnimpError(f"{data} is not the dataset {run} was trained on")
    if not (run / "tokenizer").is_dir():
        prepare_tokenizer(config, run)
    write_bytes_atomic(saved, dump_config(config).encode())


def dataset_identity_of(data: Path) -> dict:
    from unimp_bench.data.contract import open_dataset

    return dataset_identity(open_dataset(data))


def prepare_tokenizer(config: RunConfig, run: Path) -> None:
    from unimp_bench.models.factory import load_pretrained_tokenizer

    staging = run / ".tokenizer.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if config.model.lm.tokenizer == "bpe":
        examples = load_train_examples(run, replace(config.train, max_examples_per_task=None))
        texts = []
        for task in examples.values():
            for prompt, target in zip(task.prompts, task.targets):
                texts.append(MARKER_PATTERN.sub(" ", f"{prompt} {target}"))
        texts = texts[:BPE_TRAINING_TEXTS]
        train_bpe_tokenizer(texts, config.model.lm.bpe_vocab_size, staging)
    else:
        load_pretrained_tokenizer(config.model.lm.name).save_pretrained(str(staging))
    os.replace(staging, run / "tokenizer")


# ---------------------------------------------------------------------------------------------------
# launching


def launcher_command(run: Path, gpus: int, hostfile: Path | None, resume: bool) -> list[str]:
    """The DeepSpeed launcher invocation that starts one worker per GPU (on every host of the hostfile)."""
    command = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if hostfile is not None:
        command += ["--hostfile", str(hostfile)]
    if gpus:
        command += ["--num_gpus", str(gpus)]
    command += ["--module", "unimp_bench.train", "--run", str(run.resolve())]
    return command + (["--resume"] if resume else [])


def run_training(
    config_path: Path,
    data: Path,
    run: Path,
    *,
    gpus: int = 0,
    hostfile: Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    overrides: list[str] = (),
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """`unimp-bench train`: the training summary (from this process, or from the launched workers)."""
    overrides = list(overrides) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    config = load_run_config(config_path, overrides)
    check_trainable(config.train)
    if gpus < 0:
        raise UnimpError("--gpus must be 0 (CPU) or a positive number of GPUs")
    if hostfile is not None and not hostfile.is_file():
        raise UnimpError(f"hostfile {hostfile} does not exist")
    # a new run that fails before it trained anything (a model the config cannot build, a dataset
    # error) leaves no folder behind, so the corrected command needs no --overwrite
    new_run = not resume and (overwrite or not run.exists() or not any(run.iterdir()))
    try:
        prepare_run(config, data, run, resume, overwrite, show_progress)
        if gpus > 0 or hostfile is not None:
            status = subprocess.call(launcher_command(run, gpus, hostfile, resume))
            if status != 0:
                raise UnimpError(f"the DeepSpeed launcher exited with status {status}; see its output above")
            return read_json(run / "logs" / "summary.json", "the launched workers did not finish")
        return train_worker(run, data, resume, show_progress)
    except BaseException:
        if new_run and not _trained_anything(run):
            shutil.rmtree(run, ignore_errors=True)
        raise


def _trained_anything(run: Path) -> bool:
    log = run / "logs" / "train.jsonl"
    return any((run / "checkpoints").glob("step_*")) or (log.is_file() and log.stat().st_size > 0)


# ---------------------------------------------------------------------------------------------------
# the worker


def _single_process_environment() -> None:
    """What the DeepSpeed launcher would set, for a lone CPU process."""
    if "RANK" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
        }
    )


def deepspeed_config(config: TrainConfig) -> dict:
    return {
        "train_micro_batch_size_per_gpu": config.micro_batch,
        "gradient_accumulation_steps": config.grad_accum,
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": config.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": config.precision == "bf16"},
        "fp16": {"enabled": config.precision == "fp16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def schedule_factor(step: int, total: int, warmup_ratio: float, kind: str) -> float:
    """Learning-rate multiplier after `step` optimizer steps: linear warm-up, then cosine to 0 or flat."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingLog:
    """JSON lines (and TensorBoard scalars) of the logged steps; only rank 0 writes."""

    def __init__(self, folder: Path, enabled: bool, append: bool):
        self.enabled = enabled
        self.path = folder / "train.jsonl"
        self.writer = None
        if enabled:
            folder.mkdir(parents=True, exist_ok=True)
            if not append:
                self.path.unlink(missing_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer:
            self.writer.close()


@dataclass
class WindowStats:
    """Sums over the micro-batches since the last log line."""

    loss: float = 0.0
    micro_batches: int = 0
    tokens: int = 0
    truncated: int = 0
    task_sum: dict[str, float] = field(default_factory=dict)
    task_count: dict[str, int] = field(default_factory=dict)
    context_sum: float = 0.0
    context_count: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, parts, batch) -> None:
        self.loss += float(parts.total.detach())
        self.micro_batches += 1
        self.tokens += batch.tokens
        self.truncated += batch.truncated
        for task, value in parts.task_sum.items():
            self.task_sum[task] = self.task_sum.get(task, 0.0) + value
            self.task_count[task] = self.task_count.get(task, 0) + parts.task_count[task]
        self.context_sum += parts.context_sum
        self.context_count += parts.context_count


logger = logging.getLogger(__name__)
_TAG = re.compile(r"step_\d{8}")


def latest_tag(checkpoints: Path) -> str | None:
    """The tag DeepSpeed's `latest` file names; anything but a `step_N` name is refused (it would be a
    path into or out of the run folder)."""
    marker = checkpoints / "latest"
    if not marker.is_file():
        return None
    tag = marker.read_bytes()[:64].decode("utf-8", "replace").strip()
    if not _TAG.fullmatch(tag):
        raise UnimpError(f"{marker} names {tag!r}, not a checkpoint of unimp-bench (step_NNNNNNNN)")
    return tag


def resume_tag(checkpoints: Path) -> str | None:
    """The checkpoint to resume from, verified (checkpoint_trust): the latest one, or, when the latest
    save was interrupted before it was signed, the newest earlier one that was."""
    tag = latest_tag(checkpoints)
    if tag is None:
        return None
    if not is_signed(checkpoints / tag):
        signed = [
            p.name for p in sorted(checkpoints.glob("step_*")) if _TAG.fullmatch(p.name) and is_signed(p)
        ]
        if signed and signed[-1] < tag:
            logger.warning(
                "checkpoint %s was not completed (no signed manifest); resuming from %s", tag, signed[-1]
            )
            tag = signed[-1]
    verify_checkpoint(checkpoints / tag)
    return tag


def train_worker(
    run: Path, data: Path | None = None, resume: bool = False, show_progress: bool = True
) -> dict:
    """Run (or resume) the training described by RUN/config.yaml; returns a summary dict."""
    _single_process_environment()
    trainer = Trainer(run, data, resume)
    with ProgressReporter(show_progress and trainer.is_main) as progress:
        return trainer.train(progress)


class Trainer:
    """One worker process: builds the model and data once, then runs the strategy's stages."""

    def __init__(self, run: Path, data: Path | None, resume: bool):
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        from unimp_bench.data.contract import open_dataset

        self.run = run
        self.config = load_run_config(run / "config.yaml")
        deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name(), verbose=False)
        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.device = torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))
        self.is_main = self.rank == 0

        self.examples_manifest = open_examples(run / "examples").manifest
        data = Path(data) if data is not None else Path(self.examples_manifest["dataset"]["path"])
        self.dataset = open_dataset(data)
        self.image_paths = catalog_image_paths(self.dataset)
        base_tokenizer = load_saved_tokenizer(run / "tokenizer")
        self.model = build_model(
            self.config.model, len(base_tokenizer), len(self.image_paths), seed=self.config.train.seed
        )
        self.tokenizer = PromptTokenizer(base_tokenizer, self.model.vocabulary)
        self.task_examples = load_train_examples(run, self.config.train)
        self.model.to(self.device)

        self.checkpoints = run / "checkpoints"
        self.resume_tag = resume_tag(self.checkpoints) if resume else None
        if resume and self.resume_tag is None:
            raise UnimpError(f"{run} has no checkpoint to resume from yet")
        # which stage to rebuild before DeepSpeed restores the weights
        self.resume_state = (
            read_json(self.checkpoints / self.resume_tag / "unimp_state.json", "resume from an earlier run")
            if self.resume_tag
            else None
        )
        self.log = TrainingLog(run / "logs", self.is_main, append=self.resume_tag is not None)
        self.changed: set[str] = set(self.resume_state["changed"]) if self.resume_state else set()
        self.global_step = self.resume_state["global_step"] if self.resume_state else 0
        self.lora_injected = False
        self.store: ImageFeatureStore | None = None

    def train(self, progress: ProgressReporter) -> dict:
        self.store = ImageFeatureStore(
            self.model,
            ItemImages(self.dataset.root, self.image_paths, self.model.vision.image_size[0]),
            self.config.model.vision.feature_cache_gb,
            progress=progress,
        )
        summary = {"stages": [], "steps": 0}
        for index, stage in enumerate(plan_stages(self.config.train)):
            if self.resume_state and index < self.resume_state["stage"]:
                continue
            steps, total, stopped = self._run_stage(index, stage, progress)
            summary["stages"].append({"name": stage.name, "steps": steps, "total_steps": total})
            if stopped:
                break
        summary["steps"] = self.global_step
        summary["export"] = str((self.run / "export").resolve())
        self.log.close()
        if self.is_main:
            write_bytes_atomic(self.run / "logs" / "summary.json", json.dumps(summary, indent=2).encode())
        return summary

    def _run_stage(self, index: int, stage: Stage, progress: ProgressReporter) -> tuple[int, int, bool]:
        """Train one stage; returns (steps done, steps planned, stopped early by max_steps)."""
        import deepspeed

        train, model = self.config.train, self.model
        if stage.trainable == "lora" and not self.lora_injected:
            lora = train.lora
            inject_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules)
            model.to(self.device)
            self.lora_injected = True
        set_trainable(model, stage.trainable)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.changed |= {name for name, p in model.named_parameters() if p.requires_grad}

        sampler = EpochSampler(
            {t: len(self.task_examples[t].prompts) for t in stage.tasks},
            train.task_sampling,
            train.seed,
            index,
        )
        per_step = train.micro_batch * self.world * train.grad_accum
        steps_per_epoch = sampler.epoch_size // per_step
        if steps_per_epoch == 0:
            raise UnimpError(
                f"stage {stage.name} has {sampler.epoch_size} examples, fewer than one optimizer step needs "
                f"({train.micro_batch} x {train.grad_accum} x {self.world}); lower train.micro_batch"
            )
        micro_per_epoch = steps_per_epoch * train.grad_accum
        total = train.steps or max(1, math.ceil(stage.epochs * steps_per_epoch))

        optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule_factor(step, total, train.warmup_ratio, train.schedule)
        )
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(train)
        )
        stage_step = 0
        if self.resume_state and index == self.resume_state["stage"]:
            _, client = engine.load_checkpoint(str(self.checkpoints), tag=self.resume_tag)
            if client is None:
                raise UnimpError(f"checkpoint {self.resume_tag} of {self.run} cannot be loaded")
            stage_step = self.resume_state["stage_step"]
            _set_rng_state(client["rng"])
            self.resume_state = None
        engine.train()
        model.vision.eval()

        bar = progress.add(f"train {stage.name}", total)
        progress.advance(bar, stage_step)
        window = WindowStats()
        stopped = False
        while stage_step < total:
            if train.max_steps is not None and self.global_step >= train.max_steps:
                stopped = True
                break
            for micro in range(train.grad_accum):
                epoch, within = divmod(stage_step * train.grad_accum + micro, micro_per_epoch)
                start = (within * self.world + self.rank) * train.micro_batch
                pairs = sampler.order(epoch)[start : start + train.micro_batch]
                self._micro_batch(engine, stage, pairs, window)
            stage_step += 1
            self.global_step += 1
            progress.advance(bar)
            if self.global_step % train.log_every == 0 or stage_step == total:
                self.log.write(
                    _log_record(window, self.global_step, stage.name, stage_step / steps_per_epoch, engine)
                )
                window = WindowStats()
            if self.global_step % train.save_every == 0:
                self._save(engine, index, stage, stage_step)
        if window.micro_batches:
            self.log.write(
                _log_record(window, self.global_step, stage.name, stage_step / steps_per_epoch, engine)
            )
        if latest_tag(self.checkpoints) != f"step_{self.global_step:08d}":
            self._save(engine, index, stage, stage_step)
        return stage_step, total, stopped

    def _save(self, engine, index: int, stage: Stage, stage_step: int) -> None:
        """A DeepSpeed checkpoint (every rank) plus our state and an export (rank 0)."""
        tag = f"step_{self.global_step:08d}"
        state = {"stage": index, "stage_step": stage_step, "global_step": self.global_step}
        engine.save_checkpoint(str(self.checkpoints), tag=tag, client_state={"rng": _rng_state(), **state})
        if not self.is_main:
            return
        state |= {"changed": sorted(self.changed), "stage_name": stage.name}
        write_bytes_atomic(self.checkpoints / tag / "unimp_state.json", json.dumps(state).encode())
        provenance = {
            "run": str(self.run.resolve()),
            "step": self.global_step,
            "stage": stage.name,
            "config": to_mapping(self.config),
            "dataset": self.examples_manifest["dataset"],
            "task_versions": {t: v["version"] for t, v in self.examples_manifest["tasks"].items()},
        }
        lora = self.config.train.lora if self.lora_injected else None
        export = self.checkpoints / tag / "export"
        export_model(self.model, export, self.run / "tokenizer", self.changed, lora, provenance)
        copy_directory_atomic(export, self.run / "export")  # the latest, what eval loads by default
        sign_checkpoint(self.checkpoints / tag)  # last: a checkpoint is resumable once complete
        _prune_checkpoints(self.checkpoints, self.config.train.keep_checkpoints)

    def _micro_batch(self, engine, stage: Stage, pairs: np.ndarray, window: WindowStats) -> None:
        tasks = [stage.tasks[int(t)] for t, _ in pairs]
        rows = [int(r) for _, r in pairs]
        sources = [self.task_examples[t] for t in tasks]
        encoded = encode_examples(
            self.tokenizer,
            [s.prompts[r] for s, r in zip(sources, rows)],
            [s.image_items[r] for s, r in zip(sources, rows)],
            [s.history_spans[r] for s, r in zip(sources, rows)],
            [s.targets[r] for s, r in zip(sources, rows)],
            self.config.model.max_length,
        )
        batch = collate(encoded, self.tokenizer.pad_id).to(self.device)
        features, present = self.store.lookup(batch.image_items)
        loss_config = self.config.loss
        select = batch.task_mask | batch.context_mask if loss_config.context else batch.task_mask
        logits = engine(batch.input_ids, batch.attention_mask, features, present, select=select)
        example_of = torch.nonzero(select)[:, 0]
        parts = unimp_loss(
            logits, batch.next_tokens[select], batch.task_mask[select], example_of, tasks, loss_config
        )
        engine.backward(parts.total)
        engine.step()
        window.add(parts, batch)


def _log_record(window: WindowStats, step: int, stage: str, epoch: float, engine) -> dict:
    elapsed = max(1e-9, time.perf_counter() - window.started)
    record = {
        "step": step,
        "stage": stage,
        "epoch": round(epoch, 4),
        "loss": window.loss / max(1, window.micro_batches),
        "lr": float(engine.get_lr()[0]),
        "tokens_per_s": window.tokens / elapsed,
        "truncated_examples": window.truncated,
    }
    for task in sorted(window.task_sum):
        record[f"loss/{task}"] = window.task_sum[task] / max(1, window.task_count[task])
    if window.context_count:
        record["loss/context"] = window.context_sum / window.context_count
    return record


def _prune_checkpoints(checkpoints: Path, keep: int) -> None:
    tags = sorted(p for p in checkpoints.glob("step_*") if p.is_dir())
    for old in tags[: max(0, len(tags) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of each process the DeepSpeed launcher starts."""
    parser = argparse.ArgumentParser(prog="python -m unimp_bench.train")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--local_rank", type=int, default=None)  # added by the launcher
    args = parser.parse_args(argv)
    try:
        train_worker(args.run, resume=args.resume, show_progress=True)
    except UnimpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
