"""Training a RecBole model with our loop: the configured learner over `model.calculate_loss`, one
validation on our valid NDCG@10 every epoch (or every `valid_every_steps` optimizer steps), early
stopping after `stopping_step` validations without improvement, the best weights kept in memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from unimp_bench.baselines.early_stopping import BestEpoch
from unimp_bench.baselines.recbole.batching import TrainBatches
from unimp_bench.baselines.recbole.params import RecBoleParams
from unimp_bench.errors import UnimpError

logger = logging.getLogger(__name__)
LEARNERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}


def optimizer_for(config, model: torch.nn.Module) -> torch.optim.Optimizer:
    learner = str(config["learner"]).lower()
    if learner not in LEARNERS:
        raise UnimpError(f"learner {learner!r} is not supported; use one of {', '.join(LEARNERS)}")
    return LEARNERS[learner](
        model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
    )


def run_epoch(model, optimizer, batches: TrainBatches, clip, device, epoch: int = 0) -> tuple[float, int]:
    """One pass over the epoch's steps: (summed loss, optimizer steps). A step given as weighted parts
    accumulates their gradients."""
    model.train()
    total, steps = 0.0, 0
    for batch in batches.epoch(epoch):
        optimizer.zero_grad()
        for part, weight in batch if isinstance(batch, list) else [(batch, 1.0)]:
            loss = model.calculate_loss(part.to(device))
            if isinstance(loss, tuple):  # some models return their loss terms separately
                loss = sum(loss)
            if not torch.isfinite(loss):
                raise UnimpError(
                    f"{batches.params.model} training diverged (loss {loss.item()}); lower learning_rate"
                )
            (loss * weight).backward()
            total += weight * float(loss.item())
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), **clip)
        optimizer.step()
        steps += 1
    return total, steps


def pretrain(model, config, batches: TrainBatches, device, epochs: int) -> dict[str, Any]:
    """S3Rec's self-supervised stage: `epochs` passes (seeded -1, -2, ...), no validation."""
    optimizer = optimizer_for(config, model)
    losses = [
        run_epoch(model, optimizer, batches, config["clip_grad_norm"], device, -epoch)[0]
        for epoch in range(1, epochs + 1)
    ]
    return {"pretrain_epochs": epochs, "pretrain_last_loss": round(losses[-1], 4)}


def forget_cached_embeddings(model) -> None:
    """Graph models (LightGCN, ...) cache propagated embeddings for prediction; new weights void them."""
    for attribute in ("restore_user_e", "restore_item_e"):
        if hasattr(model, attribute):
            setattr(model, attribute, None)


def fit(
    name: str,
    model,
    config,
    batches: TrainBatches,
    params: RecBoleParams,
    device,
    validate: Callable[[], float],
) -> dict[str, Any]:
    """Train `model` in place with early stopping on `validate()` (valid NDCG@10); it ends with the
    best validation's weights. Returns what training did, for the result's config."""
    from recbole.utils import ModelType

    trainable = [p for p in model.parameters() if p.requires_grad]
    if model.type == ModelType.TRADITIONAL or not trainable:  # Pop and friends: one counting pass
        for batch in batches.train_data:
            model.calculate_loss(batch.to(device))
        return {"epochs_run": 1, "best_epoch": 1}
    optimizer = optimizer_for(config, model)
    best, epoch = BestEpoch(params.stopping_step), 0
    curve, validated, seconds, steps = [], [], [], 0
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        loss, epoch_steps = run_epoch(model, optimizer, batches, config["clip_grad_norm"], device, epoch)
        seconds.append(time.perf_counter() - started)
        steps += epoch_steps
        if steps < params.valid_every_steps and epoch < params.epochs:
            continue  # a small dataset: more epochs before the next validation
        steps = 0
        score = validate()
        forget_cached_embeddings(model)  # the next epoch changes the weights again
        curve.append(round(score, 5))
        validated.append(epoch)
        logger.info(
            "%s epoch %d: loss %.4f, valid NDCG@10 %.4f (%.1f s training, %.1f s in all)",
            name,
            epoch,
            loss,
            score,
            seconds[-1],
            time.perf_counter() - started,
        )
        if best.update(epoch, score, model.state_dict):
            break
    model.load_state_dict(best.state)
    forget_cached_embeddings(model)
    training = {
        "epochs_run": epoch,
        "best_epoch": best.epoch,
        "best_valid_NDCG@10": round(best.score, 6),
        "valid_curve": curve,
        "seconds_per_epoch": round(float(np.mean(seconds)), 3),
    }
    if validated != list(range(1, epoch + 1)):
        training["validated_epochs"] = validated
    return training
