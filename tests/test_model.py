"""The UniMP model on tiny random configurations: identity at initialisation, masks, vocabulary,
objective, inputs, export, decoder discovery and configuration errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unimp_bench.errors import UnimpError
from unimp_bench.models.config import LM_FAMILIES, LanguageModelConfig, ModelConfig, VisionConfig
from unimp_bench.models.factory import build_model, find_decoder_layers, inject_lora, set_trainable
from unimp_bench.models.tokenization import AddedVocabulary, PromptTokenizer, train_bpe_tokenizer
from unimp_bench.models.unimp import (
    CrossAttentionDecoderLayer,
    GatedCrossAttentionBlock,
    cross_attention_mask,
)
from unimp_bench.objective import LossConfig, token_losses, unimp_loss

BASE_VOCAB = 64
NUM_ITEMS = 6


def tiny_config(family: str = "gpt_neox", **overrides) -> ModelConfig:
    lm = LanguageModelConfig(
        family=family, hidden_size=32, layers=4, heads=4, intermediate_size=64, max_positions=128,
        freeze=overrides.pop("freeze", False),
    )  # fmt: skip
    vision = VisionConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2)
    return ModelConfig(lm=lm, vision=vision, **overrides)


def tiny_model(family: str = "gpt_neox", **overrides):
    return build_model(tiny_config(family, **overrides), BASE_VOCAB, NUM_ITEMS, seed=0).eval()


def open_gates(model) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GatedCrossAttentionBlock):
                module.attention_gate.fill_(1.0)
                module.feed_forward_gate.fill_(1.0)


def two_item_prompt(vocabulary: AddedVocabulary) -> tuple[torch.Tensor, dict[str, list[int]]]:
    """[CLS] [IMG] w w <item_0> [EOC] [IMG] w w <item_1> [EOC] w w w, with each part's positions."""
    v = vocabulary
    ids = [v.user_id, v.image_id, 5, 6, v.item_id(0), v.end_of_chunk_id]
    ids += [v.image_id, 7, 8, v.item_id(1), v.end_of_chunk_id, 9, 10, 11]
    parts = {"user": [0], "item0": [1, 2, 3, 4, 5], "item1": [6, 7, 8, 9, 10], "after": [11, 12, 13]}
    return torch.tensor([ids]), parts


