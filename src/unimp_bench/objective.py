"""UniMP's training objective: task-token loss + context reconstruction, with token re-weighting.

For a predicted token with probability p of the right answer, the re-weighted loss is
(1 - p)^gamma * -log p: confident, easy tokens count less, so rare tokens (item ids, ratings) are not
drowned by easy words. gamma = 0 is plain cross-entropy. The weight is not differentiated through
unless `detach_weight` is false (then the gradient also flows through (1 - p)^gamma, as in focal loss).

    per_part:   loss = sum_task w l / #task tokens + context_weight * sum_ctx w l / #ctx tokens
    all_tokens: loss = (sum_task w l + context_weight * sum_ctx w l) / (#task + #ctx tokens)

The sums run over the tokens of the micro-batch; w is the per-task weight of the example's task.
`all_tokens` is the paper's eq. 7 (one sum over every token, so how much the context reconstruction
weighs grows with the history's length, and re-weighting acts on task and context tokens together);
`per_part` averages each part on its own. "w/o context" sets context off, "w/o rew" sets gamma to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from unimp_bench.config import check_choices
from unimp_bench.errors import UnimpError


@dataclass(frozen=True)
class LossConfig:
    gamma: float = 1.0  # token re-weighting exponent; 0 turns re-weighting off
    context: bool = True  # context reconstruction on every history item
    context_weight: float = 1.0
    task_weights: dict[str, float] = field(default_factory=dict)  # default 1.0 per task
    normalize: Literal["per_part", "all_tokens"] = "per_part"  # see the module docstring
    detach_weight: bool = True  # the (1-p)^gamma weight is a constant of the gradient

    def __post_init__(self) -> None:
        check_choices(self, "loss.")
        if self.gamma < 0:
            raise UnimpError("loss.gamma must be >= 0")
        if self.context_weight < 0 or any(w < 0 for w in self.task_weights.values()):
            raise UnimpError("loss weights must be >= 0")

    def weight(self, task: str) -> float:
        return self.task_weights.get(task, 1.0)


def token_losses(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float, detach_weight: bool = True
) -> torch.Tensor:
    """logits [S, V], targets [S] -> re-weighted negative log-likelihood per token [S] (float32)."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    if gamma == 0:
        return nll
    confidence = torch.exp(-(nll.detach() if detach_weight else nll))  # p of the right token
    return (1.0 - confidence).pow(gamma) * nll


@dataclass
class LossParts:
    total: torch.Tensor
    task_sum: dict[str, float]  # summed per-token task loss by task (for logging)
    task_count: dict[str, int]
    context_sum: float
    context_count: int


def unimp_loss(
    logits: torch.Tensor,  # [S, V] for the selected positions, in row-major (example, position) order
    targets: torch.Tensor,  # [S]
    is_task: torch.Tensor,  # [S] bool: a target token (else a context token)
    example_of: torch.Tensor,  # [S] long: the example each position belongs to
    example_tasks: list[str],  # task name per example of the micro-batch
    config: LossConfig,
) -> LossParts:
    losses = token_losses(logits, targets, config.gamma, config.detach_weight)
    weights = torch.tensor(
        [config.weight(t) for t in example_tasks], dtype=losses.dtype, device=losses.device
    )
    weighted = losses * weights[example_of]
    is_context = ~is_task
    task_tokens = int(is_task.sum())
    context_tokens = int(is_context.sum())
    uses_context = config.context and context_tokens > 0
    if config.normalize == "all_tokens":
        summed = weighted[is_task].sum()
        if uses_context:
            summed = summed + config.context_weight * weighted[is_context].sum()
        total = summed / max(1, task_tokens + (context_tokens if uses_context else 0))
    else:
        total = weighted[is_task].sum() / max(1, task_tokens)
        if uses_context:
            total = total + config.context_weight * weighted[is_context].sum() / context_tokens
    task_sum: dict[str, float] = {}
    task_count: dict[str, int] = {}
    detached = losses.detach()
    for index, task in enumerate(example_tasks):
        rows = is_task & (example_of == index)
        task_sum[task] = task_sum.get(task, 0.0) + float(detached[rows].sum())
        task_count[task] = task_count.get(task, 0) + int(rows.sum())
    return LossParts(total, task_sum, task_count, float(detached[is_context].sum()), context_tokens)
