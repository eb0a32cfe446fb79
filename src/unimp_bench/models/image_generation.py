"""UniMP writes an image (paper section 2.4, eq. 9), in two stages.

1. Retrieval: the model's own personalized search instruction (the `search` task's first template
   over the example's history and query) ranks the catalog, and the top `--retrieved K` items other
   than the target (the task's `retrieved_images` by default) go into the prompt with their images.
   `--retrieval bm25` keeps the items BM25 over item text retrieved when the examples were built.
2. Generation: after that prompt the model writes exactly one grid of image codes, constrained to
   the code tokens, and the image tokenizer the run was trained with decodes them to pixels.

The predictions keep the retrieved items and the codes, so the two stages can be scored apart.

Decoding (eval --image-decoding): greedy, beam (--image-beams) or top-k sampling (--top-k,
--sample-seed; each batch draws from its own seeded generator, so a sample does not depend on the
batch before it).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from unimp_bench.errors import UnimpError
from unimp_bench.results import safe_name


def run_image_tokenizer(meta: dict, data: Path):
    """The image tokenizer a checkpoint's codes belong to (its export's provenance names it), checked
    against the weights hash it was trained with. The evaluated dataset's own tokenizer is used when
    its weights are those (so a dataset and its checkpoints can move together); otherwise the folder
    the checkpoint recorded."""
    from unimp_bench.image_tokens.catalog import catalog_codes
    from unimp_bench.image_tokens.tokenizer import load_image_tokenizer

    codes = meta.get("provenance", {}).get("image_codes")
    if not codes:
        raise UnimpError("this checkpoint was not trained on image_generation, so it has no image tokenizer")
    here = catalog_codes(data, required=False)
    if here is not None and here.tokenizer_sha256 == codes["tokenizer_sha256"]:
        folder = here.tokenizer_folder
    elif Path(codes["tokenizer_folder"]).is_dir():
        folder = Path(codes["tokenizer_folder"])
    else:
        raise UnimpError(
            f"the image tokenizer this checkpoint was trained with is neither {data}'s nor in "
            f"{codes['tokenizer_folder']}; evaluate on the dataset whose image codes it was trained on"
        )
    tokenizer = load_image_tokenizer(folder)
    if tokenizer.sha256() != codes["tokenizer_sha256"]:
        raise UnimpError(
            f"the image tokenizer in {folder} changed after this checkpoint was trained; "
            "its codes would decode to other images"
        )
    if tokenizer.grid != codes["grid"]:
        raise UnimpError(f"the image tokenizer in {folder} has another code grid")
    return tokenizer


def generate_codes(predictor, examples: pl.DataFrame, length: int) -> list[list[int]]:
    """Per example, `length` image codes (code indices, not token ids), by the predictor's settings."""
    from unimp_bench.models.generation import ImageCodesOnly

    vocabulary, settings = predictor.model.vocabulary, predictor.settings
    only_codes = [ImageCodesOnly(vocabulary.code_start, vocabulary.item_start)]
    beam = settings.image_decoding == "beam"
    outputs = predictor._generate(
        examples,
        lambda prompt_length, rows: only_codes,
        num_beams=settings.image_beams if beam else 1,
        num_return=1,
        max_new_tokens=length,
        renormalize=beam,
        top_k=settings.top_k if settings.image_decoding == "sample" else None,
        seed=settings.sample_seed,
    )
    codes = [[token - vocabulary.code_start for token in sequences[0]] for sequences in outputs]
    if any(len(row) != length or min(row) < 0 for row in codes):  # the processor makes this impossible
        raise UnimpError("image generation produced a sequence that is not one grid of image codes")
    return codes


def retrieve(predictor, examples: pl.DataFrame, count: int, flat: list[str]) -> list[list[int]]:
    """Stage one: per example, the `count` items the model's search instruction ranks highest for its
    history and query, the target left out (as the built examples' BM25 retrieval leaves it out)."""
    import numpy as np

    from unimp_bench.models.predict import next_token_scores
    from unimp_bench.prompts import Segment, history_segment, render
    from unimp_bench.tasks import registry

    template = registry().get("search").instructions[0]
    prompts = [
        render(template, {"history": history_segment(flat, history), "query": Segment(query)})
        for history, query in zip(examples["history"].to_list(), examples["query"].to_list())
    ]
    scores = next_token_scores(
        predictor.reader,
        [p.text for p in prompts],
        [list(p.image_items) for p in prompts],
        "items",
        predictor.settings.batch_size,
    ).astype(np.float64)
    if "target_item" in examples.columns:  # a request (`generate`) has no target to leave out
        scores[np.arange(len(examples)), examples["target_item"].to_numpy()] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")  # equal scores: lower item id first
    return order[:, :count].tolist()


def with_retrieved(task, examples: pl.DataFrame, retrieved: list[list[int]], flat: list[str]) -> pl.DataFrame:
    """The examples' prompts rendered again with other retrieved items (and their images)."""
    from unimp_bench.prompts import Segment, history_segment, item_segment, render

    prompts = []
    rows = zip(examples["instruction_id"], examples["history"], examples["query"], retrieved)
    for instruction, history, query, items in rows:
        segments = {
            "history": history_segment(flat, history),
            "query": Segment(query),
            "retrieved": item_segment(flat, items),
        }
        prompts.append(render(task.instructions[instruction], segments))
    return examples.with_columns(
        pl.Series("prompt", [p.text for p in prompts], dtype=pl.String),
        pl.Series(
            "image_items", [list(p.image_items) for p in prompts], dtype=examples.schema["image_items"]
        ),
        pl.Series("retrieved", retrieved, dtype=examples.schema["retrieved"]),
    )