def images(model, count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(count, 3, 16, 16, generator=generator)
    return model.encode_images(pixels)[None]  # [1, N, P, Dv]


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_each_family_is_wrapped_and_equals_the_bare_lm_at_initialisation(family):
    model = tiny_model(family)
    layers = model.lm.get_submodule(model.decoder_layers)
    wrapped = [isinstance(layer, CrossAttentionDecoderLayer) for layer in layers]
    assert wrapped == [False, True, False, True]  # before every 2nd decoder layer

    ids = torch.randint(0, BASE_VOCAB, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    features = images(model, 2).expand(2, -1, -1, -1)
    present = torch.ones(2, 2, dtype=torch.bool)
    with torch.no_grad():
        bare = model.lm(input_ids=ids, attention_mask=mask).logits
        ours = model(ids, mask, features, present)
    assert ours.shape == (2, 10, BASE_VOCAB + model.vocabulary.size)
    assert torch.equal(ours[..., :BASE_VOCAB], bare)  # gates at 0: exactly the LM

    # with the gates open, images reach the text of their item
    ids, parts = two_item_prompt(model.vocabulary)
    open_gates(model)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a = model(ids, mask, images(model, 2, seed=1), torch.ones(1, 2, dtype=torch.bool))
        b = model(ids, mask, images(model, 2, seed=2), torch.ones(1, 2, dtype=torch.bool))
    assert not torch.allclose(a[0, parts["item0"]], b[0, parts["item0"]])
    assert model.context.visual is None  # nothing stays on the layers after the call


def first_block_outputs(model, ids, features) -> torch.Tensor:
    """Hidden states right after the first gated cross-attention block, [T, H]."""
    captured = []
    layers = model.lm.get_submodule(model.decoder_layers)
    block = next(layer.cross_attention for layer in layers if isinstance(layer, CrossAttentionDecoderLayer))
    handle = block.register_forward_hook(lambda module, args, output: captured.append(output))
    with torch.no_grad():
        logits = model(
            ids, torch.ones_like(ids), features, torch.ones(1, features.shape[1], dtype=torch.bool)
        )
    handle.remove()
    return captured[0][0], logits[0]


def perturbed(features: torch.Tensor, image: int) -> torch.Tensor:
    changed = features.clone()
    changed[0, image] += torch.randn_like(changed[0, image])
    return changed


def test_exclusive_mask_keeps_each_items_tokens_on_its_own_image():
    model = tiny_model(mask="exclusive")
    open_gates(model)
    ids, parts = two_item_prompt(model.vocabulary)
    features = images(model, 2)
    base, base_logits = first_block_outputs(model, ids, features)
    for j, own, other in ((0, "item0", "item1"), (1, "item1", "item0")):
        hidden, logits = first_block_outputs(model, ids, perturbed(features, j))
        assert torch.equal(hidden[parts[other]], base[parts[other]])  # item i != j untouched
        assert not torch.allclose(hidden[parts[own]], base[parts[own]])  # item j moved
        assert torch.equal(hidden[parts["user"] + parts["after"]], base[parts["user"] + parts["after"]])
    # through the whole causal LM, a later image never reaches an earlier item's tokens
    _, logits = first_block_outputs(model, ids, perturbed(features, 1))
    assert torch.equal(logits[parts["item0"]], base_logits[parts["item0"]])


def test_previous_and_all_masks_behave_as_defined():
    model = tiny_model(mask="previous")
    open_gates(model)
    ids, parts = two_item_prompt(model.vocabulary)
    features = images(model, 2)
    base, _ = first_block_outputs(model, ids, features)
    hidden, _ = first_block_outputs(model, ids, perturbed(features, 1))
    assert torch.equal(hidden[parts["item0"]], base[parts["item0"]])
    assert not torch.allclose(hidden[parts["after"]], base[parts["after"]])  # text after sees image 1
    assert torch.equal(hidden[parts["user"]], base[parts["user"]])  # before any image: nothing

    model = tiny_model(mask="all")
    open_gates(model)
    base, _ = first_block_outputs(model, ids, features)
    hidden, _ = first_block_outputs(model, ids, perturbed(features, 1))
    assert not torch.allclose(hidden[parts["item0"]], base[parts["item0"]])
    assert not torch.allclose(hidden[parts["user"]], base[parts["user"]])


def test_cross_attention_mask_by_hand():
    IMG, EOC = 100, 101
    # a truncated input: it starts inside a chunk whose [IMG] fell off, then two whole items
    ids = torch.tensor([[7, EOC, 3, IMG, 4, EOC, 5, IMG, 6, EOC, 8]])
    present = torch.tensor([[True, False]])  # the second image is missing
    exclusive = cross_attention_mask(ids, present, IMG, EOC, "exclusive")[0].int().tolist()
    assert exclusive == [
        [0, 0],
        [0, 0],
        [0, 0],
        [1, 0],
        [1, 0],
        [1, 0],
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 0],
    ]
    previous = cross_attention_mask(ids, torch.tensor([[True, True]]), IMG, EOC, "previous")[0].int()
    assert previous[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert previous[:, 1].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert cross_attention_mask(ids, present, IMG, EOC, "all")[0].int().tolist() == [[1, 0]] * 11


@pytest.mark.parametrize("fusion", ["early", "late", "inline", "none"])
def test_fusion_ablations_run_and_only_vision_fusions_use_images(fusion):
    model = tiny_model(fusion=fusion)
    ids, parts = two_item_prompt(model.vocabulary)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GatedCrossAttentionBlock):
                module.attention_gate.fill_(1.0)
        if fusion == "inline":
            model.inline_gate.fill_(1.0)
        present = torch.ones(1, 2, dtype=torch.bool)
        a = model(ids, torch.ones_like(ids), images(model, 2, 1), present)
        b = model(ids, torch.ones_like(ids), images(model, 2, 2), present)
    assert a.shape == (1, ids.shape[1], BASE_VOCAB + model.vocabulary.size)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) == (fusion == "none")
    assert not any(isinstance(m, CrossAttentionDecoderLayer) for m in model.modules())


