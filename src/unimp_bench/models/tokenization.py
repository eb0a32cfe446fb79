"""Prompt text -> token ids: the LM's own tokenizer for words, one new id per special token.

The special tokens of the unified format ([IMG], [EOC], [CLS]), one token per rating level, one per
image code (a model that generates images) and one per catalog item are NOT added to the Hugging Face
tokenizer (a trie over a million item strings is slow and would have to be saved with every run).
Instead a prompt is cut at those markers with one regular expression; the words between them go
through the base tokenizer in one batched call and the markers map straight to ids placed after the
LM's embedding rows:

    base rows [0, base_size) | [IMG] [EOC] [CLS] | <rating_1> ... <rating_R> | <code_0> ... <code_K-1>
    | <item_0> ... <item_N-1>

so an item token is `item_start + item_idx`, the item rows of the output head are its last slice, and
a model without image codes (K = 0) has exactly the layout it had before they existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from unimp_bench.errors import UnimpError
from unimp_bench.prompts import END_OF_CHUNK_TOKEN, IMAGE_TOKEN, USER_TOKEN

MARKERS = (IMAGE_TOKEN, END_OF_CHUNK_TOKEN, USER_TOKEN)
MARKER_PATTERN = re.compile(r"\[IMG\]|\[EOC\]|\[CLS\]|<item_(\d+)>|<rating_(\d+)>|<code_(\d+)>")


@dataclass(frozen=True)
class AddedVocabulary:
    """Ids of the tokens UniMP adds to a language model, laid out after its `base_size` rows."""

    base_size: int
    num_items: int
    num_ratings: int = 5
    num_image_codes: int = 0  # the image tokenizer's codebook, for models that generate images

    @property
    def image_id(self) -> int:
        return self.base_size

    @property
    def end_of_chunk_id(self) -> int:
        return self.base_size + 1

    @property
    def user_id(self) -> int:
        return self.base_size + 2

    @property
    def rating_start(self) -> int:
        return self.base_size + len(MARKERS)

    @property
    def code_start(self) -> int:
        return self.rating_start + self.num_ratings

    @property
    def item_start(self) -> int:
        return self.code_start + self.num_image_codes

    @property
    def size(self) -> int:
        """Number of added rows."""
        return len(MARKERS) + self.num_ratings + self.num_image_codes + self.num_items

    @property
    def total(self) -> int:
        return self.base_size + self.size

    def added_rows(self, kind: str) -> slice:
        """Where the `ratings`, `codes` or `items` rows lie among the added rows."""
        first, end = {
            "ratings": (self.rating_start, self.code_start),
            "codes": (self.code_start, self.item_start),
            "items": (self.item_start, self.total),
        }[kind]
        return slice(first - self.base_size, end - self.base_size)

    def item_id(self, item_idx: int) -> int:
        return self.item_start + item_idx

    def rating_id(self, rating: int) -> int:
        return self.rating_start + rating - 1

    def code_id(self, code: int) -> int:
        return self.code_start + code


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    starts: list[int]  # character offset in the text of the piece each token came from


class PromptTokenizer:
    """Encodes prompts and targets of the unified format into ids of the extended vocabulary."""

    def __init__(self, base, vocabulary: AddedVocabulary):
        self.base = base
        self.vocabulary = vocabulary
        if base.eos_token_id is None:
            raise UnimpError("the tokenizer has no end-of-sequence token; UniMP needs one to end targets")
        self.eos_id = base.eos_token_id
        self.pad_id = base.pad_token_id if base.pad_token_id is not None else base.eos_token_id

    def _marker_id(self, match: re.Match) -> int:
        text = match.group(0)
        vocabulary = self.vocabulary
        if match.group(1) is not None:
            item = int(match.group(1))
            if item >= vocabulary.num_items:
                raise UnimpError(f"{text} is outside the model's catalog of {vocabulary.num_items} items")
            return vocabulary.item_id(item)
        if match.group(2) is not None:
            rating = int(match.group(2))
            if not 1 <= rating <= vocabulary.num_ratings:
                raise UnimpError(f"{text} is outside the rating scale 1..{vocabulary.num_ratings}")
            return vocabulary.rating_id(rating)
        if match.group(3) is not None:
            code = int(match.group(3))
            if code >= vocabulary.num_image_codes:
                raise UnimpError(f"{text} is outside the model's {vocabulary.num_image_codes} image codes")
            return vocabulary.code_id(code)
        return vocabulary.base_size + MARKERS.index(text)

    def encode_batch(self, texts: Sequence[str]) -> list[Encoded]:
        """Cut every text at its markers, tokenize all word pieces in one call, then reassemble."""
        plans: list[list[tuple[int, int | None, int]]] = []  # (start, marker id | None, piece index)
        pieces: list[str] = []
        for text in texts:
            plan = []
            cursor = 0
            for match in MARKER_PATTERN.finditer(text):
                self._add_words(text, cursor, match.start(), plan, pieces)
                plan.append((match.start(), self._marker_id(match), -1))
                cursor = match.end()
            self._add_words(text, cursor, len(text), plan, pieces)
            plans.append(plan)
        piece_ids = self.base(pieces, add_special_tokens=False)["input_ids"] if pieces else []
        encoded = []
        for plan in plans:
            ids: list[int] = []
            starts: list[int] = []
            for start, marker, piece in plan:
                new = [marker] if marker is not None else piece_ids[piece]
                ids += new
                starts += [start] * len(new)
            encoded.append(Encoded(ids, starts))
        return encoded

    @staticmethod
    def _add_words(text: str, begin: int, end: int, plan: list, pieces: list[str]) -> None:
        words = text[begin:end].strip()
        if words:
            plan.append((begin, None, len(pieces)))
            pieces.append(words)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids, markers and item/rating tokens written back in their prompt form."""
        vocabulary = self.vocabulary
        out: list[str] = []
        words: list[int] = []

        def flush() -> None:
            if words:
                out.append(self.base.decode(words, skip_special_tokens=True).strip())
                words.clear()

        for token in ids:
            token = int(token)
            if token < vocabulary.base_size:
                words.append(token)
                continue
            flush()
            if token >= vocabulary.item_start:
                out.append(f"<item_{token - vocabulary.item_start}>")
            elif token >= vocabulary.code_start:
                out.append(f"<code_{token - vocabulary.code_start}>")
            elif token >= vocabulary.rating_start:
                out.append(f"<rating_{token - vocabulary.rating_start + 1}>")
            else:
                out.append(MARKERS[token - vocabulary.base_size])
        flush()
        return " ".join(piece for piece in out if piece)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path):
    """A byte-level BPE tokenizer trained on `texts` (the tiny preset's LM has no pretrained one),
    saved in Hugging Face format to out_dir and returned as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["[PAD]", "[EOS]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="[EOS]", pad_token="[PAD]")
    wrapped.save_pretrained(str(out_dir))
    return wrapped


def load_saved_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UnimpError(f"no usable tokenizer in {folder}: {str(exc).splitlines()[0]}") from None
