"""Materialize task examples from a prepared dataset: one Parquet file per task and split.

Which interaction an example targets, per split:

- ``train``: every train interaction of a training user that has at least `min_history` items
  before it (the window slides over the user's training sequence);
- ``valid`` / ``test``: the training user's valid / test interaction (leave-last-out);
- ``new_user``: the last interaction of each held-out user;
- ``new_domain`` and ``new_domain_finetune``: the last interaction in the held-out domain of each of
  that domain's users (the same examples; the two splits differ in what a method may train on, see
  data/transfer.py).

The history is the last `max_history` interactions before the target, whatever their domain.
Random choices (selection positives and negatives, random instruction paraphrases) come from a
generator seeded with (seed, task, user, split), so an example never depends on which other users or
tasks were built with it. An example that cannot be built is counted under its reason.
"""

from __future__ import annotations

import contextlib
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from unimp_bench import __version__
from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.data.contract import PreparedDataset, open_dataset
from unimp_bench.data.transfer import FinetuneSettings, finetune_view
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import atomic_directory, file_sha256, read_json, write_json_atomic
from unimp_bench.progress import ProgressReporter
from unimp_bench.prompts import (
    PromptSettings,
    flatten_item,
    history_segment,
    item_attributes,
    most_specific_category,
    render,
)
from unimp_bench.task_kinds import SPLIT_CODES, RowContext
from unimp_bench.tasks import SPLITS, Task, registry, validate_task

EXAMPLES_VERSION = 1
ROWS_PER_GROUP = 20_000
MAX_REJECTION_DRAWS = 16

COMMON_SCHEMA = [
    ("example_id", pa.string()),
    ("task", pa.string()),
    ("task_version", pa.int32()),
    ("split", pa.string()),
    ("user_idx", pa.int32()),
    ("target_pos", pa.int32()),
    ("history", pa.list_(pa.int32())),
    ("instruction_id", pa.int16()),
    ("prompt", pa.string()),
    ("image_items", pa.list_(pa.int32())),
    ("image_paths", pa.list_(pa.string())),
    ("history_spans", pa.list_(pa.list_(pa.int32()))),
    ("target_text", pa.string()),
]


def example_schema(task: Task) -> pa.Schema:
    return pa.schema(COMMON_SCHEMA + list(task.kind.columns))


@dataclass(frozen=True)
class BuildSettings:
    seed: int = 0
    instruction: str = "first"  # first | random | the index of one template
    prompt: PromptSettings = field(default_factory=PromptSettings)


class Catalog:
    """Item facts the builders need, indexed by item_idx."""

    def __init__(self, dataset: PreparedDataset, settings: PromptSettings):
        items = dataset.scan("items").sort("item_idx").collect()
        self.count = len(items)
        self.domain = items["domain"].to_list()
        self.image_path = items["image_path"].to_list()
        self.category = [most_specific_category(c) for c in items["categories"].to_list()]
        self.flat = [
            flatten_item(row["item_idx"], item_attributes(row, settings))
            for row in items.iter_rows(named=True)
        ]
        domains = items["domain"].to_numpy()
        self._domain_items = {d: np.flatnonzero(domains == d).astype(np.int32) for d in set(self.domain)}
        self.all_items = np.arange(self.count, dtype=np.int32)
        self.items = items

    def domain_items(self, item_idx: int) -> np.ndarray:
        return self._domain_items[self.domain[item_idx]]


@dataclass
class UserSequences:
    """Interactions sorted by (user, pos), with each user's slice given by offsets."""

    user_idx: np.ndarray
    group: list[str]
    offsets: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    splits: np.ndarray  # 0 train, 1 valid, 2 test
    reviews: list[str] | None

    def slice(self, row: int) -> slice:
        return slice(self.offsets[row], self.offsets[row + 1])


