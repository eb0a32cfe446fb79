"""Content-grounded item rows (model.items): what an item's rows depend on, the gradient path, the ID
residual's dropout, the catalog chunks, and a trained run ranking the zero-shot held-out domain."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from helpers import SHRUNK_TINY_MODEL, invoke, tiny_train_args
from unimp_bench.data.contract import open_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.models.config import LanguageModelConfig, ModelConfig, VisionConfig
from unimp_bench.models.factory import build_model
from unimp_bench.models.item_content import catalog_chunks, chunk_text, fresh_items, seen_items
from unimp_bench.models.item_rows import ItemChunks
from unimp_bench.models.tokenization import PromptTokenizer, load_saved_tokenizer
from unimp_bench.models.unimp import GatedCrossAttentionBlock

BASE_VOCAB, NUM_ITEMS = 64, 6


def content_model(items: str = "content+id", **overrides):
    lm = LanguageModelConfig(hidden_size=32, layers=2, heads=4, intermediate_size=64, max_positions=128)
    vision = VisionConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2)
    config = ModelConfig(lm=lm, vision=vision, items=items, **overrides)
    model = build_model(config, BASE_VOCAB, NUM_ITEMS, seed=0).eval()
    with torch.no_grad():  # open the gates, as training does: at 0 no image reaches any token
        for module in model.modules():
            if isinstance(module, GatedCrossAttentionBlock):
                module.attention_gate.fill_(1.0)
                module.feed_forward_gate.fill_(1.0)
    return model


def catalog(model, seed: int = 0) -> ItemChunks:
    """Every item's chunk `[IMG] w w w [EOC]` (random words) and image."""
    generator = torch.Generator().manual_seed(seed)
    v = model.vocabulary
    words = torch.randint(0, BASE_VOCAB, (NUM_ITEMS, 3), generator=generator)
    ids = torch.cat(
        [torch.full((NUM_ITEMS, 1), v.image_id), words, torch.full((NUM_ITEMS, 1), v.end_of_chunk_id)], 1
    )
    pixels = torch.randn(NUM_ITEMS, 3, 16, 16, generator=generator)
    features = model.encode_images(pixels)[:, None]  # [N, 1, P, Dv]
    present = torch.ones(NUM_ITEMS, 1, dtype=torch.bool)
    return ItemChunks(torch.arange(NUM_ITEMS), ids, torch.ones_like(ids), features, present)


def fill_cache(model, chunks: ItemChunks) -> None:
    with torch.no_grad():
        model.items.content.copy_(model.encode_items(chunks))
    model.items.content_step = 0


def replaced(chunks: ItemChunks, item: int, **fields) -> ItemChunks:
    values = {name: getattr(chunks, name).clone() for name in ("items", "ids", "mask", "features", "present")}
    for name, value in fields.items():
        values[name][item] = value
    return ItemChunks(**values)


def item_scores(model, chunks: ItemChunks, history_item: int) -> torch.Tensor:
    """Logits over the catalog after `[CLS] [IMG] w <item_h> [EOC] w` (the catalog encoded first)."""
    fill_cache(model, chunks)
    v = model.vocabulary
    ids = torch.tensor([[v.user_id, v.image_id, 5, v.item_id(history_item), v.end_of_chunk_id, 9]])
    features = chunks.features[history_item][None]  # [1, 1, P, Dv]
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), features, torch.ones(1, 1, dtype=torch.bool))
    return logits[0, -1, v.item_start :]


def test_an_unseen_item_is_ranked_by_its_image_and_text_and_never_by_its_id():
    model = content_model()
    model.items.seen[:] = torch.tensor([True, True, True, False, False, False])
    chunks = catalog(model)
    unseen, seen = 4, 1
    before = item_scores(model, chunks, history_item=0)
    as_history = item_scores(model, chunks, history_item=unseen)

    # its ID rows (input and output residual) change: nothing moves, as a candidate or in a history
    with torch.no_grad():
        model.added_output[model.vocabulary.item_start - BASE_VOCAB + unseen] += torch.randn(32)
        model.added_input[model.vocabulary.item_start - BASE_VOCAB + unseen] += torch.randn(32)
    torch.testing.assert_close(item_scores(model, chunks, history_item=0), before)
    torch.testing.assert_close(item_scores(model, chunks, history_item=unseen), as_history)

    # its image or its words change: its score moves, and only its own (other rows are their content)
    other_image = chunks.features[5] + 3.0
    by_image = item_scores(model, replaced(chunks, unseen, features=other_image), history_item=0)
    other_words = torch.tensor([model.vocabulary.image_id, 40, 41, 42, model.vocabulary.end_of_chunk_id])
    by_words = item_scores(model, replaced(chunks, unseen, ids=other_words), history_item=0)
    for moved in (by_image, by_words):
        assert abs(float(moved[unseen] - before[unseen])) > 1e-4
        keep = [i for i in range(NUM_ITEMS) if i != unseen]
        torch.testing.assert_close(moved[keep], before[keep])

    # a seen item's ID residual is part of its rows
    with torch.no_grad():
        model.added_output[model.vocabulary.item_start - BASE_VOCAB + seen] += torch.randn(32)
    assert abs(float(item_scores(model, chunks, history_item=0)[seen] - before[seen])) > 1e-4


