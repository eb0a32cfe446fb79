"""The image tokenizer (diffusers VQModel) and the catalog's cached image codes: training through the
CLI, the cache's checks, decoding, pretrained folders, and the reconstruction scores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import invoke
from unimp_bench.cli import app
from unimp_bench.errors import UnimpError
from unimp_bench.image_tokens.catalog import catalog_codes, tokens_folder
from unimp_bench.image_tokens.tokenizer import (
    ImageTokenizer,
    ImageTokenizerConfig,
    build_vq,
    load_image_tokenizer,
    reconstruction_quality,
)

# 16 px, one halving: an 8 x 8 grid of 16 codes, a few seconds on CPU
SMALL = ["--resolution", "16", "--channels", "32,32", "--codebook-size", "16", "--batch-size", "8"]


def fails(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def tokenized(synthetic_data, tmp_path_factory):
    """A copy of the synthetic dataset with a tokenizer trained 3 steps and the catalog encoded."""
    data = tmp_path_factory.mktemp("tokens") / "data"
    shutil.copytree(synthetic_data, data)
    output = invoke("tokenizer", "train", data, "--steps", "3", *SMALL)
    assert "held-out PSNR" in output and "8x8 codes" in output
    return data


def test_train_caches_every_catalog_image_as_a_grid_of_codes(tokenized):
    manifest = json.loads((tokens_folder(tokenized) / "manifest.json").read_text())
    dataset_manifest = json.loads((tokenized / "manifest.json").read_text())
    assert manifest["dataset_content_hash"] == dataset_manifest["content_hash"]
    assert manifest["tokenizer"]["grid"] == 8 and manifest["tokenizer"]["trained_here"]
    assert manifest["items_with_codes"] == dataset_manifest["images"]["with_image"]
    quality = manifest["quality"]
    assert quality["images"] == 12  # ceil(0.1 x 120 catalog images) kept out of training
    assert {"psnr", "ssim", "mean_colour"} <= set(quality)

    codes = catalog_codes(tokenized)
    assert codes.sequence_length == 64 and codes.codebook_size == 16
    present = [c for c in codes.codes if c is not None]
    assert len(present) == manifest["items_with_codes"]
    assert all(len(c) == 64 and all(0 <= v < 16 for v in c) for c in present)
    description = json.loads((codes.tokenizer_folder / "unimp_tokenizer.json").read_text())
    assert description["train_images"] + description["held_out_images"] == len(present)


def test_same_images_and_seed_give_the_same_tokenizer_and_codes(tokenized, tmp_path):
    again = tmp_path / "again"
    invoke("tokenizer", "train", tokenized, "--out", again, "--steps", "3", *SMALL)
    first = (tokens_folder(tokenized) / "tokenizer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (again / "diffusion_pytorch_model.safetensors").read_bytes() == first
    # what else the weights depend on (the thread count orders the float sums) is recorded with them
    trained_with = json.loads((again / "unimp_tokenizer.json").read_text())["trained_with"]
    assert trained_with == {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    # training wrote the codes of `again` into the dataset; put the module's tokenizer back
    invoke("tokenizer", "encode", tokenized)
    assert catalog_codes(tokenized).tokenizer_folder == tokens_folder(tokenized) / "tokenizer"


def test_decode_writes_an_item_reconstruction_and_checks_the_codes(tokenized, tmp_path):
    from PIL import Image

    out = tmp_path / "item.png"
    invoke("tokenizer", "decode", tokenized, "--item", "0", "--out", out)
    with Image.open(out) as image:
        assert image.size == (16, 16) and image.mode == "RGB"
    codes = ",".join(["3"] * 64)
    invoke("tokenizer", "decode", tokenized, "--codes", codes, "--out", tmp_path / "codes.png")
    assert "decodes 64 codes between 0 and 15, got 3 codes" in fails(
        "tokenizer", "decode", tokenized, "--codes", "1,2,3", "--out", tmp_path / "x.png"
    )
    assert "has no item 'nope'" in fails("tokenizer", "decode", tokenized, "--item", "nope", "--out", out)
    assert "exactly one of --item and --codes" in fails("tokenizer", "decode", tokenized, "--out", out)


def test_stale_codes_and_changed_tokenizers_are_refused(tokenized, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tokenized, data)
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["content_hash"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UnimpError, match="belong to another version"):
        catalog_codes(data)

    codes = catalog_codes(tokenized)
    weights = codes.tokenizer_folder / "diffusion_pytorch_model.safetensors"
    original = weights.read_bytes()
    try:
        vq = build_vq(ImageTokenizerConfig(resolution=16, channels=(32, 32), codebook_size=16), seed=9)
        vq.save_pretrained(codes.tokenizer_folder, safe_serialization=True)
        with pytest.raises(UnimpError, match="changed after the catalog was encoded"):
            codes.tokenizer()
    finally:
        weights.write_bytes(original)


def test_pretrained_folders_load_from_safetensors_only(synthetic_data, tmp_path):
    assert "does not exist; download a diffusers VQModel" in " ".join(
        str(pytest.raises(UnimpError, load_image_tokenizer, tmp_path / "absent").value).split()
    )
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UnimpError, match="only safetensors weights are loaded"):
        load_image_tokenizer(pickled)

    # a diffusers folder without our description: read at its config's sample_size
    pretrained = tmp_path / "pretrained"
    build_vq(ImageTokenizerConfig(resolution=16, channels=(32, 32), codebook_size=16), 1).save_pretrained(
        pretrained, safe_serialization=True
    )
    assert load_image_tokenizer(pretrained).resolution == 16
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    assert "has no image tokenizer yet" in fails("tokenizer", "encode", data)
    manifest = json.loads(invoke("tokenizer", "encode", data, "--tokenizer", pretrained))
    assert not manifest["tokenizer"]["trained_here"]
    assert manifest["quality"]["on"].startswith("a sample of the catalog")


def test_reconstruction_scores_match_a_hand_computed_psnr():
    """PSNR in dB over pixels in [0, 1], averaged over images; the mean-colour reference by hand."""
    vq = build_vq(ImageTokenizerConfig(resolution=16, channels=(32, 32), codebook_size=16), 0)
    tokenizer = ImageTokenizer(vq, 16)
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    quality = reconstruction_quality(tokenizer, pixels)
    images = (pixels.numpy() + 1) / 2
    decoded = (tokenizer.decode(tokenizer.encode(pixels)).numpy() + 1) / 2
    flat = images.mean(axis=(2, 3), keepdims=True)
    psnr = [10 * np.log10(1 / np.mean((d - i) ** 2)) for d, i in zip(decoded, images)]
    flat_psnr = [10 * np.log10(1 / np.mean((f - i) ** 2)) for f, i in zip(flat, images)]
    assert quality["images"] == 3
    assert quality["psnr"] == pytest.approx(np.mean(psnr), abs=1e-3)
    assert quality["mean_colour"]["psnr"] == pytest.approx(np.mean(flat_psnr), abs=1e-3)
    assert -1 <= quality["ssim"] <= 1


def test_decoding_reads_the_codes_as_a_grid_deterministically():
    """[B, G*G] codes decode to [B, 3, R, R]; the same codes always give the same pixels, and moving
    codes to other grid positions changes the image."""
    vq = build_vq(ImageTokenizerConfig(resolution=16, channels=(32, 32), codebook_size=16), 0)
    tokenizer = ImageTokenizer(vq, 16)
    codes = torch.randint(16, (2, 64), generator=torch.Generator().manual_seed(1))
    pixels = tokenizer.decode(codes)
    assert pixels.shape == (2, 3, 16, 16)
    assert not torch.equal(tokenizer.decode(codes[:, torch.randperm(64)]), pixels)  # layout matters
    assert torch.equal(tokenizer.decode(codes), pixels)  # deterministic


@pytest.mark.slow
def test_a_trained_tokenizer_beats_each_images_mean_colour(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    invoke("tokenizer", "train", data, "--steps", "150", *SMALL)
    quality = json.loads((tokens_folder(data) / "manifest.json").read_text())["quality"]
    assert quality["psnr"] > quality["mean_colour"]["psnr"]


def test_image_generation_examples_target_the_cached_codes(tokenized, synthetic_data, tmp_path):
    """With the catalog tokenized, an image_generation example's target is its target item's codes
    (what the model learns to write) and the examples record which codes and tokenizer; without
    codes the target stays the image's path."""
    import polars as pl

    from unimp_bench.examples import build_examples

    codes = catalog_codes(tokenized)
    manifest = build_examples(tokenized, tmp_path / "ex", ["image_generation"], ["test"])
    assert manifest["tasks"]["image_generation"]["image_codes"] == codes.describe()
    examples = pl.read_parquet(tmp_path / "ex" / "image_generation" / "test.parquet")
    assert len(examples) > 0
    for target, text in zip(examples["target_item"].to_list(), examples["target_text"].to_list()):
        assert text == " ".join(f"<code_{c}>" for c in codes.codes[target])

    plain = build_examples(synthetic_data, tmp_path / "plain", ["image_generation"], ["test"])
    assert plain["tasks"]["image_generation"]["image_codes"] is None
    examples = pl.read_parquet(tmp_path / "plain" / "image_generation" / "test.parquet")
    assert examples["target_text"].to_list() == examples["target_image"].to_list()