def test_late_fusion_lets_the_predicting_positions_see_the_history_images():
    """The late block sits after the LM, where the positions that predict the next item lie outside
    every item chunk: each image must reach them, and an image never reaches tokens before it."""
    model = tiny_model(fusion="late")
    open_gates(model)
    ids, parts = two_item_prompt(model.vocabulary)
    present = torch.ones(1, 2, dtype=torch.bool)
    features = images(model, 2)
    with torch.no_grad():
        base = model(ids, torch.ones_like(ids), features, present, vocabulary="items")[0]
        for image in (0, 1):
            moved = model(ids, torch.ones_like(ids), perturbed(features, image), present, vocabulary="items")[
                0
            ]
            assert not torch.allclose(moved[parts["after"]], base[parts["after"]])  # the prediction moves
            assert torch.equal(moved[parts["user"]], base[parts["user"]])  # before any image: nothing
        moved = model(ids, torch.ones_like(ids), perturbed(features, 1), present, vocabulary="items")[0]
        assert torch.equal(moved[parts["item0"]], base[parts["item0"]])  # a later image: never earlier


def test_early_fusion_puts_each_image_after_its_own_marker():
    from unimp_bench.models.unimp import interleave_images

    # by hand: [CLS] [IMG] a [EOC] [IMG] b [EOC] c with 2 latents per image, the second image absent
    embeds = torch.arange(7.0)[None, :, None]  # [1, 7, 1]: each text token's embedding is its index
    tokens = torch.tensor([[[[10.0], [11.0]], [[20.0], [21.0]]]])  # [1, 2, 2, 1]
    is_marker = torch.tensor([[False, True, False, False, True, False, False]])
    present = torch.tensor([[True, False]])
    merged, mask, text_at = interleave_images(
        embeds, torch.ones(1, 7, dtype=torch.long), tokens, present, is_marker
    )
    assert merged[0, :, 0].tolist() == [0, 1, 10, 11, 2, 3, 4, 20, 21, 5, 6]
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]  # the absent image is masked
    assert text_at[0].tolist() == [0, 1, 4, 5, 6, 9, 10]
    # a model: an image reaches the tokens after its marker only (causal LM), and the prediction
    model = tiny_model(fusion="early")
    ids, parts = two_item_prompt(model.vocabulary)
    present = torch.ones(1, 2, dtype=torch.bool)
    features = images(model, 2)
    with torch.no_grad():
        base = model(ids, torch.ones_like(ids), features, present)[0]
        moved = model(ids, torch.ones_like(ids), perturbed(features, 1), present)[0]
    assert torch.equal(moved[parts["user"] + parts["item0"]], base[parts["user"] + parts["item0"]])
    assert not torch.allclose(moved[parts["item1"][1:]], base[parts["item1"][1:]])
    assert not torch.allclose(moved[parts["after"]], base[parts["after"]])


def test_one_step_trains_new_rows_of_a_frozen_lm_and_nothing_frozen():
    model = tiny_model(freeze=True)
    model.train()
    assert model.lm.get_output_embeddings() is not model.lm.get_input_embeddings()  # GPT-NeoX: own head
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    ids, _ = two_item_prompt(model.vocabulary)
    logits = model(ids, torch.ones_like(ids), images(model, 2), torch.ones(1, 2, dtype=torch.bool))
    target = torch.tensor([model.vocabulary.item_id(3)])
    F.cross_entropy(logits[0, -1:], target).backward()
    optimizer.step()
    after = dict(model.named_parameters())
    for name, old in before.items():
        if name.startswith(("lm.", "vision.")) and ".cross_attention." not in name:
            assert torch.equal(after[name], old), f"{name} is frozen but changed"
    item0 = model.vocabulary.item_id(0) - model.vocabulary.base_size
    item3 = model.vocabulary.item_id(3) - model.vocabulary.base_size
    assert not torch.equal(after["added_input"][item0], before["added_input"][item0])  # used in the input
    assert not torch.equal(after["added_output"][item3], before["added_output"][item3])  # the target row
    unused = model.vocabulary.item_id(5) - model.vocabulary.base_size
    assert torch.equal(after["added_input"][unused], before["added_input"][unused])


