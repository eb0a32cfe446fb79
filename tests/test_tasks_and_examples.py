"""Task definitions load and validate; every task builds correct, deterministic examples."""

import json
import shutil

import polars as pl
import pytest

from helpers import review, write_lines
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.errors import UnimpError
from unimp_bench.examples import BuildSettings, build_examples, example_schema, open_examples
from unimp_bench.prompts import END_OF_CHUNK_TOKEN, IMAGE_TOKEN, item_token, most_specific_category
from unimp_bench.resources import resource_dir
from unimp_bench.tasks import EVALUATION_SPLITS, build_registry, load_task_file, registry

PAPER_TASKS = {"recommendation", "preference", "explanation", "selection", "search", "image_generation"}


def sequences(data):
    """user_idx -> list of (item_idx, rating, split) in chronological order."""
    frame = pl.read_parquet(data / "interactions.parquet").sort("user_idx", "pos")
    grouped = frame.group_by("user_idx", maintain_order=True).agg(
        "item_idx", "rating", "split", "review_text"
    )
    return {row[0]: row[1:] for row in grouped.iter_rows()}


def test_registry_holds_the_six_paper_tasks_with_versions():
    tasks = registry().tasks
    assert set(tasks) == PAPER_TASKS
    for task in tasks.values():
        assert task.version >= 1 and len(task.instructions) >= 2 and task.metrics
    assert registry().get("recommendation").metric_family == "ranking"
    with pytest.raises(UnimpError, match="unknown task 'recomendation'; registered tasks"):
        registry().get("recomendation")


def test_every_registered_task_builds_examples_for_every_split(synthetic_data, synthetic_examples):
    example_set = open_examples(synthetic_examples)
    items = pl.read_parquet(synthetic_data / "items.parquet")
    for task in registry().tasks.values():
        for split in task.splits:
            frame = example_set.load(task, split)
            assert frame.height > 0, (task.name, split)
            assert frame.to_arrow().schema.names == example_schema(task).names
            assert (frame["task_version"] == task.version).all() and (frame["split"] == split).all()
            # every [IMG] marker has its item and image, in prompt order
            first = frame.row(0, named=True)
            assert (
                first["prompt"].count(IMAGE_TOKEN) == len(first["image_items"]) == len(first["image_paths"])
            )
            paths = dict(zip(items["item_idx"], items["image_path"]))
            assert first["image_paths"] == [paths[i] for i in first["image_items"]]
    manifest = example_set.manifest
    assert (
        manifest["dataset"]["content_hash"]
        == json.loads((synthetic_data / "manifest.json").read_text())["content_hash"]
    )


def test_history_target_and_spans_follow_the_users_sequence(synthetic_data, synthetic_examples):
    example_set = open_examples(synthetic_examples)
    task = registry().get("recommendation")
    users = sequences(synthetic_data)
    for split in ("train", "test"):
        frame = example_set.load(task, split)
        for row in frame.head(200).iter_rows(named=True):
            items, _, splits, _ = users[row["user_idx"]]
            p = row["target_pos"]
            assert splits[p] == split
            assert row["target_item"] == items[p] and row["target_text"] == item_token(items[p])
            assert row["history"] == items[max(0, p - 5) : p]
            # each span covers exactly one flattened history item, in order
            for (start, end), item in zip(row["history_spans"], row["history"]):
                chunk = row["prompt"][start:end]
                assert chunk.startswith(IMAGE_TOKEN) and chunk.endswith(
                    f"{item_token(item)} {END_OF_CHUNK_TOKEN}"
                )
    # the sliding window: one training example per train interaction after the first
    train = example_set.load(task, "train")
    expected = sum(
        sum(1 for p, s in enumerate(splits) if s == "train" and p >= 1)
        for user, (_, _, splits, _) in users.items()
        if row_group(synthetic_data, user) == "train"
    )
    assert train.height == expected


def row_group(data, user):
    users = pl.read_parquet(data / "users.parquet")
    return dict(zip(users["user_idx"], users["group"]))[user]


def test_generalization_splits_target_the_right_users_and_domain(synthetic_data, synthetic_examples):
    example_set = open_examples(synthetic_examples)
    task = registry().get("recommendation")
    users = pl.read_parquet(synthetic_data / "users.parquet")
    items = pl.read_parquet(synthetic_data / "items.parquet")
    group = dict(zip(users["user_idx"], users["group"]))
    domain = dict(zip(items["item_idx"], items["domain"]))
    new_user = example_set.load(task, "new_user")
    assert {group[u] for u in new_user["user_idx"]} == {"new_user"}
    assert new_user.height == sum(1 for g in group.values() if g == "new_user")
    new_domain = example_set.load(task, "new_domain")
    assert {group[u] for u in new_domain["user_idx"]} == {"new_domain"}
    assert {domain[i] for i in new_domain["target_item"]} == {"Office"}
    test = example_set.load(task, "test")
    assert {group[u] for u in test["user_idx"]} == {"train"}