def test_an_unseen_history_item_enters_the_prompt_through_its_content():
    model = content_model()
    model.items.seen[:] = False
    chunks = catalog(model)
    before = item_scores(model, chunks, history_item=2)
    with torch.no_grad():
        model.added_input[model.vocabulary.item_start - BASE_VOCAB + 2] += torch.randn(32)  # its ID input row
    torch.testing.assert_close(item_scores(model, chunks, history_item=2), before)
    other_words = torch.tensor([model.vocabulary.image_id, 40, 41, 42, model.vocabulary.end_of_chunk_id])
    after = item_scores(model, replaced(chunks, 2, ids=other_words), history_item=2)
    assert (after - before).abs()[[0, 1, 3, 4, 5]].max() > 1e-4  # every candidate reads the history


def test_content_without_id_ignores_every_id_row_and_id_rows_start_at_zero():
    model = content_model("content")
    model.items.seen[:] = True
    start = model.vocabulary.item_start - BASE_VOCAB
    assert float(model.added_output[start:].abs().sum()) == 0.0
    chunks = catalog(model)
    before = item_scores(model, chunks, history_item=1)
    with torch.no_grad():
        model.added_output[start:] += torch.randn(NUM_ITEMS, 32)
        model.added_input[start:] += torch.randn(NUM_ITEMS, 32)
    torch.testing.assert_close(item_scores(model, chunks, history_item=1), before)


def test_fresh_items_carry_the_gradient_but_every_row_keeps_its_cached_value():
    """Training encodes the batch's items afresh for the gradient; the values stay the cache's, so a
    target (always in the batch) is never told apart from the other items by being fresher."""
    model = content_model(item_id_dropout=0.0)
    model.train()
    chunks = catalog(model)
    fill_cache(model, chunks)
    with torch.no_grad():  # the weights move on after the cache was filled: fresh encodings differ
        for parameter in model.lm.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    v = model.vocabulary
    ids = torch.tensor([[v.user_id, v.image_id, 5, v.item_id(0), v.end_of_chunk_id, 9]])
    inputs = (ids, torch.ones_like(ids), chunks.features[0][None], torch.ones(1, 1, dtype=torch.bool))
    fresh = ItemChunks(*(getattr(chunks, n)[[0, 3]] for n in ("items", "ids", "mask", "features", "present")))
    assert not torch.allclose(model.encode_items(fresh), model.items.content[[0, 3]], atol=1e-3)
    logits = model(*inputs, vocabulary="items", item_chunks=fresh)
    with torch.no_grad():
        cached_only = model(*inputs, vocabulary="items")
    torch.testing.assert_close(logits.detach(), cached_only)  # same values...
    logits[0, -1, 3].backward()  # ...and the gradient reaches the content path
    assert model.items.to_output.weight.grad.abs().sum() > 0
    assert model.items.to_input.weight.grad.abs().sum() > 0
    first_layer = next(p for n, p in model.lm.named_parameters() if "layers.0" in n and p.requires_grad)
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    assert not model.items.content.requires_grad


def test_the_id_residual_is_dropped_per_item_in_training_and_kept_for_seen_items_in_evaluation():
    model = content_model(item_id_dropout=0.5)
    model.items.seen[:] = torch.tensor([True, False] * 3)
    model.items.content_step = 0
    torch.manual_seed(0)
    model.train()
    keeps = torch.stack([model.items.view(None).keep for _ in range(200)])
    assert set(keeps.unique().tolist()) == {0.0, 2.0}  # inverted dropout: E[keep] = 1
    assert abs(float(keeps.mean()) - 1.0) < 0.1
    model.eval()
    assert model.items.view(None).keep.tolist() == [1.0, 0.0] * 3