@pytest.fixture(scope="module")
def image_run(tokenized, tmp_path_factory):
    """The tiny preset trained 2 steps on recommendation and image_generation."""
    from helpers import SHRUNK_TINY_MODEL, tiny_train_args

    run = tmp_path_factory.mktemp("image_run") / "run"
    overrides = [*SHRUNK_TINY_MODEL, "train.tasks=[recommendation,image_generation]"]
    invoke(*tiny_train_args(tokenized, run, 2, overrides))
    return run


def test_a_run_trains_image_generation_on_the_codes(tokenized, image_run):
    """image_generation joins multi-task training: the model gets one added token per code, its
    export records the codes it writes, and the loss of the task is logged."""
    from unimp_bench.models.export import load_exported

    loaded = load_exported(image_run / "export")
    assert loaded.model.vocabulary.num_image_codes == 16
    assert loaded.meta["provenance"]["image_codes"] == catalog_codes(tokenized).describe()
    logged = [json.loads(line) for line in (image_run / "logs" / "train.jsonl").read_text().splitlines()]
    assert any("loss/image_generation" in record for record in logged)


def test_eval_generates_one_image_per_example_and_scores_it(tokenized, image_run, tmp_path):
    """eval --task image_generation: exactly one code grid per example (constrained decoding),
    decoded to a PNG at the tokenizer's resolution, scored with CLIP; a random tower's scores are
    marked as not comparable. Sampling depends on its seed; greedy does not."""
    import numpy as np
    import polars as pl
    from PIL import Image

    common = ["--task", "image_generation", "--checkpoint", image_run, "--data", tokenized, "--limit", "3"]
    clip = ["--clip-model", "ViT-S-32", "--clip-checkpoint", "random"]
    out = tmp_path / "results"
    invoke("eval", *common, *clip, "--out", out)
    result = json.loads(next(out.glob("*image_generation__test*.json")).read_text())
    assert result["n_examples"] == 3 and {"CLIP-I", "CLIP-T", "Diversity"} <= set(result["scores"])
    assert "not comparable" in json.dumps(result["provenance"])
    predictions = pl.read_parquet(next((out / "predictions").glob("*image_generation__test.parquet")))
    assert all(len(codes) == 64 and all(0 <= c < 16 for c in codes) for codes in predictions["codes"])
    for name in predictions["image"]:
        with Image.open(out / "predictions" / name) as image:
            assert image.size == (16, 16)
    # a contact sheet per user: history | retrieved | generated | target, the generated tile its image
    sheets = result["provenance"]["config"]["contact_sheets"]
    assert 1 <= len(sheets) <= 3
    from unimp_bench.evaluation.contact_sheets import GAP, LABEL, TILE
    from unimp_bench.results import safe_name

    by_name = {safe_name(e): image for e, image in zip(predictions["example_id"], predictions["image"])}
    for name in sheets:
        example = next(key for key in by_name if name.endswith(f"_{key}.png"))
        with Image.open(out / "predictions" / by_name[example]) as image:
            tile = np.asarray(image.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST))
        with Image.open(out / name) as sheet:
            array = np.asarray(sheet)
        assert array.shape[0] == TILE + LABEL + 2 * GAP
        row = array[LABEL + GAP : LABEL + GAP + TILE]
        assert any(np.array_equal(row[:, x : x + TILE], tile) for x in range(array.shape[1] - TILE + 1))

    def sampled(seed: int) -> list:
        folder = tmp_path / f"sample{seed}"
        invoke("eval", *common, *clip, "--out", folder, "--image-decoding", "sample", "--sample-seed", seed)
        frame = pl.read_parquet(next((folder / "predictions").glob("*.parquet")))
        assert f"+sample_k50_s{seed}" in json.loads(next(folder.glob("*.json")).read_text())["method"]
        return frame["codes"].to_list()

    assert sampled(1) == sampled(1) != sampled(2)


