"""`unimp-bench eval` past one process: every rank predicts every N-th shard of the same examples and
saves it where a one-process run would (evaluation/shards.py); the launching process then merges the
shards in order and scores them. A shard is the same examples whichever rank computes it, so the
predictions file and the result are those of a one-process run.

Ranks start through the DeepSpeed launcher, as `train` does (`--gpus N`, `--hostfile H`: one rank per
GPU on every host), or as plain CPU processes (`--processes N`). The job travels as one JSON file in
the shards' folder, with the examples to predict (after --limit and the perturbations) beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from unimp_bench.config import from_mapping, to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import read_json, write_json_atomic, write_parquet_atomic

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
EXAMPLES_FILE = "examples.parquet"


@dataclass(frozen=True)
class Parallel:
    """How many ranks predict: GPUs per host through the DeepSpeed launcher (with a hostfile, on every
    host), or CPU processes on this machine. Not part of what the predictions depend on."""

    gpus: int = 0
    hostfile: Path | None = None
    processes: int = 1

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.processes < 1:
            raise UnimpError("--gpus must be at least 0 and --processes at least 1")
        if self.processes > 1 and (self.gpus or self.hostfile is not None):
            raise UnimpError(
                "--processes splits a CPU evaluation; with --gpus or --hostfile each GPU is one rank"
            )
        if self.hostfile is not None and not self.hostfile.is_file():
            raise UnimpError(f"hostfile {self.hostfile} does not exist")

    @property
    def active(self) -> bool:
        return self.gpus > 0 or self.hostfile is not None or self.processes > 1

    @property
    def on_gpus(self) -> bool:
        return self.gpus > 0 or self.hostfile is not None


@dataclass(frozen=True)
class ShardJob:
    """What a rank needs to predict its shards: the model, the data, the decoding settings (a
    ModelEvalSettings mapping) and where the shards go."""

    export: str
    data: str
    task: str
    method: str
    settings: dict
    partial: str  # the shards' folder; its key.json is written by the launching process
    image_root: str  # image_generation writes its images under image_root / image_folder
    image_folder: str
    device: str  # "cuda": each rank takes the GPU of its LOCAL_RANK; "cpu"


def shards_of_rank(count: int, rank: int, world: int) -> range:
    """Rank r of w takes shards r, r + w, r + 2w, ...: neighbouring shards (similar lengths, in
    example order) land on different ranks."""
    return range(rank, count, world)


def launch_ranks(job: ShardJob, examples: pl.DataFrame, parallel: Parallel) -> None:
    """Write the job beside the shards and run the ranks to completion; a failed rank is an error."""
    partial = Path(job.partial)
    write_parquet_atomic(examples, partial / EXAMPLES_FILE)
    write_json_atomic(partial / JOB_FILE, to_mapping(job))
    job_path = str((partial / JOB_FILE).resolve())
    module = [sys.executable, "-m", "unimp_bench.evaluation.parallel", "--job", job_path]
    if parallel.on_gpus:
        command = [sys.executable, "-m", "deepspeed.launcher.runner"]
        command += ["--hostfile", str(parallel.hostfile)] if parallel.hostfile is not None else []
        command += ["--num_gpus", str(parallel.gpus)] if parallel.gpus else []
        command += ["--module", "unimp_bench.evaluation.parallel", "--job", job_path]
        status = subprocess.call(command)
        if status != 0:
            raise UnimpError(f"the DeepSpeed launcher exited with status {status}; see its output above")
        return
    world = parallel.processes
    threads = str(max(1, (os.cpu_count() or 1) // world))
    ranks = []
    for rank in range(world):
        env = os.environ | {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
        env.setdefault("OMP_NUM_THREADS", threads)  # the ranks share the cores rather than each taking all
        ranks.append(subprocess.Popen(module, env=env))
    failed = [(rank, process.wait()) for rank, process in enumerate(ranks)]
    failed = [(rank, status) for rank, status in failed if status != 0]
    if failed:
        shown = ", ".join(f"rank {rank} exited with status {status}" for rank, status in failed)
        raise UnimpError(f"evaluation {shown}; see its output above")


def run_rank(job_path: Path, rank: int, world: int) -> int:
    """Predict this rank's shards that are not saved yet; returns how many it computed."""
    import torch

    from unimp_bench.data.contract import open_dataset
    from unimp_bench.evaluation.predictions import write_predictions
    from unimp_bench.evaluation.shards import saved_shard, shard_chunks, shard_path
    from unimp_bench.models.export import load_exported
    from unimp_bench.models.predictor import ModelEvalSettings, UniMPPredictor
    from unimp_bench.tasks import registry

    job = from_mapping(ShardJob, read_json(job_path, "run the evaluation again"), str(job_path))
    settings = from_mapping(ModelEvalSettings, job.settings, "eval settings")
    partial = Path(job.partial)
    examples = pl.read_parquet(partial / EXAMPLES_FILE)
    chunks = shard_chunks(examples, settings.shard_size)
    todo = []
    for index in shards_of_rank(len(chunks), rank, world):
        if saved_shard(shard_path(partial, index), chunks[index]) is None:
            todo.append((index, chunks[index]))
    if not todo:
        return 0
    task = registry().get(job.task)
    dataset = dataclasses.replace(open_dataset(Path(job.data)), candidates=settings.candidates)
    loaded = load_exported(Path(job.export))
    if job.device == "cuda":
        loaded.model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))))
    predictor = UniMPPredictor(loaded, dataset, settings, job.method, show_progress=False)
    predictor.image_folder = (Path(job.image_root), job.image_folder)
    for index, chunk in todo:
        write_predictions(predictor.predict(task, chunk), shard_path(partial, index))
        logger.info("rank %d/%d: shard %d done (%d examples)", rank, world, index, len(chunk))
    return len(todo)


def main(argv: list[str] | None = None) -> None:
    """Entry point of each rank (started by launch_ranks or the DeepSpeed launcher)."""
    parser = argparse.ArgumentParser(prog="python -m unimp_bench.evaluation.parallel")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None)  # added by the DeepSpeed launcher
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        run_rank(args.job, rank, world)
    except UnimpError as exc:
        print(f"error: rank {rank}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