def test_last_layer_keeps_the_item_and_rating_rows_learning_and_lm_embeddings_are_an_option():
    model = tiny_model(freeze=True)
    set_trainable(model, "last_layer")
    learning = {name for name, p in model.named_parameters() if p.requires_grad}
    last = f"lm.{model.decoder_layers}.{len(find_layers(model)) - 1}."
    assert "added_output" in learning and "added_input" not in learning
    assert learning - {"added_output"} and all(name.startswith(last) for name in learning - {"added_output"})
    set_trainable(model, "default", lm_embeddings=True)
    assert model.lm.get_input_embeddings().weight.requires_grad
    assert model.lm.get_output_embeddings().weight.requires_grad
    lm_layers = [
        p for n, p in model.named_parameters() if n.startswith("lm.") and ".layers." in n and "cross" not in n
    ]
    assert lm_layers and not any(p.requires_grad for p in lm_layers)  # the frozen LM's layers stay frozen


def find_layers(model):
    from unimp_bench.models.unimp import resolve_attribute

    return resolve_attribute(model.lm, model.decoder_layers)


def test_token_reweighting():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    targets = torch.tensor([0, 1, 0])
    plain = F.cross_entropy(logits, targets, reduction="none")
    assert torch.equal(token_losses(logits, targets, 0.0), plain)
    weighted = token_losses(logits, targets, 2.0)
    p = torch.exp(-plain)
    assert torch.allclose(weighted, (1 - p) ** 2 * plain)
    ratio = weighted / plain
    assert ratio[0] < ratio[1] < ratio[2]  # the most confident token is down-weighted most
    assert math.isclose(float(ratio[0]), (1 - math.exp(-float(plain[0]))) ** 2, rel_tol=1e-5)


def test_objective_combines_task_and_context_tokens_with_task_weights():
    logits = torch.zeros(4, 5)  # uniform: every token costs log 5
    targets = torch.tensor([0, 1, 2, 3])
    is_task = torch.tensor([True, True, False, True])
    example_of = torch.tensor([0, 0, 0, 1])
    config = LossConfig(gamma=0.0, context_weight=0.5, task_weights={"search": 3.0})
    parts = unimp_loss(logits, targets, is_task, example_of, ["recommendation", "search"], config)
    log5 = math.log(5)
    expected = (log5 + log5 + 3 * log5) / 3 + 0.5 * log5
    assert math.isclose(float(parts.total), expected, rel_tol=1e-6)
    assert parts.task_count == {"recommendation": 2, "search": 1}
    assert parts.context_count == 1
    without_context = unimp_loss(
        logits, targets, is_task, example_of, ["recommendation", "search"],
        LossConfig(gamma=0.0, context=False, task_weights={"search": 3.0}),
    )  # fmt: skip
    assert math.isclose(float(without_context.total), 5 * log5 / 3, rel_tol=1e-6)