def test_stage_one_is_the_models_own_search_ranking(tokenized, image_run, tmp_path):
    """--retrieval model (the default) puts the items the model's search instruction ranks highest
    into the prompt, never the target; --retrieval bm25 keeps the built examples' BM25 items. The
    retrieved items change the generated image."""
    import numpy as np
    import polars as pl

    from unimp_bench.data.contract import open_dataset
    from unimp_bench.models.export import load_exported
    from unimp_bench.models.predict import next_token_scores
    from unimp_bench.models.predictor import ModelEvalSettings, UniMPPredictor
    from unimp_bench.prompts import Segment, flatten_item, history_segment, item_attributes, render
    from unimp_bench.tasks import registry

    common = ["--task", "image_generation", "--checkpoint", image_run, "--data", tokenized, "--limit", "6"]
    clip = ["--clip-model", "ViT-S-32", "--clip-checkpoint", "random"]
    invoke("build", tokenized, "--out", tmp_path / "ex", "--tasks", "image_generation", "--splits", "test")
    runs = {}
    for retrieval in ("model", "bm25"):
        folder = tmp_path / retrieval
        invoke(
            "eval", *common, *clip, "--out", folder, "--retrieval", retrieval, "--examples", tmp_path / "ex"
        )
        runs[retrieval] = pl.read_parquet(next((folder / "predictions").glob("*.parquet"))).sort("example_id")
    examples = (
        pl.read_parquet(tmp_path / "ex" / "image_generation" / "test.parquet").head(6).sort("example_id")
    )
    assert runs["bm25"]["retrieved"].to_list() == examples["retrieved"].to_list()
    retrieved = runs["model"]["retrieved"].to_list()
    assert all(len(r) == 2 and t not in r for r, t in zip(retrieved, examples["target_item"]))

    # by hand: the search prompt of the first example, scored over the catalog, target left out
    dataset = open_dataset(tokenized)
    predictor = UniMPPredictor(load_exported(image_run / "export"), dataset, ModelEvalSettings(), "UniMP")
    items = dataset.scan("items").sort("item_idx").collect()
    flat = [flatten_item(r["item_idx"], item_attributes(r)) for r in items.iter_rows(named=True)]
    row = examples.row(0, named=True)
    prompt = render(
        registry().get("search").instructions[0],
        {"history": history_segment(flat, row["history"]), "query": Segment(row["query"])},
    )
    scores = next_token_scores(predictor.reader, [prompt.text], [list(prompt.image_items)], "items")[0]
    scores[row["target_item"]] = -np.inf
    assert retrieved[0] == np.argsort(-scores, kind="stable")[:2].tolist()

    differ = [m != b for m, b in zip(retrieved, runs["bm25"]["retrieved"].to_list())]
    assert any(differ)
    changed = [m != b for m, b in zip(runs["model"]["codes"].to_list(), runs["bm25"]["codes"].to_list())]
    assert any(c for c, d in zip(changed, differ) if d)  # other retrieved items, another image
    assert not any(c for c, d in zip(changed, differ) if not d)  # same items, same (greedy) image