def load_sequences(dataset: PreparedDataset, with_reviews: bool) -> UserSequences:
    columns = ["user_idx", "item_idx", "rating", "split", "pos"] + (["review_text"] if with_reviews else [])
    interactions = (
        dataset.scan("interactions")
        .select(columns)
        .sort("user_idx", "pos")
        .with_columns(pl.col("split").replace_strict(SPLIT_CODES, return_dtype=pl.Int8))
        .collect()
    )
    users = dataset.scan("users").select("user_idx", "group").sort("user_idx").collect()
    user_idx = interactions["user_idx"].to_numpy()
    boundaries = np.flatnonzero(np.diff(user_idx)) + 1
    starts = np.concatenate([[0], boundaries]) if len(user_idx) else np.zeros(0, dtype=np.int64)
    present = user_idx[starts] if len(user_idx) else np.zeros(0, dtype=np.int32)
    group_of = dict(zip(users["user_idx"].to_list(), users["group"].to_list()))
    return UserSequences(
        user_idx=present,
        group=[group_of[int(u)] for u in present],
        offsets=np.concatenate([starts, [len(user_idx)]]).astype(np.int64),
        items=interactions["item_idx"].to_numpy(),
        ratings=interactions["rating"].to_numpy(),
        splits=interactions["split"].to_numpy(),
        reviews=interactions["review_text"].to_list() if with_reviews else None,
    )


def target_positions(
    split: str, group: str, splits: np.ndarray, domains: list[str], held_out: str | None
) -> list[int]:
    """0-based positions within the user's sequence that the split's examples target."""
    if split in SPLIT_CODES:
        if group != "train":
            return []
        return np.flatnonzero(splits == SPLIT_CODES[split]).tolist()
    if split == "new_user":
        return [len(splits) - 1] if group == "new_user" and len(splits) else []
    # new_domain and new_domain_finetune (data/transfer.py)
    if group != "new_domain" or held_out is None:
        return []
    in_domain = [p for p, domain in enumerate(domains) if domain == held_out]
    return in_domain[-1:]