def test_selection_candidates_positives_and_negatives(synthetic_data, synthetic_examples):
    example_set = open_examples(synthetic_examples)
    task = registry().get("selection")
    users = sequences(synthetic_data)
    interactions = pl.read_parquet(synthetic_data / "interactions.parquet").sort("user_idx", "pos")
    trained = {
        user: set(rows)
        for user, rows in interactions.filter(pl.col("split") == "train")
        .group_by("user_idx")
        .agg("item_idx")
        .iter_rows()
    }
    items = pl.read_parquet(synthetic_data / "items.parquet")
    domain = dict(zip(items["item_idx"], items["domain"]))
    sizes: dict[str, set] = {}
    for split in ("train", *(s for s in EVALUATION_SPLITS if s in task.splits)):
        for row in example_set.load(task, split).iter_rows(named=True):
            sequence = users[row["user_idx"]][0]
            positives, candidates = row["positives"], row["candidates"]
            assert len(candidates) == 10 and len(set(candidates)) == 10 and set(positives) <= set(candidates)
            negatives = set(candidates) - set(positives)
            p = row["target_pos"]
            assert positives == sequence[p : p + len(positives)]  # consecutive, starting at the target
            visible = set(sequence[: p + len(positives)]) | trained.get(row["user_idx"], set())
            assert not negatives & visible  # never an item the user had
            # negatives come from the positives' domains, each of them: a domain never gives a positive away
            assert {domain[n] for n in negatives} == {domain[i] for i in positives}
            if split == "new_user":
                assert p + len(positives) == len(sequence)  # the user's last interactions
            sizes.setdefault(split, set()).add(len(positives))
            assert row["target_text"] == " ".join(item_token(c) for c in candidates if c in set(positives))
    assert sizes.pop("train") == {1, 2, 3} and sizes.pop("new_user") == {1, 2, 3}
    assert all(found == {1} for found in sizes.values())  # one unseen interaction per trained user


def test_training_selection_examples_never_look_at_valid_or_test_items(synthetic_data, tmp_path):
    """Perturbation: replace every valid and test item of the dataset by another item; the training
    selection examples (positives, candidates, prompts) must not move."""
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(synthetic_data, changed)
    frame = pl.read_parquet(changed / "interactions.parquet")
    n_items = pl.read_parquet(changed / "items.parquet").height
    held = pl.col("split").is_in(["valid", "test"])
    frame.with_columns(
        pl.when(held).then((pl.col("item_idx") + 7) % n_items).otherwise(pl.col("item_idx")).alias("item_idx")
    ).write_parquet(changed / "interactions.parquet", compression="zstd")
    built = [
        build_examples(data, tmp_path / name, ["selection"], ["train"])
        for name, data in (("a", synthetic_data), ("b", changed))
    ]
    frames = [pl.read_parquet(tmp_path / name / "selection" / "train.parquet") for name in ("a", "b")]
    columns = ["example_id", "positives", "candidates", "prompt"]
    assert frames[0].height > 100 and frames[0].select(columns).equals(frames[1].select(columns))
    assert built[0]["tasks"]["selection"]["version"] == 2


def test_search_query_is_the_targets_most_specific_category(synthetic_data, synthetic_examples):
    items = pl.read_parquet(synthetic_data / "items.parquet")
    categories = dict(zip(items["item_idx"], items["categories"].to_list()))
    frame = open_examples(synthetic_examples).load(registry().get("search"), "test")
    for row in frame.iter_rows(named=True):
        assert row["query"] == categories[row["target_item"]][-1]
        assert f'"{row["query"]}"' in row["prompt"]
    assert most_specific_category(["Clothing", "Women", " ", ""]) == "Women"
    assert most_specific_category([]) is None