def test_loss_normalization_and_a_differentiated_weight_by_hand():
    logits = torch.zeros(4, 5)  # uniform: every token costs log 5
    targets = torch.tensor([0, 1, 2, 3])
    is_task = torch.tensor([True, False, False, True])
    example_of = torch.tensor([0, 0, 0, 1])
    log5 = math.log(5)
    config = LossConfig(gamma=0.0, context_weight=0.5, task_weights={"search": 3.0}, normalize="all_tokens")
    parts = unimp_loss(logits, targets, is_task, example_of, ["recommendation", "search"], config)
    # eq. 7: one sum over the 4 tokens, context tokens at half weight
    assert math.isclose(float(parts.total), (log5 + 3 * log5 + 0.5 * 2 * log5) / 4, rel_tol=1e-6)
    separate = dataclasses.replace(config, normalize="per_part")
    per_part = unimp_loss(logits, targets, is_task, example_of, ["recommendation", "search"], separate)
    assert math.isclose(float(per_part.total), (log5 + 3 * log5) / 2 + 0.5 * log5, rel_tol=1e-6)
    with pytest.raises(UnimpError, match="loss.normalize must be one of per_part, all_tokens"):
        LossConfig(normalize="mean")
    # the (1-p)^gamma weight: a constant of the gradient by default, differentiated on request
    one = torch.tensor([[2.0, 0.0]], requires_grad=True)
    target = torch.tensor([0])
    gradients = {}
    for detach in (True, False):
        one.grad = None
        token_losses(one, target, 2.0, detach).sum().backward()
        gradients[detach] = one.grad.clone()
    p = torch.softmax(one.detach(), dim=1)[0, 0]
    nll = -torch.log(p)
    # d/dz0 of w * nll with w = (1-p)^2 constant: w * (p - 1)
    assert torch.isclose(gradients[True][0, 0], (1 - p) ** 2 * (p - 1), rtol=1e-5)
    # differentiated: w' * nll + w * nll', with dw/dz0 = 2(1-p) * -(p(1-p))
    expected = 2 * (1 - p) * -(p * (1 - p)) * nll + (1 - p) ** 2 * (p - 1)
    assert torch.isclose(gradients[False][0, 0], expected, rtol=1e-5)


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    texts = ["category Lipstick title Nova Classic Lipstick price 12.50 brand Nova", "I love it"] * 20
    return train_bpe_tokenizer(texts, 300, tmp_path_factory.mktemp("tok"))


def test_prompt_tokenizer_maps_markers_to_added_rows_and_back(bpe_tokenizer):
    vocabulary = AddedVocabulary(base_size=len(bpe_tokenizer), num_items=10)
    tokenizer = PromptTokenizer(bpe_tokenizer, vocabulary)
    text = "[CLS] [IMG] title Nova Classic <item_7> [EOC] Which one? <rating_4>"
    encoded = tokenizer.encode_batch([text])[0]
    assert encoded.ids[:2] == [vocabulary.user_id, vocabulary.image_id]
    assert vocabulary.item_id(7) in encoded.ids and vocabulary.rating_id(4) == encoded.ids[-1]
    assert all(
        i < vocabulary.base_size
        for i in encoded.ids[2:-1]
        if i not in (vocabulary.item_id(7), vocabulary.end_of_chunk_id)
    )
    assert tokenizer.decode(encoded.ids) == text
    with pytest.raises(UnimpError, match="outside the model's catalog"):
        tokenizer.encode_batch(["<item_10>"])
    with pytest.raises(UnimpError, match="rating scale"):
        tokenizer.encode_batch(["<rating_9>"])


def test_image_codes_are_added_tokens_between_ratings_and_items(bpe_tokenizer):
    """A model that generates images has one token per image code; its items stay the last rows, so
    a model without codes keeps the layout (and checkpoints) it had before."""
    plain = AddedVocabulary(base_size=len(bpe_tokenizer), num_items=10)
    vocabulary = AddedVocabulary(base_size=len(bpe_tokenizer), num_items=10, num_image_codes=16)
    assert plain.item_start == plain.rating_start + plain.num_ratings == plain.code_start
    assert vocabulary.item_start == vocabulary.code_start + 16 and vocabulary.total == plain.total + 16
    tokenizer = PromptTokenizer(bpe_tokenizer, vocabulary)
    text = "[CLS] [IMG] title Nova <item_7> [EOC] Draw it: <code_0> <code_15> <code_3>"
    ids = tokenizer.encode_batch([text])[0].ids
    assert ids[-3:] == [vocabulary.code_id(0), vocabulary.code_id(15), vocabulary.code_id(3)]
    assert vocabulary.item_id(7) in ids and tokenizer.decode(ids) == text
    with pytest.raises(UnimpError, match="outside the model's 16 image codes"):
        tokenizer.encode_batch(["<code_16>"])
    with pytest.raises(UnimpError, match="outside the model's 0 image codes"):
        PromptTokenizer(bpe_tokenizer, plain).encode_batch(["<code_0>"])

    model = build_model(tiny_config(), BASE_VOCAB, NUM_ITEMS, seed=0, num_image_codes=16).eval()
    v = model.vocabulary
    hidden = torch.randn(2, 3, model.lm.get_input_embeddings().embedding_dim)
    every = model.output(hidden, "all")
    assert every.shape[-1] == v.total
    for kind, start, end in (
        ("codes", v.code_start, v.item_start),
        ("ratings", v.rating_start, v.code_start),
        ("items", v.item_start, v.total),
    ):
        assert torch.allclose(model.output(hidden, kind), every[..., start:end])
    assert model.output(hidden, "codes").shape[-1] == 16 and model.output(hidden, "ratings").shape[-1] == 5


