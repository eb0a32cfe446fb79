"""The training worker (`python -m unimp_bench.training.worker`): the learning strategy's stages, each
one DeepSpeed engine over the parameters that stage trains; checkpoints, exports and logs."""

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unimp_bench.checkpoint_trust import is_signed, sign_checkpoint, verify_checkpoint
from unimp_bench.config import to_mapping
from unimp_bench.errors import UnimpError
from unimp_bench.examples import open_examples
from unimp_bench.fileio import copy_directory_atomic, read_json, write_bytes_atomic
from unimp_bench.models.export import export_model, load_weights, resolve_export
from unimp_bench.models.factory import build_model, inject_lora, set_trainable
from unimp_bench.models.inputs import (
    ImageFeatureStore,
    ItemImages,
    catalog_image_paths,
    collate,
    encode_examples,
)
from unimp_bench.models.item_content import (
    catalog_chunks,
    fresh_items,
    item_chunks,
    refresh_item_content,
    seen_items,
)
from unimp_bench.models.tokenization import (
    PromptTokenizer,
    load_saved_tokenizer,
)
from unimp_bench.objective import unimp_loss
from unimp_bench.progress import ProgressReporter
from unimp_bench.training.config import TrainConfig, load_run_config
from unimp_bench.training.plan import EpochSampler, Stage, load_train_examples, plan_stages

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
    # a lone process has no peer to share memory with: DeepSpeed's shared-memory all-reduce op would
    # only cost its first compile on each machine (51 s on 2 cores). Its compatibility table is one
    # cached dict that DeepSpeed reads when it starts the communication backend.
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


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
    examples: int = 0
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
        self.examples += len(batch.input_ids)
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
        # a model that learns image_generation writes the image tokenizer's codes: one token each
        self.image_codes = self.examples_manifest["tasks"].get("image_generation", {}).get("image_codes")
        self.model = build_model(
            self.config.model,
            len(base_tokenizer),
            len(self.image_paths),
            seed=self.config.train.seed,
            num_image_codes=self.image_codes["codebook_size"] if self.image_codes else 0,
        )
        if self.config.train.init_from is not None:  # fine-tuning: the source run's weights
            load_weights(self.model, resolve_export(Path(self.config.train.init_from)))
        self.tokenizer = PromptTokenizer(base_tokenizer, self.model.vocabulary)
        self.task_examples = load_train_examples(run, self.config.train)
        self.chunks = None
        if self.model.items is not None:  # content rows: the catalog's chunks, the items training reads
            self.chunks = catalog_chunks(self.dataset, self.tokenizer, self.config.model.item_chunk_tokens)
            examples = self.task_examples.values()
            read = seen_items(
                (items for e in examples for items in e.image_items),
                (target for e in examples for target in e.targets),
                self.model.vocabulary.num_items,
            )
            self.model.items.seen |= read  # (a fine-tuned run also keeps what its source run saw)
        self.refreshes = 0
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
        if self.chunks is not None:
            summary["item_content_refreshes"] = self.refreshes
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
        set_trainable(model, stage.trainable, lm_embeddings=train.lm_embeddings)
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
            resumed_items = self._restore_items(client)
        else:
            resumed_items = False
        engine.train()
        model.vision.eval()
        if not resumed_items:  # a resumed run goes on with the cache it had, as a straight run does
            self._refresh_items()

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
            if self.global_step % self.config.model.item_refresh_every == 0:
                self._refresh_items()  # (content rows only)
            if self.global_step % train.log_every == 0 or stage_step == total:
                self.log.write(self._log_record(window, stage.name, stage_step / steps_per_epoch, engine))
                window = WindowStats()
            if self.global_step % train.save_every == 0:
                self._save(engine, index, stage, stage_step)
        if window.micro_batches:
            self.log.write(self._log_record(window, stage.name, stage_step / steps_per_epoch, engine))
        if latest_tag(self.checkpoints) != f"step_{self.global_step:08d}":
            self._save(engine, index, stage, stage_step)
        return stage_step, total, stopped

    def _log_record(self, window: WindowStats, stage: str, epoch: float, engine) -> dict:
        record = _log_record(window, self.global_step, stage, epoch, engine)
        if self.chunks is not None:  # how stale the cached item content rows were
            record["item_content_step"] = self.model.items.content_step
            record["item_content_refreshes"] = self.refreshes
        return record

    def _restore_items(self, client: dict) -> bool:
        """The cached item content a checkpoint saved; False when it has none to restore."""
        if self.chunks is None or "items" not in client:
            return False
        saved = client["items"]
        self.model.items.content.copy_(saved["content"].to(self.model.items.content))
        self.model.items.content_step, self.refreshes = saved["step"], saved["refreshes"]
        return True

    def _refresh_items(self) -> None:
        """Content rows: re-encode the whole catalog with the current weights (logged)."""
        if self.chunks is None:
            return
        refresh_item_content(self.model, self.chunks, self.store, self.global_step)
        self.refreshes += 1

    def _save(self, engine, index: int, stage: Stage, stage_step: int) -> None:
        """A DeepSpeed checkpoint (every rank) plus our state and an export (rank 0)."""
        tag = f"step_{self.global_step:08d}"
        state = {"stage": index, "stage_step": stage_step, "global_step": self.global_step}
        client_state = {"rng": _rng_state(), **state}
        if self.chunks is not None:  # the item content cache: a resumed run computes what a straight one does
            items = self.model.items
            client_state["items"] = {"content": items.content.cpu(), "step": items.content_step,
                                     "refreshes": self.refreshes}  # fmt: skip
        engine.save_checkpoint(str(self.checkpoints), tag=tag, client_state=client_state)
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
        if self.image_codes:  # what generate and eval decode the image codes with
            provenance["image_codes"] = self.image_codes
        if "finetune" in self.examples_manifest:  # trained on the held-out domain's fine-tuning view
            provenance["finetune"] = self.examples_manifest["finetune"]
        if self.config.train.init_from is not None:
            provenance["init_from"] = str(resolve_export(Path(self.config.train.init_from)).resolve())
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
        chunks = None
        if self.chunks is not None:  # the batch's items get fresh content rows, which carry the gradient
            items = fresh_items(
                batch.input_ids, self.model.vocabulary.item_start, self.config.model.item_fresh_per_batch
            )
            chunks = item_chunks(self.chunks, self.store, items, self.device)
        logits = engine(
            batch.input_ids, batch.attention_mask, features, present, select=select, item_chunks=chunks
        )
        example_of = torch.nonzero(select)[:, 0]
        parts = unimp_loss(
            logits, batch.next_tokens[select], batch.task_mask[select], example_of, tasks, loss_config
        )
        engine.backward(parts.total)
        engine.step()
        window.add(parts, batch)


def _peak_rss_gib() -> float:
    """The largest resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _log_record(window: WindowStats, step: int, stage: str, epoch: float, engine) -> dict:
    elapsed = max(1e-9, time.perf_counter() - window.started)
    record = {
        "step": step,
        "stage": stage,
        "epoch": round(epoch, 4),
        "loss": window.loss / max(1, window.micro_batches),
        "lr": float(engine.get_lr()[0]),
        "tokens_per_s": window.tokens / elapsed,
        "tokens_per_example": window.tokens / max(1, window.examples),
        "truncated_examples": window.truncated,
        "peak_rss_gib": _peak_rss_gib(),
    }
    if engine.device.type == "cuda":  # the most this rank's GPU held since the start
        record["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(engine.device) / 2**30
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
    parser = argparse.ArgumentParser(prog="python -m unimp_bench.training.worker")
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
