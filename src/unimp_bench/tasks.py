"""Task definitions (data in tasks/*.yaml) and the one registry built from them.

A task YAML names its kind (`builder:`, one of task_kinds.KINDS), its instruction templates, its
metrics and its splits. Bump `version` whenever the meaning of a task changes (template, target,
sampling), so results of different meanings never share a row.

The registry holds the tasks shipped with the package and those of every folder named in the
environment variable UNIMP_BENCH_TASK_PATH (colon-separated, like PATH); a name defined twice is
refused.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from unimp_bench.config import check_choices, from_mapping, load_yaml
from unimp_bench.errors import UnimpError
from unimp_bench.metrics import parse_metric
from unimp_bench.prompts import template_parts
from unimp_bench.resources import resource_dir
from unimp_bench.task_kinds import KINDS, TaskKind

TASK_PATH_VARIABLE = "UNIMP_BENCH_TASK_PATH"
SPLITS = ("train", "valid", "test", "new_user", "new_domain", "new_domain_finetune")
EVALUATION_SPLITS = ("valid", "test", "new_user", "new_domain", "new_domain_finetune")


@dataclass(frozen=True)
class CandidateSampling:
    positives_min: int = 1
    positives_max: int = 3
    num_candidates: int = 10
    # domain: negatives from the positives' domains; catalog: from any item
    negative_pool: Literal["domain", "catalog"] = "domain"

    def __post_init__(self) -> None:
        check_choices(self, "candidates.")


@dataclass(frozen=True)
class Task:
    name: str
    version: int
    description: str
    builder: str  # the task's kind, one of task_kinds.KINDS
    instructions: tuple[str, ...]
    inputs: tuple[str, ...]
    target: str
    metrics: tuple[str, ...]
    splits: tuple[str, ...]
    max_history: int = 5
    min_history: int = 1
    candidates: CandidateSampling | None = None
    review_max_words: int | None = None
    retrieved_images: int | None = None

    @property
    def kind(self) -> TaskKind:
        return KINDS[self.builder]

    @property
    def metric_family(self) -> str:
        return self.kind.family.name


def _template_fields(template: str) -> list[str]:
    try:
        return [field for _, field in template_parts(template) if field is not None]
    except ValueError as exc:
        raise UnimpError(f"instruction template {template!r} is malformed: {exc}") from None


def validate_task(task: Task, where: str) -> Task:
    if task.builder not in KINDS:
        raise UnimpError(f"{where}: unknown builder {task.builder!r}; known: {', '.join(KINDS)}")
    if task.version < 1:
        raise UnimpError(f"{where}: version must be a positive integer")
    required, family = task.kind.placeholders, task.metric_family
    if not task.instructions:
        raise UnimpError(f"{where}: at least one instruction template is needed")
    for template in task.instructions:
        used = _template_fields(template)
        fields = set(used)
        if len(used) != len(fields) or any(f == "" or not f.isidentifier() for f in used):
            raise UnimpError(f"{where}: template {template!r} must name each placeholder once")
        if fields - required:
            raise UnimpError(
                f"{where}: template {template!r} uses unknown placeholder(s) "
                f"{', '.join(sorted(fields - required))}; "
                f"a {task.builder} template may use {', '.join(sorted(required))}"
            )
        if required - fields:
            raise UnimpError(
                f"{where}: template {template!r} lacks placeholder(s) {', '.join(sorted(required - fields))}"
            )
    for metric in task.metrics:
        if parse_metric(metric).family != family:
            raise UnimpError(f"{where}: metric {metric} does not score a {task.builder} task")
    unknown_splits = [s for s in task.splits if s not in SPLITS]
    if unknown_splits or not task.splits:
        raise UnimpError(f"{where}: splits must be a non-empty subset of {', '.join(SPLITS)}")
    if task.max_history < 1 or not 0 <= task.min_history <= task.max_history:
        raise UnimpError(f"{where}: need 1 <= max_history and 0 <= min_history <= max_history")
    problem = task.kind.check(task)
    if problem:
        raise UnimpError(f"{where}: {problem}")
    return task


def load_task_file(path: Path) -> Task:
    task = from_mapping(Task, load_yaml(path), str(path.name))
    if task.name != path.stem:
        raise UnimpError(f"{path} defines task {task.name!r}; the file must be named {task.name}.yaml")
    return validate_task(task, path.name)


@dataclass(frozen=True)
class TaskRegistry:
    tasks: dict[str, Task]

    def get(self, name: str) -> Task:
        if name not in self.tasks:
            raise UnimpError(f"unknown task {name!r}; registered tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

    def select(self, names: list[str] | None) -> list[Task]:
        return [self.get(n) for n in names] if names else list(self.tasks.values())

    def names(self) -> list[str]:
        return list(self.tasks)


def build_registry(*folders: Path) -> TaskRegistry:
    """The tasks of every folder's *.yaml files, in folder order; a name defined twice is refused."""
    tasks: dict[str, Task] = {}
    where: dict[str, Path] = {}
    for folder in folders:
        files = sorted(folder.glob("*.yaml"))
        if not files:
            raise UnimpError(f"no task definitions found in {folder}")
        for path in files:
            task = load_task_file(path)
            if task.name in tasks:
                raise UnimpError(f"task {task.name} is defined twice: in {where[task.name]} and in {path}")
            tasks[task.name] = task
            where[task.name] = path
    return TaskRegistry(tasks)


def task_folders() -> tuple[Path, ...]:
    """The shipped task folder, then each folder of UNIMP_BENCH_TASK_PATH."""
    extra = []
    for entry in os.environ.get(TASK_PATH_VARIABLE, "").split(os.pathsep):
        if entry.strip():
            folder = Path(entry).expanduser()
            if not folder.is_dir():
                raise UnimpError(f"{TASK_PATH_VARIABLE} names {entry}, which is not a folder")
            extra.append(folder.resolve())
    return (resource_dir("tasks"), *extra)


def registry() -> TaskRegistry:
    """The registry of the shipped tasks and those on UNIMP_BENCH_TASK_PATH, built once per path."""
    return _registry_of(task_folders())


@functools.cache
def _registry_of(folders: tuple[Path, ...]) -> TaskRegistry:
    return build_registry(*folders)