def test_encoded_examples_mark_target_and_history_tokens_and_truncate_whole_images(bpe_tokenizer):
    from unimp_bench.models.inputs import collate, encode_examples

    vocabulary = AddedVocabulary(base_size=len(bpe_tokenizer), num_items=10)
    tokenizer = PromptTokenizer(bpe_tokenizer, vocabulary)
    first, second = "[IMG] title Nova <item_1> [EOC]", "[IMG] title Classic <item_2> [EOC]"
    prompt = f"[CLS] {first} {second} Which one next?"
    spans = [[6, 6 + len(first)], [7 + len(first), 7 + len(first) + len(second)]]
    assert prompt[spans[1][0] : spans[1][1]] == second
    full = encode_examples(tokenizer, [prompt], [[1, 2]], [spans], ["<item_3>"], max_length=64)[0]
    ids = full.ids
    assert ids[-2:] == [vocabulary.item_id(3), tokenizer.eos_id]
    assert [ids[t + 1] for t in full.task_positions] == [vocabulary.item_id(3), tokenizer.eos_id]
    predicted = [ids[t + 1] for t in full.context_positions]
    assert vocabulary.image_id not in predicted  # the [IMG] marker is not reconstructed
    assert predicted.count(vocabulary.item_id(1)) == 1 and predicted.count(vocabulary.end_of_chunk_id) == 2
    assert vocabulary.user_id not in predicted and all(
        ids[t + 1] != ids[-3] for t in full.context_positions[-1:]
    )

    # cut so that the first item's [IMG] falls off: its image goes too, the second stays paired
    short = encode_examples(tokenizer, [prompt], [[1, 2]], [spans], ["<item_3>"], max_length=len(ids) - 2)[0]
    assert short.truncated and short.image_items == [2]
    assert short.ids[-2:] == [vocabulary.item_id(3), tokenizer.eos_id]
    batch = collate([full, short], tokenizer.pad_id)
    assert batch.image_items.tolist() == [[1, 2], [2, -1]]
    assert batch.attention_mask.sum(1).tolist() == [len(ids), len(ids) - 2]
    assert batch.next_tokens[0, full.task_positions[0]] == vocabulary.item_id(3)


def test_export_round_trip_gives_identical_logits(tmp_path, bpe_tokenizer):
    from unimp_bench.models.export import LoraSettings, export_model, load_exported

    tokenizer_dir = tmp_path / "tokenizer"
    bpe_tokenizer.save_pretrained(str(tokenizer_dir))
    config = tiny_config()
    model = build_model(config, len(bpe_tokenizer), NUM_ITEMS, seed=3).eval()
    inject_lora(model, 2, 4, 0.0, ())
    set_trainable(model, "lora")
    open_gates(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    changed = {n for n, p in model.named_parameters() if p.requires_grad}
    export_model(
        model, tmp_path / "export", tokenizer_dir, changed, LoraSettings(2, 4, 0.0, ()), {"run": "test"}
    )
    loaded = load_exported(tmp_path / "export")
    ids, _ = two_item_prompt(model.vocabulary)
    features, present = images(model, 2), torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(ids, torch.ones_like(ids), features, present),
                           loaded.model(ids, torch.ones_like(ids), features, present))  # fmt: skip
    assert loaded.meta["provenance"] == {"run": "test"}
    (tmp_path / "export" / "unimp.json").write_text("{")
    with pytest.raises(UnimpError, match="not valid JSON"):
        load_exported(tmp_path / "export")


