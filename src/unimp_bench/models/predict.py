"""Batched scoring with a trained UniMP: item scores for exact full ranking in one forward pass.

Item ids are single tokens, so the logits at the last prompt token restricted to the item rows rank the
whole catalog exactly. The evaluation engine builds on this; the learning benchmark uses it directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from unimp_bench.models.inputs import ImageFeatureStore, collate, encode_examples
from unimp_bench.models.tokenization import PromptTokenizer
from unimp_bench.models.unimp import UniMP


@torch.no_grad()
def item_scores(
    model: UniMP,
    tokenizer: PromptTokenizer,
    store: ImageFeatureStore,
    prompts: Sequence[str],
    image_items: Sequence[Sequence[int]],
    max_length: int,
    batch_size: int = 32,
) -> np.ndarray:
    """[n_prompts, n_items] logits of every catalog item as the next token after each prompt."""
    model.eval()
    rows = []
    device = model.added_output.device
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        encoded = encode_examples(
            tokenizer,
            prompts[chunk],
            image_items[chunk],
            [[] for _ in prompts[chunk]],
            None,
            max_length,
        )
        batch = collate(encoded, tokenizer.pad_id).to(device)
        features, present = store.lookup(batch.image_items)
        select = torch.zeros_like(batch.task_mask)
        select[torch.arange(len(encoded), device=device), batch.last_prompt] = True
        rows.append(
            model(batch.input_ids, batch.attention_mask, features, present, select, "items").float().cpu()
        )
    return torch.cat(rows).numpy() if rows else np.zeros((0, model.vocabulary.num_items), dtype=np.float32)