def generate_images(predictor, task, examples: pl.DataFrame, root: Path, folder: str) -> pl.DataFrame:
    """The examples' images as PNGs under root/folder; the prediction frame names them relative to
    root (where the predictions file lies) and keeps the retrieved items and the codes."""
    settings = predictor.settings
    if settings.perturbation.active:  # retrieval renders the prompts again, which would undo them
        raise UnimpError("--drop-text-attrs and --mismatch-images do not apply to image_generation")
    tokenizer, flat = predictor.image_tokenizer, predictor.catalog_texts  # once per evaluation
    if with_retrieved(task, examples.head(1), examples["retrieved"].head(1).to_list(), flat)[
        "prompt"
    ].to_list() != (examples["prompt"].head(1).to_list()):
        raise UnimpError(
            "the examples' prompts were built with other prompt settings than the defaults image "
            "generation renders its retrieval prompts with; build the examples with the default settings"
        )
    count = settings.retrieved or task.retrieved_images
    if settings.retrieval == "model":
        examples = with_retrieved(task, examples, retrieve(predictor, examples, count, flat), flat)
    elif count != task.retrieved_images:
        raise UnimpError(f"--retrieved with --retrieval bm25 must be the examples' {task.retrieved_images}")
    codes = generate_codes(predictor, examples, tokenizer.sequence_length)
    return _write(tokenizer, examples, codes, root, folder)


def _write(
    tokenizer, examples: pl.DataFrame, codes: list[list[int]], root: Path, folder: str
) -> pl.DataFrame:
    from unimp_bench.image_tokens.catalog import write_png

    names = []
    for start in range(0, len(codes), 64):
        pixels = tokenizer.decode(torch.tensor(codes[start : start + 64]))
        for example_id, image in zip(examples["example_id"][start : start + 64].to_list(), pixels):
            name = f"{folder}/{safe_name(example_id)}.png"
            write_png(image, root / name)
            names.append(name)
    return pl.DataFrame(
        {
            "example_id": examples["example_id"],
            "image": names,
            "codes": codes,
            "retrieved": examples["retrieved"],
        },
        schema_overrides={"codes": pl.List(pl.Int32), "retrieved": pl.List(pl.Int32)},
    )


def generate_for_user(predictor, user: str, query: str, out: Path) -> dict:
    """`unimp-bench generate`: one image for a user (raw user_id or user_idx) and a free query, from
    the user's last max_history items; writes `out` (PNG) and returns what the JSON beside it holds."""
    from unimp_bench.image_tokens.catalog import write_png
    from unimp_bench.retrieval import BM25Ranker, BM25Settings, item_documents
    from unimp_bench.tasks import registry

    task = registry().get("image_generation")
    settings, dataset = predictor.settings, predictor.dataset
    if not query.strip():
        raise UnimpError("--query must not be empty")
    users = dataset.scan("users").select("user_idx", "user_id").collect()
    match = users.filter((pl.col("user_id") == user) | (pl.col("user_idx").cast(pl.String) == user))
    if match.is_empty():
        raise UnimpError(f"{dataset.root} has no user {user!r} (a raw user_id or a user_idx)")
    user_idx = int(match["user_idx"][0])
    interactions = dataset.scan("interactions").filter(pl.col("user_idx") == user_idx).sort("pos").collect()
    history = interactions["item_idx"].to_list()[-task.max_history :]
    flat = predictor.catalog_texts
    count = settings.retrieved or task.retrieved_images
    request = pl.DataFrame(
        {
            "example_id": [f"generate:{user_idx}"],
            "instruction_id": [0],
            "history": [history],
            "query": [query],
            "retrieved": [[]],
            "image_items": [[]],
        },
        schema_overrides={
            "history": pl.List(pl.Int32),
            "retrieved": pl.List(pl.Int32),
            "image_items": pl.List(pl.Int32),
        },
    )
    items = dataset.scan("items").sort("item_idx").collect()
    if settings.retrieval == "model":
        retrieved = retrieve(predictor, request, count, flat)
    else:
        retrieved = [BM25Ranker(item_documents(items, BM25Settings().fields)).top(query, count)]
    request = with_retrieved(task, request, retrieved, flat)
    tokenizer = predictor.image_tokenizer
    codes = generate_codes(predictor, request, tokenizer.sequence_length)
    write_png(tokenizer.decode(torch.tensor(codes))[0], out)

    def described(indices: list[int]) -> list[dict]:
        return [{"item_idx": i, "asin": items["asin"][i], "title": items["title"][i]} for i in indices]

    return {
        "user_idx": user_idx,
        "query": query,
        "history": described(history),
        "retrieval": settings.retrieval,
        "retrieved": described(retrieved[0]),
        "decoding": settings.image_decoding,
        "codes": codes[0],
        "prompt": request["prompt"][0],
    }