def test_ranking_without_encoded_catalog_is_refused():
    model = content_model()
    ids = torch.tensor([[model.vocabulary.user_id, 5]])
    with pytest.raises(RuntimeError, match="never computed"):
        model(ids, torch.ones_like(ids))


def test_item_settings_are_checked():
    with pytest.raises(UnimpError, match="item_id_dropout"):
        ModelConfig(items="content+id", item_id_dropout=1.0)
    with pytest.raises(UnimpError, match="model.items"):
        ModelConfig(items="ids")


def test_seen_items_and_fresh_items():
    seen = seen_items([[0, 2], [2]], ["<item_4>", "a review"], 6)
    assert seen.tolist() == [True, False, True, False, True, False]
    ids = torch.tensor([[1, 12, 10, 12], [15, 3, 0, 0]])  # item_start 10
    assert fresh_items(ids, 10, limit=8).tolist() == [0, 2, 5]
    torch.manual_seed(0)
    assert len(fresh_items(ids, 10, limit=2)) == 2


def test_catalog_chunks_hold_the_item_text_without_its_token(synthetic_data, tmp_path):
    from unimp_bench.models.tokenization import AddedVocabulary, train_bpe_tokenizer

    dataset = open_dataset(synthetic_data)
    items = dataset.scan("items").sort("item_idx").collect()
    base = train_bpe_tokenizer([chunk_text(r) for r in items.iter_rows(named=True)], 300, tmp_path / "bpe")
    tokenizer = PromptTokenizer(base, AddedVocabulary(len(base), len(items)))
    chunks = catalog_chunks(dataset, tokenizer, max_tokens=12)
    v = tokenizer.vocabulary
    assert chunks.ids.shape[0] == len(items) and int(chunks.lengths.max()) <= 12
    for row in (0, len(items) - 1):
        ids = chunks.ids[row, : chunks.lengths[row]].tolist()
        assert ids[0] == v.image_id and ids[-1] == v.end_of_chunk_id
        assert not any(token >= v.item_start for token in ids)  # content only: no item token
    text = chunk_text(items.row(0, named=True))
    assert "<item_" not in text and text.startswith("[IMG] category") and text.endswith("[EOC]")
    assert load_saved_tokenizer(tmp_path / "bpe") is not None


@pytest.fixture(scope="module")
def content_run(synthetic_data, tmp_path_factory):
    """The tiny preset (content+id), 4 steps of recommendation, catalog re-encoded every 2 steps."""
    run = tmp_path_factory.mktemp("content") / "run"
    overrides = [*SHRUNK_TINY_MODEL, "model.item_refresh_every=2", "train.tasks=[recommendation]"]
    invoke(*tiny_train_args(synthetic_data, run, 4, overrides))
    return run


def test_a_trained_content_model_ranks_the_zero_shot_held_out_domain(synthetic_data, content_run, tmp_path):
    """The tiny preset (content+id) trains, records which items it saw (never a held-out-domain item),
    refreshes its catalog rows, and is scored on new_domain, where the ID-only ablation is not
    applicable."""
    from safetensors.torch import load_file

    run = content_run
    summary = json.loads((run / "logs" / "summary.json").read_text())
    assert summary["item_content_refreshes"] == 3  # at the start, after steps 2 and 4
    logged = [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]
    assert all("item_content_step" in record for record in logged)

    seen = load_file(str(run / "export" / "model.safetensors"))["items.seen"]
    dataset = open_dataset(synthetic_data)
    domains = dataset.scan("items").sort("item_idx").collect()["domain"]
    held_out = (domains == dataset.held_out_domain).to_numpy()
    assert seen.any() and not seen[torch.from_numpy(held_out)].any()

    out = tmp_path / "results"
    common = ["--data", str(synthetic_data), "--split", "new_domain", "--out", str(out), "--limit", "20"]
    invoke("eval", "--task", "recommendation", "--checkpoint", str(run), *common)
    result = json.loads(next(out.glob("UniMP*__new_domain__*.json")).read_text())
    assert "not_applicable" not in result["provenance"] and result["n_examples"] == 20
    predictions = pl.read_parquet(next((out / "predictions").glob("*new_domain*.parquet")))
    assert len(predictions) == 20

    id_run = tmp_path / "id_run"
    invoke(*tiny_train_args(synthetic_data, id_run, 1, [*SHRUNK_TINY_MODEL, "model.items=id"]))
    id_out = tmp_path / "id_results"
    common[common.index(str(out))] = str(id_out)
    invoke("eval", "--task", "recommendation", "--checkpoint", str(id_run), *common)
    result = json.loads(next(id_out.glob("UniMP*__new_domain__*.json")).read_text())
    assert "not applicable" in json.dumps(result["provenance"]) or "not_applicable" in result["provenance"]