class SplitWriter:
    """Buffers rows of one (task, split) and writes them as Parquet row groups."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.rows: dict[str, list] = {name: [] for name in schema.names}
        self.count = 0
        self.skipped: Counter[str] = Counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")

    def add(self, row: dict) -> None:
        for name in self.schema.names:
            self.rows[name].append(row[name])
        self.count += 1
        if len(self.rows["example_id"]) >= ROWS_PER_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.rows["example_id"]:
            self.writer.write_table(pa.table(self.rows, schema=self.schema))
            self.rows = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self.writer.close()


class ExampleBuilder:
    def __init__(self, dataset: PreparedDataset, tasks: list[Task], settings: BuildSettings):
        self.dataset = dataset
        self.tasks = tasks
        self.settings = settings
        self.catalog = Catalog(dataset, settings.prompt)
        self.sequences = load_sequences(dataset, with_reviews=any(t.kind.reads_reviews for t in tasks))
        self.held_out_domain = dataset.held_out_domain
        self._retriever = None
        self.image_codes = None  # the catalog's image codes (image_tokens/), read when a task needs them
        if any(task.builder == "image_generation" for task in tasks):
            from unimp_bench.image_tokens.catalog import catalog_codes

            self.image_codes = catalog_codes(dataset.root, required=False)

    def _instruction(self, task: Task, rng: np.random.Generator) -> int:
        choice = self.settings.instruction
        if choice == "first":
            return 0
        if choice == "random":
            return int(rng.integers(len(task.instructions)))
        return int(choice)  # checked against every task's templates before building starts

    def retriever(self):
        if self._retriever is None:
            from unimp_bench.retrieval import BM25Ranker, BM25Settings, item_documents

            self._retriever = BM25Ranker(item_documents(self.catalog.items, BM25Settings().fields))
        return self._retriever

    def _negatives(self, rng, pool: np.ndarray, seen: set[int], count: int) -> list[int] | None:
        chosen: list[int] = []
        taken = set(seen)
        for _ in range(MAX_REJECTION_DRAWS):  # rounds of draws, each a batch of candidate picks
            for item in pool[rng.integers(len(pool), size=2 * count + 4)].tolist():
                if item not in taken:
                    taken.add(item)
                    chosen.append(item)
                    if len(chosen) == count:
                        return chosen
        remaining = [int(i) for i in pool if int(i) not in taken]  # small or crowded pool: exact draw
        if len(remaining) < count - len(chosen):
            return None
        extra = rng.choice(len(remaining), size=count - len(chosen), replace=False)
        return chosen + [remaining[i] for i in sorted(extra.tolist())]

    def stratified_negatives(
        self, rng, positives: list[int], seen: set[int], count: int, pool: str
    ) -> list[int] | None:
        """`count` negatives; with the `domain` pool, each positive's domain gets its share (as many
        negatives per positive in every domain, rounded), so the domain of a candidate never tells a
        positive apart."""
        if pool != "domain":
            return self._negatives(rng, self.catalog.all_items, seen, count)
        per_domain = Counter(self.catalog.domain[i] for i in positives)  # in order of first positive
        chosen: list[int] = []
        left, positives_left = count, len(positives)
        for domain, share in per_domain.items():
            wanted = left if share == positives_left else min(left, round(count * share / len(positives)))
            positives_left -= share
            if wanted <= 0:
                continue
            first_of_domain = next(i for i in positives if self.catalog.domain[i] == domain)
            drawn = self._negatives(rng, self.catalog.domain_items(first_of_domain), seen, wanted)
            if drawn is None:
                return None
            chosen += drawn
            left -= wanted
        return chosen

    def build_user(self, task: Task, row: int, writers: dict[str, SplitWriter]) -> None:
        seq = self.sequences
        catalog = self.catalog
        user = int(seq.user_idx[row])
        part = seq.slice(row)
        items = seq.items[part].tolist()  # Python ints: cheaper to slice and index per example
        split_codes = seq.splits[part]
        split_list = split_codes.tolist()
        ratings = seq.ratings[part]
        reviews = seq.reviews[part] if task.kind.reads_reviews else None
        needs_rng = task.kind.draws or self.settings.instruction == "random"
        trained = np.flatnonzero(split_codes == SPLIT_CODES["train"])
        last_train = int(trained[-1]) if len(trained) else -1
        for split, writer in writers.items():
            # one generator per (task, user, split): an example never depends on what else was built
            rng = (
                np.random.default_rng(
                    [self.settings.seed, zlib.crc32(task.name.encode()), user, SPLITS.index(split)]
                )
                if needs_rng
                else None
            )
            domains = [catalog.domain[i] for i in items] if split.startswith("new_domain") else []
            for p in target_positions(split, seq.group[row], split_codes, domains, self.held_out_domain):
                if p < task.min_history:
                    writer.skipped["too little history"] += 1
                    continue
                context = RowContext(
                    self, task, split, items, split_list, ratings, reviews, p, last_train, rng
                )
                built = task.kind.build_row(context)
                if isinstance(built, str):
                    writer.skipped[built] += 1
                    continue
                history = context.history(built.first)
                segments = {"history": history_segment(catalog.flat, history), **built.segments}
                instruction_id = self._instruction(task, rng)
                prompt = render(task.instructions[instruction_id], segments)
                writer.add(
                    {
                        "example_id": f"{task.name}:{split}:{user}:{built.first}",
                        "task": task.name,
                        "task_version": task.version,
                        "split": split,
                        "user_idx": user,
                        "target_pos": built.first,
                        "history": history,
                        "instruction_id": instruction_id,
                        "prompt": prompt.text,
                        "image_items": list(prompt.image_items),
                        "image_paths": [catalog.image_path[i] for i in prompt.image_items],
                        "history_spans": [list(span) for span in prompt.history_spans],
                        "target_text": built.target_text,
                        **built.fields,
                    }
                )


def build_examples(
    data_dir: Path,
    out: Path,
    task_names: list[str] | None = None,
    splits: list[str] | None = None,
    settings: BuildSettings = BuildSettings(),
    overwrite: bool = False,
    show_progress: bool = False,
    finetune: FinetuneSettings | None = None,
) -> dict:
    """Write EXAMPLES/<task>/<split>.parquet for the chosen tasks and splits, plus manifest.json.
    With `finetune`, the examples are those of the held-out domain's fine-tuning view (its train split
    holds the chosen held-out users' interactions before their valid target; data/transfer.py)."""
    tasks = registry().select(task_names)
    unknown = [s for s in splits or [] if s not in SPLITS]
    if unknown:
        raise UnimpError(f"unknown split(s) {', '.join(unknown)}; choose from {', '.join(SPLITS)}")
    if settings.instruction not in ("first", "random"):
        if not settings.instruction.isdigit():
            raise UnimpError("--instruction must be first, random or the index of a template")
        index = int(settings.instruction)
        for task in tasks:
            if index >= len(task.instructions):
                raise UnimpError(
                    f"task {task.name} has {len(task.instructions)} instruction(s); "
                    f"index {index} does not exist"
                )
    dataset = open_dataset(data_dir)
    if finetune is not None:
        dataset = finetune_view(dataset, finetune)
    builder = ExampleBuilder(dataset, tasks, settings)
    manifest: dict = {
        "examples_version": EXAMPLES_VERSION,
        "package_version": __version__,
        "dataset": dataset_identity(dataset),
        "settings": to_mapping(settings),
        "tasks": {},
    }
    if finetune is not None:
        manifest["finetune"] = finetune.describe()
    users = len(builder.sequences.user_idx)
    with atomic_directory(out, overwrite) as staging, ProgressReporter(show_progress) as progress:
        bar = progress.add("building examples", total=users * len(tasks))
        for task in tasks:
            chosen = [s for s in task.splits if splits is None or s in splits]
            writers = {
                s: SplitWriter(staging / task.name / f"{s}.parquet", example_schema(task)) for s in chosen
            }
            for row in range(users):
                builder.build_user(task, row, writers)
                progress.advance(bar)
            entry = {"version": task.version, "definition": to_mapping(task), "splits": {}}
            if task.builder == "image_generation":
                entry["image_codes"] = builder.image_codes.describe() if builder.image_codes else None
            for split, writer in writers.items():
                writer.close()
                entry["splits"][split] = {
                    "file": f"{task.name}/{split}.parquet",
                    "examples": writer.count,
                    "skipped": dict(sorted(writer.skipped.items())),
                    "sha256": file_sha256(writer.path),
                }
            manifest["tasks"][task.name] = entry
        write_json_atomic(staging / "manifest.json", manifest)
    return manifest