def test_an_export_keeps_its_image_code_rows(bpe_tokenizer, tmp_path):
    from unimp_bench.models.export import export_model, load_exported

    tokenizer_dir = tmp_path / "tokenizer"
    bpe_tokenizer.save_pretrained(str(tokenizer_dir))
    model = build_model(tiny_config(), len(bpe_tokenizer), NUM_ITEMS, seed=3, num_image_codes=16).eval()
    export_model(model, tmp_path / "export", tokenizer_dir, set(), None, {"run": "test"})
    loaded = load_exported(tmp_path / "export").model
    assert loaded.vocabulary == model.vocabulary and loaded.vocabulary.num_image_codes == 16
    rows = model.vocabulary.added_rows("codes")
    assert torch.equal(loaded.added_output[rows], model.added_output[rows])


def test_decoder_layer_discovery_override_and_errors():
    model = tiny_model("llama")
    assert find_decoder_layers(model.lm, None) == "model.layers"
    assert find_decoder_layers(model.lm, "model.layers") == "model.layers"
    with pytest.raises(UnimpError, match="no attribute path"):
        find_decoder_layers(model.lm, "model.blocks")
    with pytest.raises(UnimpError, match="not a non-empty list"):
        find_decoder_layers(model.lm, "model.norm")
    model.lm.config.model_type = "mystery"
    with pytest.raises(UnimpError, match="set model.lm.decoder_layers"):
        find_decoder_layers(model.lm, None)


def test_absent_pretrained_weights_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    lm = LanguageModelConfig(source="pretrained", name="togethercomputer/RedPajama-INCITE-Instruct-3B-v1",
                             tokenizer="pretrained")  # fmt: skip
    with pytest.raises(UnimpError, match="huggingface-cli download togethercomputer/RedPajama"):
        build_model(ModelConfig(lm=lm), 10, 3, seed=0)
    from unimp_bench.models.factory import build_vision_tower

    with pytest.raises(UnimpError, match="not in the Hugging Face cache"):
        build_vision_tower(VisionConfig(source="pretrained", model="ViT-L-14", pretrained="openai"))


def test_model_config_rejects_bad_values():
    with pytest.raises(UnimpError, match="model.mask"):
        ModelConfig(mask="sideways")
    with pytest.raises(UnimpError, match="model.fusion"):
        ModelConfig(fusion="blend")
    with pytest.raises(UnimpError, match="model.lm.name"):
        LanguageModelConfig(source="pretrained")