def test_mismatched_images_reach_the_content_rows_of_exactly_the_chosen_share():
    import numpy as np

    from unimp_bench.models.item_content import CatalogChunks, item_chunks
    from unimp_bench.robustness import Perturbation, mismatched_catalog_images

    has_image = np.array([True, True, False, True, True, True])
    image_of = mismatched_catalog_images(has_image, Perturbation(mismatch_images=0.4, seed=1))
    moved = np.flatnonzero(image_of != np.arange(6))
    assert len(moved) == 2 and 2 not in moved  # round(0.4 x 5 items with an image)
    assert has_image[image_of[moved]].all() and (image_of[moved] != moved).all()  # another, with an image
    again = mismatched_catalog_images(has_image, Perturbation(mismatch_images=0.4, seed=1))
    assert (image_of == again).all()
    assert mismatched_catalog_images(has_image, Perturbation()) is None

    class Store:  # features [N, P, Dv]: item i's patch tokens are all i
        def lookup(self, image_items):
            features = image_items[..., None, None].float().expand(*image_items.shape, 2, 3)
            return features, torch.ones_like(image_items, dtype=torch.bool)

    chunks = CatalogChunks(torch.zeros(6, 3, dtype=torch.long), torch.full((6,), 3))
    items = torch.arange(6)
    read = item_chunks(chunks, Store(), items, "cpu", torch.as_tensor(image_of))
    assert read.features[:, 0, 0, 0].long().tolist() == image_of.tolist()
    assert read.items.tolist() == items.tolist()  # the rows still belong to the items themselves


def test_eval_perturbations_reach_the_catalog_content_rows(synthetic_data, content_run, tmp_path):
    """`eval --drop-text-attrs / --mismatch-images` on a content model perturb the catalog it encodes
    its item rows from, not only the prompts: the cached rows move (of exactly the chosen share of
    items for images), the result records the counts, and without a perturbation nothing moves."""
    import numpy as np

    from unimp_bench.models.export import load_exported, resolve_export
    from unimp_bench.models.item_content import catalog_texts_and_images
    from unimp_bench.models.predictor import ModelEvalSettings, UniMPPredictor
    from unimp_bench.robustness import Perturbation

    dataset = open_dataset(synthetic_data)
    counts, has_image = catalog_texts_and_images(dataset)

    def catalog_rows(perturbation: Perturbation):
        loaded = load_exported(resolve_export(content_run))
        with torch.no_grad():  # open the gates: after 4 steps the images barely reach any token
            for module in loaded.model.modules():
                if isinstance(module, GatedCrossAttentionBlock):
                    module.attention_gate.fill_(1.0)
                    module.feed_forward_gate.fill_(1.0)
        settings = ModelEvalSettings(perturbation=perturbation)
        predictor = UniMPPredictor(loaded, dataset, settings, "UniMP", show_progress=False)
        _ = predictor.reader  # encodes the catalog
        return loaded.model.items.content.clone(), predictor.config()

    plain, config = catalog_rows(Perturbation())
    again, _ = catalog_rows(Perturbation(seed=5))
    assert torch.equal(plain, again) and "catalog_images_swapped" not in config

    swapped, config = catalog_rows(Perturbation(mismatch_images=0.5, seed=1))
    moved = (swapped - plain).abs().amax(dim=1) > 1e-6
    assert int(moved.sum()) == config["catalog_images_swapped"] == round(0.5 * int(has_image.sum()))
    assert not moved[torch.from_numpy(~has_image)].any()

    dropped, config = catalog_rows(Perturbation(drop_text_attrs=1.0))
    assert config["catalog_attributes_dropped"] == config["catalog_attribute_slots"] == sum(counts)
    moved = (dropped - plain).abs().amax(dim=1) > 1e-6
    assert moved[torch.from_numpy(np.array(counts) > 0)].all()
    assert "catalog_attributes_dropped" in config and "catalog_images_swapped" not in config