def dataset_identity(dataset: PreparedDataset) -> dict:
    manifest = dataset.manifest
    return {
        "name": manifest.get("recipe", {}).get("name", dataset.root.name),
        "domains": manifest.get("selected_domains"),
        "content_hash": manifest["content_hash"],
        "path": str(dataset.root.resolve()),
    }


@dataclass(frozen=True)
class ExampleSet:
    root: Path
    manifest: dict

    def entry(self, task: Task, split: str) -> dict:
        tasks = self.manifest["tasks"]
        if task.name not in tasks:
            raise UnimpError(
                f"{self.root} holds no {task.name} examples; build them with --tasks {task.name}"
            )
        entry = tasks[task.name]
        if entry["version"] != task.version:
            raise UnimpError(
                f"{self.root} holds version {entry['version']} of task {task.name}, "
                f"this unimp-bench defines version {task.version}; build the examples again"
            )
        if split not in entry["splits"]:
            raise UnimpError(f"{self.root} holds no {split} examples of {task.name}")
        return entry["splits"][split]

    def task(self, name: str) -> Task:
        """The definition of task `name` these examples were built with (a worker reads it from here,
        wherever the task's YAML was found)."""
        if name not in self.manifest["tasks"]:
            raise UnimpError(f"{self.root} holds no {name} examples; build them with --tasks {name}")
        return validate_task(from_mapping(Task, self.manifest["tasks"][name]["definition"], name), name)

    def load(self, task: Task, split: str) -> pl.DataFrame:
        entry = self.entry(task, split)
        path = self.root / entry["file"]
        if not path.exists() or file_sha256(path) != entry["sha256"]:
            raise UnimpError(f"{path} is missing or changed since it was built; build the examples again")
        return pl.read_parquet(path)


def open_examples(root: Path) -> ExampleSet:
    path = root / "manifest.json"
    if not path.exists():
        raise UnimpError(f"{root} holds no examples (no manifest.json); run `unimp-bench build` first")
    manifest = read_json(path, "build the examples again")
    if manifest.get("examples_version") != EXAMPLES_VERSION:
        raise UnimpError(f"{root} was built by an incompatible unimp-bench; build the examples again")
    return ExampleSet(root, manifest)


@contextlib.contextmanager
def examples_for(
    data_dir: Path,
    tasks: list[str],
    splits: list[str],
    examples_dir: Path | None,
    seed: int,
    show_progress: bool = False,
) -> Iterator[ExampleSet]:
    """The examples a method is scored on: `examples_dir` when given (it must come from `data_dir`),
    otherwise the tasks' splits built with default settings and `seed` into a temporary folder, which
    is what every baseline and model sees when no folder is given."""
    with tempfile.TemporaryDirectory(prefix="unimp-bench-examples-") as scratch:
        if examples_dir is None:
            examples_dir = Path(scratch) / "examples"
            build_examples(
                data_dir, examples_dir, tasks, splits, BuildSettings(seed=seed), show_progress=show_progress
            )
        example_set = open_examples(examples_dir)
        dataset = open_dataset(data_dir)
        if example_set.manifest["dataset"]["content_hash"] != dataset.manifest["content_hash"]:
            raise UnimpError(
                f"the examples in {examples_dir} were built from another dataset than {data_dir}"
            )
        yield example_set
