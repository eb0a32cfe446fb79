"""Decoding with transformers' `generate()`: UniMP behind a thin GenerationMixin adapter, and logits
processors that keep beams on valid outputs.

`GenerationAdapter` owns nothing but a reference to the UniMP model; its forward returns the logits of
the last position over the whole extended vocabulary and keeps transformers' KV cache, so beam search,
greedy decoding, length caps and EOS handling are transformers' own. The image features travel as
model kwargs: generate() repeats them for every beam, and beams never move between examples, so a
row's images stay its own. Early and inline fusion put images into the input positions, so they run
without a cache (each step recomputes the whole sequence).

Processors (applied to the log-probabilities; with `renormalize_logits=True` the kept tokens are
renormalized, so a constrained beam's score is its log-probability among the allowed tokens):
  `ItemThenEnd`: step 1 one catalog item (optionally not one the user already had), then EOS.
  `DistinctCandidates`: items of the example's own candidate list, each at most once, then EOS.
  `BaseVocabularyOnly`: words only (no markers, item or rating tokens), for explanations.
  `ImageCodesOnly`: image codes only; with max_new_tokens = the grid's size, exactly one image.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, GenerationMixin, LogitsProcessor, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from unimp_bench.models.unimp import UniMP


class GenerationAdapter(PreTrainedModel, GenerationMixin):
    """transformers' generation loop around a UniMP (composition: the UniMP is not modified)."""

    # the adapter has no attention of its own; these flags only stop PreTrainedModel's init checks
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, unimp: UniMP, eos_id: int, pad_id: int):
        # a copy: PreTrainedModel's init writes attention settings into its config, the LM's stays as is
        super().__init__(copy.deepcopy(unimp.lm.config))
        self.unimp = unimp
        self.uses_cache = unimp.config.fusion not in ("early", "inline")
        self.generation_config = GenerationConfig(
            eos_token_id=eos_id, pad_token_id=pad_id, use_cache=self.uses_cache
        )

    @property
    def device(self) -> torch.device:
        return self.unimp.added_output.device

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs):
        kwargs.pop("next_sequence_length", None)
        kwargs.pop("position_ids", None)  # UniMP derives positions from the attention mask
        cached = past_key_values.get_seq_length() if past_key_values is not None else 0
        if attention_mask is None:  # generate() drops a mask without padding
            attention_mask = torch.ones_like(input_ids)
        return {
            "input_ids": input_ids[:, cached:],  # only the tokens the cache has not seen
            "sequence_ids": input_ids,
            "attention_mask": attention_mask,
            "past_key_values": past_key_values if self.uses_cache else None,
            "image_features": kwargs.get("image_features"),
            "image_present": kwargs.get("image_present"),
        }

    def forward(
        self,
        input_ids: torch.Tensor,  # [R, T_new], R = batch x beams
        attention_mask: torch.Tensor,  # [R, T_all]
        sequence_ids: torch.Tensor | None = None,  # [R, T_all]
        past_key_values=None,
        image_features: torch.Tensor | None = None,  # [R, N, P, Dv]
        image_present: torch.Tensor | None = None,  # [R, N]
        **_: object,
    ) -> CausalLMOutputWithPast:
        select = torch.zeros_like(input_ids, dtype=torch.bool)
        select[:, -1] = True  # only the last position's logits are needed to pick the next token
        logits = self.unimp(
            input_ids,
            attention_mask,
            image_features,
            image_present,
            select=select,
            vocabulary="all",
            cache=past_key_values,
            sequence_ids=sequence_ids if past_key_values is not None else None,
        )  # [R, V]
        return CausalLMOutputWithPast(logits=logits[:, None, :].float(), past_key_values=past_key_values)


def _row_example(rows: int, examples: int) -> torch.Tensor:
    """Example index of each generation row (generate() lays beams out example-major)."""
    return torch.arange(rows) // (rows // examples)


class ItemThenEnd(LogitsProcessor):
    """First generated token: a catalog item not in the row's banned set; afterwards: EOS only."""

    def __init__(self, prompt_length: int, item_start: int, eos_id: int, banned: torch.Tensor | None):
        self.prompt_length = prompt_length
        self.item_start = item_start
        self.eos_id = eos_id
        self.banned = banned  # [B, num_items] bool or None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        if input_ids.shape[1] == self.prompt_length:
            allowed[:, self.item_start :] = True
            if self.banned is not None:
                rows = _row_example(len(scores), len(self.banned)).to(scores.device)
                allowed[:, self.item_start :] &= ~self.banned.to(scores.device)[rows]
        else:
            allowed[:, self.eos_id] = True
        return scores.masked_fill(~allowed, -torch.inf)


class DistinctCandidates(LogitsProcessor):
    """Each step: one of the example's candidate tokens not generated yet, or EOS once at least one
    candidate was chosen (EOS is forced when none is left)."""

    def __init__(
        self, prompt_length: int, candidate_ids: Sequence[Sequence[int]], vocabulary: int, eos_id: int
    ):
        self.prompt_length = prompt_length
        self.eos_id = eos_id
        self.candidates = torch.zeros(len(candidate_ids), vocabulary, dtype=torch.bool)
        for row, ids in enumerate(candidate_ids):
            self.candidates[row, list(ids)] = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = _row_example(len(scores), len(self.candidates))
        allowed = self.candidates[rows].to(scores.device).clone()
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1]:
            allowed.scatter_(1, generated, False)
            allowed[:, self.eos_id] = True
        allowed[~allowed.any(dim=1), self.eos_id] = True
        return scores.masked_fill(~allowed, -torch.inf)


class BaseVocabularyOnly(LogitsProcessor):
    """Only the LM's own tokens (EOS among them): a review holds no markers, items or ratings."""

    def __init__(self, base_size: int):
        self.base_size = base_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.base_size :] = -torch.inf
        return scores


class ImageCodesOnly(LogitsProcessor):
    """Every generated token is an image code (EOS included among the banned), so a generation of
    max_new_tokens = G*G tokens is always exactly one image's code grid."""

    def __init__(self, code_start: int, code_end: int):
        self.code_start, self.code_end = code_start, code_end

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, : self.code_start] = -torch.inf
        scores[:, self.code_end :] = -torch.inf
        return scores
