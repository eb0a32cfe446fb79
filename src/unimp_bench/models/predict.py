"""Batched inference with a trained UniMP: next-token scores for ranking and rating prediction in one
forward pass, and decoding through transformers' generate() (models/generation.py).

Item ids are single tokens, so the logits at the last prompt token restricted to the item rows rank the
whole catalog exactly; the same holds for the rating rows. The evaluation engine builds on these; the
learning benchmark uses `next_token_scores` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unimp_bench.models.inputs import EncodedExample, ImageFeatureStore, collate, encode_examples
from unimp_bench.models.tokenization import PromptTokenizer
from unimp_bench.models.unimp import UniMP


@dataclass(frozen=True)
class PromptReader:
    """A trained UniMP ready to read prompts: the model, its tokenizer, the catalog's image features
    and the longest prompt it reads (longer ones keep their end)."""

    model: UniMP
    tokenizer: PromptTokenizer
    store: ImageFeatureStore
    max_length: int

    def encode(self, prompts: Sequence[str], image_items: Sequence[Sequence[int]]) -> list[EncodedExample]:
        return encode_examples(
            self.tokenizer, prompts, image_items, [[] for _ in prompts], None, self.max_length
        )


def _length_batches(encoded: Sequence[EncodedExample], batch_size: int) -> list[np.ndarray]:
    """Indices of the examples per batch, batches of similar length (less padding to compute)."""
    order = np.argsort([len(e.ids) for e in encoded], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def next_token_scores(
    reader: PromptReader,
    prompts: Sequence[str],
    image_items: Sequence[Sequence[int]],
    vocabulary: str,
    batch_size: int = 32,
) -> np.ndarray:
    """[n_prompts, n] logits of the next token after each prompt over the `items` or `ratings` rows."""
    model = reader.model
    model.eval()
    device = model.added_output.device
    width = model.vocabulary.num_items if vocabulary == "items" else model.vocabulary.num_ratings
    out = np.zeros((len(prompts), width), dtype=np.float32)
    encoded = reader.encode(prompts, image_items)
    for indices in _length_batches(encoded, batch_size):
        batch = collate([encoded[i] for i in indices], reader.tokenizer.pad_id).to(device)
        features, present = reader.store.lookup(batch.image_items)
        select = torch.zeros_like(batch.task_mask)
        select[torch.arange(len(indices), device=device), batch.last_prompt] = True
        logits = model(batch.input_ids, batch.attention_mask, features, present, select, vocabulary)
        out[indices] = logits.float().cpu().numpy()
    return out


def collate_left(
    examples: Sequence[EncodedExample], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded input_ids [B, T], attention_mask [B, T] and image_items [B, N] (-1 = padding): the
    layout generate() appends new tokens to."""
    length = max(len(e.ids) for e in examples)
    images = max((len(e.image_items) for e in examples), default=0)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    image_items = torch.full((len(examples), images), -1, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.ids)
        input_ids[row, length - n :] = torch.tensor(example.ids)
        attention_mask[row, length - n :] = 1
        if example.image_items:
            image_items[row, : len(example.image_items)] = torch.tensor(example.image_items)
    return input_ids, attention_mask, image_items


@torch.no_grad()
def generate(
    reader: PromptReader,
    prompts: Sequence[str],
    image_items: Sequence[Sequence[int]],
    processors: Callable[[int, slice], list],
    num_beams: int,
    num_return: int,
    max_new_tokens: int,
    renormalize: bool,
    batch_size: int = 8,
    top_k: int | None = None,
    seed: int = 0,
) -> list[list[list[int]]]:
    """For each prompt, `num_return` generated token sequences, best first, EOS and padding removed.

    `processors(prompt_length, rows)` returns the logits processors of one batch (`rows`: the indices
    of the batch's examples, for per-example constraints; batches group prompts of similar length).
    `top_k` samples from the k most likely tokens instead of searching; each batch draws from a
    generator seeded by (seed, its first example), so a sample does not depend on what ran before."""
    from transformers import LogitsProcessorList

    from unimp_bench.models.generation import GenerationAdapter

    model, tokenizer = reader.model, reader.tokenizer
    model.eval()
    adapter = GenerationAdapter(model, tokenizer.eos_id, tokenizer.pad_id)
    device = model.added_output.device
    out: list[list[list[int]]] = [[] for _ in prompts]
    encoded = reader.encode(prompts, image_items)
    for indices in _length_batches(encoded, batch_size):
        input_ids, attention_mask, items = collate_left([encoded[i] for i in indices], tokenizer.pad_id)
        features, present = reader.store.lookup(items.to(device))
        prompt_length = input_ids.shape[1]
        sampling = {"do_sample": False}
        if top_k is not None:
            torch.manual_seed(int(np.random.default_rng([seed, int(indices[0])]).integers(2**62)))
            sampling = {"do_sample": True, "top_k": top_k, "top_p": 1.0, "temperature": 1.0}
        sequences = adapter.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            image_features=features,
            image_present=present,
            logits_processor=LogitsProcessorList(processors(prompt_length, indices)),
            num_beams=num_beams,
            num_return_sequences=num_return,
            max_new_tokens=max_new_tokens,
            renormalize_logits=renormalize,
            **sampling,
        )
        generated = sequences[:, prompt_length:].cpu().tolist()
        for position, example in enumerate(indices):
            returned = generated[position * num_return : (position + 1) * num_return]
            out[example] = [_until_end(tokens, tokenizer.eos_id) for tokens in returned]
    return out


def _until_end(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens
