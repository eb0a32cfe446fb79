"""UniMP: a Flamingo-style vision-language recommender around any Hugging Face causal LM.

Read top to bottom:

1. `cross_attention_mask` decides which image each text token may look at.
2. `PerceiverResampler` turns the frozen vision tower's patch tokens of one image into a fixed number
   of visual tokens (learned latents attend to the patches).
3. `GatedCrossAttentionBlock` lets text tokens attend to those visual tokens; its output is scaled by
   tanh(gate) with the gates starting at 0, so at initialisation the LM computes exactly what it did
   before.
4. `CrossAttentionDecoderLayer` composes one such block in front of an unchanged decoder layer. The
   visual tokens of the current forward pass reach it through a `VisualContext` that `UniMP.forward`
   fills for the duration of that one call and always empties afterwards (not every supported family
   passes extra keyword arguments down to its layers: MPT does not).
5. `UniMP` embeds token ids (the LM's rows plus the added rows for [IMG]/[EOC]/[CLS], ratings and
   items), runs the chosen fusion and returns logits over the whole vocabulary, or over the item or
   rating rows only (ranking is one forward pass). With `model.items: content | content+id` the item
   rows are computed from each item's own chunk and image (models/item_rows.py): `encode_items` reads
   the chunks with the same fusion, `forward` reads the cached catalog rows (the batch's items, encoded
   afresh, carry the gradient).

Shapes: B batch, T text tokens, N images per example (padded), P patch tokens per image, L latents per
image, H the LM's hidden size, Dv the vision width, V the extended vocabulary.

Everything with side effects (loading weights, freezing, LoRA, DeepSpeed) happens in the factory and
the trainer; forward() only computes.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from unimp_bench.models.config import ModelConfig
from unimp_bench.models.item_rows import ContentItems, ItemChunks, ItemView
from unimp_bench.models.tokenization import AddedVocabulary

# ---------------------------------------------------------------------------------------------------
# 1. which image each token sees


def cross_attention_mask(
    input_ids: torch.Tensor, image_present: torch.Tensor, image_id: int, end_of_chunk_id: int, mode: str
) -> torch.Tensor:
    """[B, T, N] bool: may token t of example b attend to image n?

    The n-th [IMG] marker of an example belongs to its n-th image. An item chunk runs from its [IMG]
    marker to the next [EOC] marker, both included.
      exclusive: a token inside chunk n sees image n only; tokens outside every chunk see none.
      previous:  a token sees the latest image whose marker is at or before it (Flamingo's rule).
      all:       every token sees every image of its example.
      preceding: a token sees every image whose marker is at or before it (late fusion's rule: its
                 block reads the LM's output, where the positions that predict come after all items).
    Absent images (padding, items without a picture) are never visible.
    """
    batch, length = input_ids.shape
    images = image_present.shape[1]
    present = image_present[:, None, :]  # [B, 1, N]
    if mode == "all":
        return present.expand(batch, length, images)
    position = torch.arange(length, device=input_ids.device).expand(batch, length)
    is_image = input_ids == image_id
    image_number = torch.cumsum(is_image.long(), dim=1) - 1  # [B, T]: latest marker so far, -1 before any
    if mode == "preceding":
        numbers = torch.arange(images, device=input_ids.device)
        return (image_number[:, :, None] >= numbers) & present
    if mode == "previous":
        inside = image_number >= 0
    else:
        # inside a chunk when the latest [IMG] comes after the latest [EOC] strictly before this token;
        # pairing by position (not by counts) stays right when truncation cut a chunk in half
        none = torch.full_like(position, -1)
        last_image = torch.cummax(torch.where(is_image, position, none), dim=1).values
        last_end = torch.cummax(torch.where(input_ids == end_of_chunk_id, position, none), dim=1).values
        last_end_before = torch.cat([none[:, :1], last_end[:, :-1]], dim=1)
        inside = last_image > last_end_before
    numbers = torch.arange(images, device=input_ids.device)
    visible = (image_number[:, :, None] == numbers) & inside[:, :, None]  # [B, T, N]
    return visible & present


class VisualContext:
    """The visual tokens and mask of the forward pass in progress; empty outside of one."""

    def __init__(self) -> None:
        self.visual: torch.Tensor | None = None  # [B, N, L, Dv]
        self.mask: torch.Tensor | None = None  # [B, T, N]

    @contextlib.contextmanager
    def scope(self, visual: torch.Tensor, mask: torch.Tensor):
        self.visual, self.mask = visual, mask
        try:
            yield
        finally:
            self.visual, self.mask = None, None


# ---------------------------------------------------------------------------------------------------
# 2. perceiver resampler


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, dim * mult, bias=False)
        self.down = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(self.norm(x))))


class PerceiverAttention(nn.Module):
    """Latents attend to the patch tokens and to themselves (Flamingo's resampler attention)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # media [M, P, Dv], latents [M, L, Dv]
        latents_normed = self.norm_latents(latents)
        keys_from = torch.cat([self.norm_media(media), latents_normed], dim=1)  # [M, P+L, Dv]
        q = _split_heads(self.to_q(latents_normed), self.heads)  # [M, h, L, d]
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(keys_from).chunk(2, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, latents: int, depth: int, heads: int, head_dim: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, head_dim), FeedForward(dim)]) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features [B, N, P, Dv] -> visual tokens [B, N, L, Dv]
        batch, images = features.shape[:2]
        media = features.flatten(0, 1)  # [B*N, P, Dv]
        latents = self.latents.expand(media.shape[0], -1, -1)
        for attention, feed_forward in self.layers:
            latents = latents + attention(media, latents)
            latents = latents + feed_forward(latents)
        return self.norm(latents).view(batch, images, *latents.shape[1:])


# ---------------------------------------------------------------------------------------------------
# 3. gated cross-attention


class MaskedCrossAttention(nn.Module):
    def __init__(self, dim: int, visual_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(visual_dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, visual: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        # x [B, T, H], visual [B, N, L, Dv], visible [B, T, N] -> [B, T, H]
        latents = visual.shape[2]
        q = _split_heads(self.to_q(self.norm(x)), self.heads)  # [B, h, T, d]
        kv = self.to_kv(visual.flatten(1, 2).to(x.dtype))  # [B, N*L, 2*h*d]
        k, v = (_split_heads(t, self.heads) for t in kv.chunk(2, dim=-1))
        token_mask = visible.repeat_interleave(latents, dim=-1)  # [B, T, N*L]
        sees_any = token_mask.any(dim=-1)  # [B, T]
        # a row with nothing to see would softmax over nothing (NaN): let it see everything, then zero it
        safe_mask = token_mask | ~sees_any[..., None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask[:, None])
        out = out * sees_any[:, None, :, None].to(out.dtype)
        return self.to_out(_merge_heads(out))


class GatedCrossAttentionBlock(nn.Module):
    """x + tanh(a) * xattn(x) then x + tanh(b) * ff(x); a = b = 0 at initialisation (identity)."""

    def __init__(self, dim: int, visual_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.attention = MaskedCrossAttention(dim, visual_dim, heads, head_dim)
        self.attention_gate = nn.Parameter(torch.zeros(1))
        self.feed_forward = FeedForward(dim)
        self.feed_forward_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, visual: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        x = x + torch.tanh(self.attention_gate) * self.attention(x, visual, visible)
        return x + torch.tanh(self.feed_forward_gate) * self.feed_forward(x)


# ---------------------------------------------------------------------------------------------------
# 4. composing a block in front of an unchanged decoder layer


class CrossAttentionDecoderLayer(nn.Module):
    """Runs the gated cross-attention on the incoming hidden states, then the original layer with
    every argument the LM passed, and returns whatever that layer returns."""

    def __init__(self, cross_attention: GatedCrossAttentionBlock, decoder_layer: nn.Module, context):
        super().__init__()
        self.cross_attention = cross_attention
        self.decoder_layer = decoder_layer
        self.context = context  # a VisualContext shared with UniMP; holds data only during a forward

    def forward(self, *args, **kwargs):
        visual, mask = self.context.visual, self.context.mask
        if visual is not None:
            if args:
                args = (self.cross_attention(args[0], visual, mask), *args[1:])
            else:
                kwargs["hidden_states"] = self.cross_attention(kwargs["hidden_states"], visual, mask)
        return self.decoder_layer(*args, **kwargs)


def resolve_attribute(root: nn.Module, path: str):
    node = root
    for part in path.split("."):
        node = getattr(node, part)
    return node


# ---------------------------------------------------------------------------------------------------
# 5. the model


class UniMP(nn.Module):
    """lm: a Hugging Face causal LM; vision: an open_clip VisionTransformer returning patch tokens;
    decoder_layers: attribute path of the LM's decoder layer list (found by the factory)."""

    def __init__(
        self,
        lm: nn.Module,
        vision: nn.Module,
        config: ModelConfig,
        vocabulary: AddedVocabulary,
        decoder_layers: str,
    ):
        super().__init__()
        self.config = config
        self.vocabulary = vocabulary
        self.decoder_layers = decoder_layers
        self.lm = lm
        self.vision = vision
        hidden = lm.get_input_embeddings().embedding_dim
        visual_dim = vision.transformer.width
        base_rows = lm.get_input_embeddings().num_embeddings
        if base_rows != vocabulary.base_size or lm.get_output_embeddings().out_features != base_rows:
            raise ValueError("the added vocabulary must start right after the LM's embedding rows")

        # new rows for the added tokens: their own input AND output weights, so they learn even when the
        # LM (and its separate output head) stays frozen; initialised at the statistics of the LM's rows
        base_input = lm.get_input_embeddings().weight.detach().float()
        base_output = lm.get_output_embeddings().weight.detach().float()
        self.added_input = nn.Parameter(_rows_like(base_input, vocabulary.size))
        self.added_output = nn.Parameter(_rows_like(base_output, vocabulary.size))
        self.items = None
        if config.items != "id":
            # content rows; the item slice of the added rows becomes the ID residual, started at 0
            self.items = ContentItems(
                hidden,
                vocabulary.num_items,
                uses_id=config.items == "content+id",
                id_dropout=config.item_id_dropout,
                input_std=float(base_input.std()),
                output_std=float(base_output.std()),
            )
            with torch.no_grad():
                self.added_input[vocabulary.item_start - vocabulary.base_size :] = 0.0
                self.added_output[vocabulary.item_start - vocabulary.base_size :] = 0.0

        fusion = config.fusion
        self.resampler = None
        if fusion != "none":
            r = config.resampler
            self.resampler = PerceiverResampler(visual_dim, r.latents, r.depth, r.heads, r.head_dim)
        self.context = VisualContext()
        # positions come from the attention mask, so left-padded batches (generation) match right-padded
        # ones; MPT (ALiBi) has no position ids to pass
        self.takes_position_ids = "position_ids" in inspect.signature(lm.base_model.forward).parameters
        if fusion == "cross_attention":
            layers = resolve_attribute(lm, decoder_layers)
            for index in range(len(layers)):
                if (index + 1) % config.cross_attn_every == 0:
                    block = GatedCrossAttentionBlock(
                        hidden, visual_dim, config.cross_attn_heads, config.cross_attn_head_dim
                    )
                    layers[index] = CrossAttentionDecoderLayer(block, layers[index], self.context)
        if fusion == "late":
            self.late_block = GatedCrossAttentionBlock(
                hidden, visual_dim, config.cross_attn_heads, config.cross_attn_head_dim
            )
        if fusion in ("early", "inline"):
            self.visual_projection = nn.Linear(visual_dim, hidden, bias=False)
        if fusion == "inline":
            self.inline_gate = nn.Parameter(torch.zeros(1))

    # -- pieces -------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [M, 3, S, S] -> the frozen tower's patch tokens [M, P, Dv]."""
        _, tokens = self.vision(pixels.to(self.vision.conv1.weight.dtype))
        return tokens

    def embed(self, input_ids: torch.Tensor, items: ItemView | None = None) -> torch.Tensor:
        base = self.lm.get_input_embeddings()
        base_size = self.vocabulary.base_size
        is_added = input_ids >= base_size
        base_part = base(input_ids.clamp(max=base_size - 1))  # [B, T, H]
        added_part = F.embedding((input_ids - base_size).clamp(min=0), self.added_input)
        embeds = torch.where(is_added[..., None], added_part.to(base_part.dtype), base_part)
        if items is None:
            return embeds
        # content rows: the item tokens' embeddings come from their items' content (+ ID residual)
        is_item = input_ids >= self.vocabulary.item_start  # [B, T]
        item_idx = input_ids[is_item] - self.vocabulary.item_start  # [K]
        rows = self.items.input_rows(items, item_idx, self._item_slice(self.added_input))  # [K, H]
        return embeds.masked_scatter(is_item[..., None], rows.to(embeds.dtype))

    def _item_slice(self, added: torch.Tensor) -> torch.Tensor:
        """The item rows of an added-rows matrix: [num_items, H]."""
        return added[self.vocabulary.item_start - self.vocabulary.base_size :]

    def output(self, hidden: torch.Tensor, vocabulary: str, items: ItemView | None = None) -> torch.Tensor:
        """hidden [..., H] -> logits over `all` (V), `items` (num_items), `ratings` or `codes` rows."""
        added = self.added_output.to(hidden.dtype)
        start = self.vocabulary.base_size
        if items is not None and vocabulary in ("items", "all"):
            item_logits = self.items.logits(items, hidden.flatten(0, -2), self._item_slice(added))
            item_logits = item_logits.view(*hidden.shape[:-1], -1)
            if vocabulary == "items":
                return item_logits
            others = added[: self.vocabulary.item_start - start]  # markers, ratings and image codes
            return torch.cat([self.lm.get_output_embeddings()(hidden), hidden @ others.T, item_logits], -1)
        if vocabulary in ("items", "ratings", "codes"):
            return hidden @ added[self.vocabulary.added_rows(vocabulary)].T
        return torch.cat([self.lm.get_output_embeddings()(hidden), hidden @ added.T], dim=-1)

    def _decode(self, embeds: torch.Tensor, attention_mask: torch.Tensor, cache=None) -> torch.Tensor:
        """embeds [B, T_new, H]; attention_mask [B, T_all] covers the cached tokens too."""
        extra = {}
        # left padding (generation): count positions from each row's first real token, so a prompt
        # gets the positions it has right-padded (training, ranking), where the LM's default holds
        left_padded = cache is not None or bool((attention_mask[:, 0] == 0).any())
        if self.takes_position_ids and left_padded:
            first_real = attention_mask.long().argmax(dim=1, keepdim=True)  # [B, 1]
            steps = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            extra["position_ids"] = (steps - first_real).clamp(min=0)[:, -embeds.shape[1] :]
        out = self.lm.base_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=cache is not None,
            **extra,
        )
        return out.last_hidden_state

    # -- forward ------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        attention_mask: torch.Tensor,  # [B, T], 1 for real tokens
        image_features: torch.Tensor | None = None,  # [B, N, P, Dv] from encode_images
        image_present: torch.Tensor | None = None,  # [B, N] bool
        select: torch.Tensor | None = None,  # [B, T] bool: only these positions get logits
        vocabulary: str = "all",  # all | items | ratings
        cache=None,  # a transformers Cache holding earlier tokens (generation); it is updated in place
        sequence_ids: torch.Tensor | None = None,  # [B, T_all] every token so far, when cache is given
        item_chunks: ItemChunks | None = None,  # content rows: items to encode afresh, with gradient
    ) -> torch.Tensor:
        """Logits [B, T, V] (or [S, V] for the S selected positions; V shrinks for items/ratings).

        With `cache`, input_ids holds only the T new tokens, attention_mask and sequence_ids cover all
        T_all tokens (the image mask depends on where the [IMG]/[EOC] markers are in the whole text).
        With content rows, every item's rows hold its cached content vector; the items of
        `item_chunks` are also encoded in this pass, and the gradient reaches the content path through
        them (item_rows.ContentItems.view)."""
        items = None
        if self.items is not None:
            fresh = None
            if item_chunks is not None:
                fresh = (item_chunks.items, self.encode_items(item_chunks))
            items = self.items.view(fresh)
        hidden = self.hidden_states(
            self.embed(input_ids, items), input_ids, attention_mask, image_features, image_present,
            cache, sequence_ids,
        )  # fmt: skip
        if select is not None:
            hidden = hidden[select]  # [S, H]
        return self.output(hidden, vocabulary, items)

    def encode_items(self, chunks: ItemChunks) -> torch.Tensor:
        """Content vectors [M, H]: the last hidden state at each item chunk's [EOC], the chunk read
        with its image through the model's own fusion (every chunk token sees the item's image)."""
        hidden = self.hidden_states(
            self.embed(chunks.ids), chunks.ids, chunks.mask, chunks.features, chunks.present
        )  # [M, C, H]
        last = chunks.mask.sum(dim=1) - 1  # [M] the position of [EOC] (chunks are right-padded)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def hidden_states(
        self,
        embeds: torch.Tensor,  # [B, T, H] from embed
        input_ids: torch.Tensor,  # [B, T]
        attention_mask: torch.Tensor,
        image_features: torch.Tensor | None,
        image_present: torch.Tensor | None,
        cache=None,
        sequence_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The LM's last hidden states [B, T, H] with the configured fusion of the images."""
        fusion = self.config.fusion
        if cache is not None and fusion in ("early", "inline"):
            raise ValueError(f"fusion {fusion} recomputes the whole sequence; call it without a cache")
        uses_vision = fusion != "none" and image_features is not None and image_features.shape[1] > 0
        if not uses_vision:
            hidden = self._decode(embeds, attention_mask, cache)
        else:
            visual = self.resampler(image_features.to(self.resampler.latents.dtype))  # [B, N, L, Dv]
            visible = cross_attention_mask(
                input_ids if sequence_ids is None else sequence_ids,
                image_present,
                self.vocabulary.image_id,
                self.vocabulary.end_of_chunk_id,
                self.config.mask,
            )[:, -input_ids.shape[1] :]  # [B, T, N]: the rows of the new tokens
            if fusion == "cross_attention":
                with self.context.scope(visual, visible):
                    hidden = self._decode(embeds, attention_mask, cache)
            elif fusion == "late":
                # after the LM, the positions that predict lie outside every item chunk: with a
                # per-item mask they would see no image at all, so this block reads every earlier image
                every_earlier = cross_attention_mask(
                    input_ids if sequence_ids is None else sequence_ids,
                    image_present,
                    self.vocabulary.image_id,
                    self.vocabulary.end_of_chunk_id,
                    "preceding",
                )[:, -input_ids.shape[1] :]
                hidden = self.late_block(self._decode(embeds, attention_mask, cache), visual, every_earlier)
            elif fusion == "inline":
                # each [IMG] marker's embedding gets its own image (latents averaged, projected)
                pooled = self.visual_projection(visual.mean(dim=2)).to(embeds.dtype)  # [B, N, H]
                pooled = pooled * image_present[..., None].to(pooled.dtype)
                image_number = torch.cumsum(input_ids == self.vocabulary.image_id, dim=1) - 1  # [B, T]
                is_marker = (input_ids == self.vocabulary.image_id) & (image_number < pooled.shape[1])
                gathered = torch.gather(
                    pooled, 1, image_number.clamp(0, pooled.shape[1] - 1)[..., None].expand_as(embeds)
                )
                embeds = embeds + torch.tanh(self.inline_gate) * gathered * is_marker[..., None]
                hidden = self._decode(embeds, attention_mask)
            else:  # early: each image's projected visual tokens are inserted right after its [IMG]
                tokens = self.visual_projection(visual).to(embeds.dtype)  # [B, N, L, H]
                merged, merged_mask, text_at = interleave_images(
                    embeds, attention_mask, tokens, image_present, input_ids == self.vocabulary.image_id
                )
                hidden = torch.gather(
                    self._decode(merged, merged_mask), 1, text_at[..., None].expand_as(embeds)
                )  # [B, T, H]: the text positions back in their order
        return hidden


# ---------------------------------------------------------------------------------------------------
# helpers


def interleave_images(
    embeds: torch.Tensor,  # [B, T, H] the text's input embeddings
    attention_mask: torch.Tensor,  # [B, T]
    tokens: torch.Tensor,  # [B, N, L, H] each image's visual tokens, in input space
    image_present: torch.Tensor,  # [B, N] bool
    is_marker: torch.Tensor,  # [B, T] bool: the [IMG] markers; the n-th belongs to image n
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Early fusion's input: image n's L tokens right after the n-th [IMG] marker, so the LM reads
    each item's picture where the item is. Returns the merged embeddings [B, T + N*L, H], their
    attention mask (an absent image's tokens are masked) and the merged position of each text token
    [B, T].

    Text token t moves right by L for every marker before it; image n's tokens follow its marker.
    An image without a marker (fewer markers than images, e.g. after truncation) goes to the end, where
    no text token follows it, masked."""
    batch, length, hidden = embeds.shape
    images, latents = tokens.shape[1], tokens.shape[2]
    device = embeds.device
    marker_number = torch.cumsum(is_marker.long(), dim=1) - 1  # [B, T]
    counted = is_marker & (marker_number < images)  # markers beyond N images get no tokens
    before = torch.cumsum(counted.long(), dim=1) - counted.long()  # markers strictly before each token
    text_at = torch.arange(length, device=device) + latents * before  # [B, T]
    marker_at = torch.full((batch, images), -1, dtype=torch.long, device=device)  # merged position
    rows, columns = counted.nonzero(as_tuple=True)
    marker_at[rows, marker_number[rows, columns]] = text_at[rows, columns]
    numbers = torch.arange(images, device=device)
    has_marker = marker_at >= 0
    start = torch.where(has_marker, marker_at + 1, length + latents * numbers)  # [B, N]
    image_at = start[..., None] + torch.arange(latents, device=device)  # [B, N, L]
    total = length + images * latents
    merged = embeds.new_zeros(batch, total, hidden)
    merged.scatter_(1, text_at[..., None].expand(-1, -1, hidden), embeds)
    merged.scatter_(1, image_at.flatten(1)[..., None].expand(-1, -1, hidden), tokens.flatten(1, 2))
    merged_mask = attention_mask.new_zeros(batch, total)
    merged_mask.scatter_(1, text_at, attention_mask)
    visible = (image_present & has_marker)[..., None].expand(-1, -1, latents).flatten(1)
    merged_mask.scatter_(1, image_at.flatten(1), visible.to(attention_mask.dtype))
    return merged, merged_mask, text_at


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    # [B, T, h*d] -> [B, h, T, d]
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads).transpose(-2, -3)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    # [B, h, T, d] -> [B, T, h*d]
    x = x.transpose(-2, -3)
    return x.reshape(*x.shape[:-2], -1)


def _rows_like(weight: torch.Tensor, count: int) -> torch.Tensor:
    """`count` new rows drawn around the mean of `weight`'s rows with their typical spread."""
    mean = weight.mean(dim=0)
    std = weight.std(dim=0).mean().clamp(min=1e-3)
    noise = torch.randn(count, weight.shape[1])  # the factory seeds torch before building the model
    return (mean + noise * std / math.sqrt(2.0)).to(weight.dtype)
