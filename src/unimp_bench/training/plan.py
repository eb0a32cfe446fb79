"""What one training run iterates over: the stages of the learning strategy, the seeded order of
(task, row) pairs of each epoch, and the train examples of each task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimp_bench.errors import UnimpError
from unimp_bench.examples import open_examples
from unimp_bench.training.config import TrainConfig


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