def test_a_checkpoint_without_image_codes_cannot_generate(synthetic_data, tmp_path):
    from helpers import SHRUNK_TINY_MODEL, tiny_train_args

    run = tmp_path / "run"
    invoke(*tiny_train_args(synthetic_data, run, 1, [*SHRUNK_TINY_MODEL, "train.tasks=[recommendation]"]))
    message = fails("eval", "--task", "image_generation", "--checkpoint", run, "--data", synthetic_data)
    assert "not trained on image_generation, so it has no image codes" in message


def test_generate_writes_an_image_and_what_it_retrieved(tokenized, image_run, tmp_path):
    """`generate` for a user and a free query: a PNG and a JSON with the history, the retrieved items
    and the codes; the user's history matters; sampling is seeded; bad requests are one sentence."""
    from PIL import Image

    common = ["generate", "--checkpoint", image_run, "--data", tokenized, "--query", "Office Chair"]
    invoke(*common, "--user", "3", "--out", tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (16, 16)
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["user_idx"] == 3 and report["query"] == "Office Chair" and len(report["retrieved"]) == 2
    assert len(report["codes"]) == 64 and 1 <= len(report["history"]) <= 5
    shown = [*report["history"], *report["retrieved"]]
    assert all(f"<item_{item['item_idx']}>" in report["prompt"] for item in shown)

    invoke(*common, "--user", "4", "--out", tmp_path / "b.png")
    other = json.loads((tmp_path / "b.json").read_text())
    assert other["history"] != report["history"] and other["prompt"] != report["prompt"]

    invoke(*common, "--user", "3", "--out", tmp_path / "bm25.png", "--retrieval", "bm25", "--retrieved", "3")
    assert len(json.loads((tmp_path / "bm25.json").read_text())["retrieved"]) == 3

    def sampled(seed: int) -> list[int]:
        invoke(*common, "--user", "3", "--out", tmp_path / "s.png", "--sample", "--seed", seed)
        return json.loads((tmp_path / "s.json").read_text())["codes"]

    assert sampled(0) == sampled(0) != sampled(1)
    assert "has no user 'nobody'" in fails(*common, "--user", "nobody", "--out", tmp_path / "x.png")
    assert "must name a .png file" in fails(*common, "--user", "3", "--out", tmp_path / "x.jpg")
    assert "not both" in fails(
        *common, "--user", "3", "--out", tmp_path / "x.png", "--sample", "--beams", "2"
    )


def test_a_dataset_and_its_checkpoints_move_together(tokenized, synthetic_data, image_run, tmp_path):
    """The manifest records a tokenizer inside the dataset relative to it, and a checkpoint uses the
    evaluated dataset's tokenizer when its weights match: a moved copy works with the original gone;
    a dataset without that tokenizer is refused in one sentence."""
    manifest = json.loads((tokens_folder(tokenized) / "manifest.json").read_text())
    assert manifest["tokenizer"]["folder"] == "tokenizer"
    moved, run = tmp_path / "moved", tmp_path / "run"
    shutil.copytree(tokenized, moved)
    shutil.copytree(image_run, run)
    hidden = tokenized.with_name("hidden")
    tokenized.rename(hidden)
    try:
        assert catalog_codes(moved).tokenizer_folder == tokens_folder(moved) / "tokenizer"
        invoke("tokenizer", "decode", moved, "--item", "0", "--out", tmp_path / "item.png")
        common = ["generate", "--checkpoint", run, "--query", "Office Chair", "--user", "3"]
        invoke(*common, "--data", moved, "--out", tmp_path / "a.png")
        assert (tmp_path / "a.png").is_file()
        message = fails(*common, "--data", synthetic_data, "--out", tmp_path / "b.png")
        assert "neither" in message and "the dataset whose image codes it was trained on" in message
    finally:
        hidden.rename(tokenized)


def test_reference_rows_floor_copy_and_ceiling(tokenized, tmp_path):
    """image-random (floor), image-retrieved (copying stage one) and image-tokenizer (the target's
    codes decoded: the ceiling) are scored by the same CLIP scorer; the ceiling's images are the
    decoded target codes, cached once per tokenizer."""
    import numpy as np
    import polars as pl
    from PIL import Image

    clip = ["--clip-model", "ViT-S-32", "--clip-checkpoint", "random"]
    invoke("build", tokenized, "--out", tmp_path / "ex", "--tasks", "image_generation", "--splits", "test")
    examples = pl.read_parquet(tmp_path / "ex" / "image_generation" / "test.parquet")
    images = {}
    for name in ("image-random", "image-retrieved", "image-tokenizer"):
        out = tmp_path / name
        args = ["--task", "image_generation", "--splits", "test", "--examples", tmp_path / "ex", "--out", out]
        invoke("baselines", "run", tokenized, "--model", name, *args, *clip)
        result = json.loads(next(out.glob("*.json")).read_text())
        assert result["n_examples"] == len(examples) and "not comparable" in json.dumps(result["provenance"])
        frame = pl.read_parquet(next((out / "predictions").glob("*.parquet")))
        images[name] = dict(zip(frame["example_id"], frame["image"]))
    root = str(tokenized.resolve())
    for example in examples.iter_rows(named=True):
        target = f"{root}/{example['target_image']}"
        assert images["image-random"][example["example_id"]] != target
        assert (
            images["image-retrieved"][example["example_id"]]
            == f"{root}/{_image_of(tokenized, example['retrieved'][0])}"
        )
    example = examples.row(0, named=True)
    codes = catalog_codes(tokenized)
    decoded = codes.tokenizer().decode(torch.tensor([codes.codes[example["target_item"]]]))[0]
    with Image.open(images["image-tokenizer"][example["example_id"]]) as png:
        expected = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(png), expected)


def _image_of(data, item: int) -> str:
    import polars as pl

    items = pl.read_parquet(data / "items.parquet")
    return items.filter(pl.col("item_idx") == item)["image_path"][0]
