"""`unimp-bench train`: prepare the run folder, then train in this process on the CPU or through the
DeepSpeed launcher (one worker per GPU, on every host of a hostfile)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from unimp_bench.errors import UnimpError
from unimp_bench.fileio import read_json
from unimp_bench.training.config import check_trainable, load_run_config
from unimp_bench.training.run_folder import prepare_run
from unimp_bench.training.worker import train_worker

# launching


def launcher_command(run: Path, gpus: int, hostfile: Path | None, resume: bool) -> list[str]:
    """The DeepSpeed launcher invocation that starts one worker per GPU (on every host of the hostfile)."""
    command = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if hostfile is not None:
        command += ["--hostfile", str(hostfile)]
    if gpus:
        command += ["--num_gpus", str(gpus)]
    command += ["--module", "unimp_bench.training.worker", "--run", str(run.resolve())]
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
    ablation: str | None = None,
) -> dict:
    """`unimp-bench train`: the training summary (from this process, or from the launched workers).
    `ablation` lays a shipped ablation's changes over the preset (configs/ablations/NAME.yaml)."""
    overrides = list(overrides) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    config = load_run_config(config_path, overrides, ablation)
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