def test_building_is_deterministic_and_seeded(synthetic_data, tmp_path):
    first = build_examples(synthetic_data, tmp_path / "a", ["selection"], ["test"])
    again = build_examples(synthetic_data, tmp_path / "b", ["selection"], ["test"])
    other = build_examples(synthetic_data, tmp_path / "c", ["selection"], ["test"], BuildSettings(seed=1))
    digest = first["tasks"]["selection"]["splits"]["test"]["sha256"]
    assert digest == again["tasks"]["selection"]["splits"]["test"]["sha256"]
    assert digest != other["tasks"]["selection"]["splits"]["test"]["sha256"]
    # a user's examples do not depend on which other tasks or splits were built with them
    both = build_examples(synthetic_data, tmp_path / "d", ["recommendation", "selection"], ["train", "test"])
    assert both["tasks"]["selection"]["splits"]["test"]["sha256"] == digest


def test_random_instruction_choice_is_seeded_and_recorded(synthetic_data, tmp_path):
    build_examples(
        synthetic_data, tmp_path / "r", ["preference"], ["test"], BuildSettings(instruction="random")
    )
    frame = open_examples(tmp_path / "r").load(registry().get("preference"), "test")
    templates = registry().get("preference").instructions
    assert set(frame["instruction_id"]) == set(range(len(templates)))
    with pytest.raises(UnimpError, match="has 3 instruction"):
        build_examples(
            synthetic_data, tmp_path / "x", ["preference"], ["test"], BuildSettings(instruction="7")
        )


def test_examples_that_cannot_be_built_are_counted_by_reason(tmp_path):
    # Three users, four items, k=1. User a's review of i2 is empty; item i4 has no category.
    records = [review("a", "i1", 1), review("a", "i2", 2, text="  <br/> "), review("a", "i3", 3)]
    records += [review("b", "i1", 1), review("b", "i3", 2), review("b", "i4", 3)]
    records += [review("c", "i2", 1), review("c", "i1", 2), review("c", "i3", 3)]
    write_lines(tmp_path / "raw" / "Toys_5.json", records)
    meta = [{"asin": f"i{n}", "title": f"Item {n}", "category": ["Toys", f"Cat {n}"]} for n in (1, 2, 3)]
    meta.append({"asin": "i4", "title": "Item 4"})
    write_lines(tmp_path / "raw" / "meta_Toys.json", meta)
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1, new_user_fraction=0.0)
    manifest = build_examples(tmp_path / "data", tmp_path / "ex", ["explanation", "search"])
    explanation = manifest["tasks"]["explanation"]["splits"]
    assert explanation["valid"]["skipped"] == {"empty review": 1}  # a's valid review of i2
    assert explanation["train"]["skipped"] == {"too little history": 3}
    search = manifest["tasks"]["search"]["splits"]
    assert search["test"]["skipped"] == {"target item has no category": 1}  # b's test item i4
    assert search["test"]["examples"] == 2


def test_invalid_task_definitions_are_one_sentence_errors(tmp_path):
    source = (resource_dir("tasks") / "search.yaml").read_text()
    cases = {
        "typo": (source + "max_histroy: 3\n", "unknown key"),
        "placeholder": (source.replace("{query}", "{qurey}", 1), "unknown placeholder"),
        "metric": (source.replace("HR@3,", "MAE,", 1), "does not score a search task"),
        "split": (source.replace("new_domain_finetune]", "holdout]"), "splits must be"),
    }
    for name, (text, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "search.yaml").write_text(text)
        with pytest.raises(UnimpError, match=message):
            build_registry(folder)
    (tmp_path / "renamed.yaml").write_text(source)
    with pytest.raises(UnimpError, match="must be named search.yaml"):
        load_task_file(tmp_path / "renamed.yaml")


def test_a_new_task_is_one_yaml(tmp_path):
    folder = tmp_path / "tasks"
    shutil.copytree(resource_dir("tasks"), folder)
    text = (folder / "recommendation.yaml").read_text()
    text = text.replace("name: recommendation", "name: long_history").replace(
        "max_history: 5", "max_history: 20"
    )
    (folder / "long_history.yaml").write_text(text)
    tasks = build_registry(folder)
    assert (
        tasks.get("long_history").max_history == 20 and tasks.get("long_history").builder == "recommendation"
    )


def test_changed_or_stale_examples_are_refused(synthetic_data, tmp_path):
    build_examples(synthetic_data, tmp_path / "ex", ["recommendation"], ["test"])
    example_set = open_examples(tmp_path / "ex")
    task = registry().get("recommendation")
    with pytest.raises(UnimpError, match="holds no valid examples"):
        example_set.load(task, "valid")
    with pytest.raises(UnimpError, match="holds no search examples"):
        example_set.load(registry().get("search"), "test")
    (tmp_path / "ex" / "recommendation" / "test.parquet").write_bytes(b"changed")
    with pytest.raises(UnimpError, match="changed since it was built"):
        example_set.load(task, "test")