def test_presets_parse(tmp_path):
    from unimp_bench.training.config import load_run_config

    repo = Path(__file__).resolve().parents[1]
    paper = load_run_config(repo / "configs" / "paper.yaml")
    assert paper.model.lm.name == "togethercomputer/RedPajama-INCITE-Instruct-3B-v1"
    assert paper.model.lm.freeze and paper.model.vision.model == "ViT-L-14"
    assert (paper.train.lr, paper.train.grad_accum, paper.train.epochs, paper.train.precision) == (
        2e-4, 2, 10.0, "bf16",
    )  # fmt: skip
    assert paper.train.warmup_ratio == 0.01 and paper.train.schedule == "cosine"
    assert paper.train.micro_batch * paper.train.grad_accum == 24
    assert (paper.train.strategy, paper.train.efficient) == ("multitask_then_efficient", "last_layer")
    assert paper.loss.normalize == "all_tokens"
    # an ablation lays over any preset: the paper's model without vision, everything else the paper's
    ablated = load_run_config(Path("paper"), ["train.epochs=1"], ablation="no_vision")
    assert ablated.model.fusion == "none" and ablated.model.lm == paper.model.lm and ablated.train.epochs == 1
    assert dataclasses.replace(ablated.model, fusion="cross_attention") == paper.model
    with pytest.raises(UnimpError, match="unknown ablation 'no_brain'"):
        load_run_config(Path("paper"), ablation="no_brain")
    for path in sorted((repo / "configs").rglob("*.yaml")):
        load_run_config(path)


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2", "mpt", "opt"])
@pytest.mark.parametrize("mask", ["exclusive", "previous"])
def test_cached_decoding_and_left_padding_give_the_logits_of_a_full_pass(family, mask):
    """Generation feeds one token at a time through the KV cache, left-padded: every step's logits must
    equal those of one full right-padded pass, images (and which tokens see them) included."""
    from transformers import DynamicCache

    model = tiny_model(family, mask=mask)
    open_gates(model)
    ids, _ = two_item_prompt(model.vocabulary)
    features = images(model, 2, seed=4)
    present = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        full = model(ids, torch.ones_like(ids), features, present)[0]  # [T, V]
        pad = 3  # left padding, as generate() lays prompts out
        padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), ids], dim=1)
        mask_all = torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones_like(ids)], dim=1)
        prompt = 8 + pad
        cache = DynamicCache(config=model.lm.config)
        steps = [
            model(
                padded[:, :prompt],
                mask_all[:, :prompt],
                features,
                present,
                cache=cache,
                sequence_ids=padded[:, :prompt],
            )[0, pad:]
        ]
        for t in range(prompt, padded.shape[1]):
            step = model(
                padded[:, t : t + 1],
                mask_all[:, : t + 1],
                features,
                present,
                cache=cache,
                sequence_ids=padded[:, : t + 1],
            )
            steps.append(step[0])
    torch.testing.assert_close(torch.cat(steps), full, rtol=1e-4, atol=1e-4)


# what each shipped ablation must build: the model or loss it names, and nothing else changed
ABLATIONS = {
    "no_vision": lambda m, loss: m.resampler is None and m.config.fusion == "none",
    "early_fusion": lambda m, loss: hasattr(m, "visual_projection") and not hasattr(m, "inline_gate"),
    "late_fusion": lambda m, loss: hasattr(m, "late_block"),
    "no_cross_attention": lambda m, loss: hasattr(m, "inline_gate"),
    "no_exclusive_mask": lambda m, loss: m.config.mask == "all",
    "previous_mask": lambda m, loss: m.config.mask == "previous",
    "no_context": lambda m, loss: not loss.context and loss.gamma > 0,
    "no_reweighting": lambda m, loss: loss.context and loss.gamma == 0,
    "no_context_and_reweighting": lambda m, loss: not loss.context and loss.gamma == 0,
    "id_items": lambda m, loss: m.items is None and m.config.items == "id",
    "content_items": lambda m, loss: m.items is not None and not m.items.uses_id,
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_builds_the_model_it_names(name):
    from helpers import SHRUNK_TINY_MODEL
    from unimp_bench.training.config import load_run_config

    tiny = load_run_config(Path("tiny"), SHRUNK_TINY_MODEL)
    config = load_run_config(Path(f"ablations/{name}"), SHRUNK_TINY_MODEL)
    model = build_model(config.model, BASE_VOCAB, NUM_ITEMS, seed=0)
    assert ABLATIONS[name](model, config.loss)
    crossing = any(isinstance(m, CrossAttentionDecoderLayer) for m in model.modules())
    assert crossing == (config.model.fusion == "cross_attention")
    changed = {
        key
        for section in ("model", "loss")
        for key, value in vars(getattr(config, section)).items()
        if value != getattr(getattr(tiny, section), key)
    }
    assert changed and changed <= {"fusion", "mask", "context", "gamma", "items"}  # only what it names
    assert config.train == tiny.train


def test_every_shipped_ablation_says_what_it_builds():
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "ablations").glob("*.yaml")}
    assert shipped == set(ABLATIONS)
