"""The DeepSpeed trainer on the CPU: the CLI path, logs, checkpoints and exports, exact resume,
learning strategies and the launcher command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from helpers import SHRUNK_TINY_MODEL, tiny_train_args
from unimp_bench.cli import app
from unimp_bench.errors import UnimpError
from unimp_bench.training.config import load_run_config
from unimp_bench.training.launcher import launcher_command, run_training
from unimp_bench.training.plan import EpochSampler, plan_stages
from unimp_bench.training.worker import schedule_factor

REPO = Path(__file__).resolve().parents[1]
SMALL = SHRUNK_TINY_MODEL + [
    "train.micro_batch=4",
    "train.log_every=1",
    "train.max_examples_per_task=64",
]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cli_run(synthetic_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("train") / "run"
    result = CliRunner().invoke(app, tiny_train_args(synthetic_data, run, 3, SMALL))
    assert result.exit_code == 0, result.output
    assert "trained 3 steps" in result.output
    return run


def test_cli_trains_on_the_cpu_deepspeed_engine_and_logs(cli_run):
    records = read_log(cli_run)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert record["loss"] > 0 and record["tokens_per_s"] > 0 and record["lr"] > 0
        assert any(key.startswith("loss/") for key in record)  # per task
        assert "loss/context" in record
    seen = {key for record in records for key in record if key.startswith("loss/")}
    assert seen >= {"loss/recommendation", "loss/context"}
    assert list((cli_run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (cli_run / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    checkpoint = cli_run / "checkpoints" / "step_00000003"
    assert (checkpoint / "mp_rank_00_model_states.pt").is_file()  # DeepSpeed's own files
    state = json.loads((checkpoint / "unimp_state.json").read_text())
    assert state["global_step"] == 3 and state["stage"] == 0
    assert (checkpoint / "export" / "model.safetensors").is_file()
    config = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert config["model"]["lm"]["hidden_size"] == 32 and config["train"]["max_steps"] == 3


def test_export_of_a_run_loads_and_ranks_the_catalog(cli_run, synthetic_data):
    from unimp_bench.data.contract import open_dataset
    from unimp_bench.models.export import load_exported
    from unimp_bench.models.inputs import ImageFeatureStore, ItemImages, catalog_image_paths
    from unimp_bench.models.item_content import encode_catalog
    from unimp_bench.models.predict import PromptReader, next_token_scores

    loaded = load_exported(cli_run / "export")
    assert loaded.meta["provenance"]["step"] == 3
    assert loaded.meta["provenance"]["dataset"]["content_hash"]
    paths = catalog_image_paths(open_dataset(synthetic_data))
    store = ImageFeatureStore(loaded.model, ItemImages(synthetic_data, paths, 32), 1.0)
    encode_catalog(loaded.model, open_dataset(synthetic_data), loaded.tokenizer, store)
    prompt = "[CLS] [IMG] title a <item_3> [EOC] [IMG] title b <item_5> [EOC] Which item next?"
    reader = PromptReader(loaded.model, loaded.tokenizer, store, max_length=256)
    scores = next_token_scores(reader, [prompt], [[3, 5]], "items")
    assert scores.shape == (1, len(paths)) and bool(torch.isfinite(torch.from_numpy(scores)).all())


def test_resume_continues_exactly_like_a_straight_run(synthetic_data, tmp_path):
    config = REPO / "configs" / "tiny.yaml"
    # content item rows re-encoded after step 3: the resumed run (from step 2) must restore the cache
    common = SMALL + ["train.steps=6", "train.warmup_ratio=0.3", "model.item_refresh_every=3"]
    straight = run_training(config, synthetic_data, tmp_path / "straight", max_steps=4, overrides=common,
                            show_progress=False)  # fmt: skip
    assert straight["steps"] == 4
    run_training(
        config, synthetic_data, tmp_path / "split", max_steps=2, overrides=common, show_progress=False
    )
    resumed = run_training(config, synthetic_data, tmp_path / "split", resume=True, max_steps=4,
                           overrides=common, show_progress=False)  # fmt: skip
    assert resumed["steps"] == 4
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["item_content_step"] for r in b] == [r["item_content_step"] for r in a] == [0, 0, 3, 3]
    for x, y in zip(a, b):
        assert x["lr"] == pytest.approx(y["lr"], rel=1e-9)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
        for key in x:
            if key.startswith("loss/"):
                assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6)

    # resuming needs the same configuration (apart from the stopping step)
    with pytest.raises(UnimpError, match="differs"):
        run_training(config, synthetic_data, tmp_path / "split", resume=True, max_steps=5,
                     overrides=common + ["train.lr=0.5"], show_progress=False)  # fmt: skip
    with pytest.raises(UnimpError, match="--resume"):
        run_training(config, synthetic_data, tmp_path / "split", max_steps=1, overrides=common,
                     show_progress=False)  # fmt: skip


def test_multitask_then_lora_trains_only_adapters_in_the_second_stage(synthetic_data, tmp_path):
    from safetensors.torch import load_file

    overrides = SMALL + [
        "train.tasks=[recommendation, search]",
        "train.strategy=multitask_then_efficient",
        "train.efficient=lora",
        "train.steps=2",
        "train.save_every=2",
    ]
    run = tmp_path / "lora"
    summary = run_training(REPO / "configs" / "tiny.yaml", synthetic_data, run, overrides=overrides,
                           show_progress=False)  # fmt: skip
    assert [s["name"] for s in summary["stages"]] == ["multitask", "finetune:recommendation"]
    first = load_file(str(run / "checkpoints" / "step_00000002" / "export" / "model.safetensors"))
    # peft keeps a wrapped layer's own weights under .base_layer
    second = {
        n.replace(".base_layer", ""): t
        for n, t in load_file(str(run / "export" / "model.safetensors")).items()
    }
    lora = [name for name in second if "lora_" in name]
    assert lora and not any("lora_" in name for name in first)
    for name, tensor in first.items():
        assert torch.equal(second[name], tensor), f"{name} changed while only LoRA should train"
    assert any(not torch.equal(second[n], torch.zeros_like(second[n])) for n in lora if "lora_B" in n)
    log = read_log(run)
    assert {r["stage"] for r in log} == {"multitask", "finetune:recommendation"}
    assert all(set(k for k in r if k.startswith("loss/") and k != "loss/context") == {"loss/recommendation"}
               for r in log if r["stage"] != "multitask")  # fmt: skip


def test_learning_strategies_plan_their_stages():
    config = load_run_config(REPO / "configs" / "tiny.yaml", ["train.strategy=continual"])
    assert [(s.tasks, s.trainable) for s in plan_stages(config.train)] == [
        ((task,), "default") for task in config.train.tasks
    ]
    config = load_run_config(REPO / "configs" / "tiny.yaml", ["train.strategy=multitask_then_finetune"])
    stages = plan_stages(config.train)
    assert [s.trainable for s in stages] == ["default", "full"] and stages[1].tasks == ("recommendation",)
    config = load_run_config(
        REPO / "configs" / "tiny.yaml",
        ["train.strategy=multitask_then_efficient", "train.efficient=last_layer"],
    )
    assert plan_stages(config.train)[1].trainable == "last_layer"


def test_sampler_is_deterministic_and_respects_task_shares():
    sampler = EpochSampler({"recommendation": 10, "search": 4}, {"search": 2.0}, seed=1, stage=0)
    order = sampler.order(0)
    assert len(order) == 18 and sampler.epoch_size == 18
    tasks = order[:, 0].tolist()
    assert tasks.count(0) == 10 and tasks.count(1) == 8
    assert sorted(order[order[:, 0] == 0][:, 1].tolist()) == list(range(10))  # every row once
    again = EpochSampler({"recommendation": 10, "search": 4}, {"search": 2.0}, seed=1, stage=0)
    assert (again.order(0) == order).all() and not (again.order(1) == order).all()


def test_schedule_warms_up_then_follows_a_cosine():
    assert schedule_factor(0, 100, 0.1, "cosine") == pytest.approx(0.1)
    assert schedule_factor(9, 100, 0.1, "cosine") == pytest.approx(1.0)
    assert schedule_factor(10, 100, 0.1, "cosine") == pytest.approx(1.0)
    assert schedule_factor(55, 100, 0.1, "cosine") == pytest.approx(0.5)
    assert schedule_factor(100, 100, 0.1, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert schedule_factor(80, 100, 0.1, "constant") == 1.0


def test_gpus_relaunch_through_the_deepspeed_launcher(tmp_path):
    hostfile = tmp_path / "hosts"
    command = launcher_command(tmp_path / "run", 8, hostfile, resume=True)
    assert command[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert command[command.index("--hostfile") + 1] == str(hostfile)
    assert command[command.index("--num_gpus") + 1] == "8"
    assert command[command.index("--module") + 1] == "unimp_bench.training.worker"
    assert command[-1] == "--resume"


def test_config_errors_are_one_sentence(synthetic_data, tmp_path):
    runner = CliRunner()
    base = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(synthetic_data)]
    cases = [
        (["--set", "train.lrr=1"], "unknown key(s) lrr"),
        (["--set", "train.tasks=[image_generation]"], "has no image codes; run `unimp-bench tokenizer train"),
        (["--set", "model.mask=sideways"], "model.mask must be one of"),
        (["--set", "train.zero_stage=3"], "ZeRO-3 exports are not supported"),
        (["--set", "nonsense"], "must look like section.key=value"),
        (["--resume"], "no training run to resume"),
        (["--set", "model.lm.heads=3"], "must be a multiple of model.lm.heads 3"),
        (["--set", "model.resampler.latents=0"], "model.resampler.latents must be at least 1"),
        (["--gpus", "-1"], "greater than or equal to 0"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, base + ["--out", str(tmp_path / "r")] + extra)
        assert result.exit_code in (1, 2), result.output  # 2: refused by the option's range
        assert message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "r").exists()
    # an error found only once the run folder was being filled (examples, tokenizer) leaves nothing
    late = [*SMALL, "train.micro_batch=100000"]
    result = runner.invoke(app, tiny_train_args(synthetic_data, tmp_path / "late", 1, late))
    assert result.exit_code == 1 and "fewer than one optimizer step needs" in result.output
    assert not (tmp_path / "late").exists()
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text(f"base: {REPO / 'configs' / 'tiny.yaml'}\nmodel:\n  fusion: none\n")
    config = load_run_config(ablation)
    assert config.model.fusion == "none" and config.model.lm.hidden_size == 128
    assert load_run_config(Path("ablations/no_context")).loss.context is False  # a shipped preset by name
    with pytest.raises(UnimpError, match="not a shipped preset"):
        load_run_config(tmp_path / "missing.yaml")


class _Planted:
    """A pickle that creates a file when it is loaded: what a hostile checkpoint would carry."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _resume(run: Path, data: Path):
    return CliRunner().invoke(app, ["train", "--config", str(run / "config.yaml"), "--data", str(data),
                                    "--out", str(run), "--resume", "--max-steps", "4"])  # fmt: skip


def test_resume_refuses_checkpoints_it_did_not_write(cli_run, synthetic_data, tmp_path):
    """The issue's attack: a planted model-states file would run code in DeepSpeed's torch.load."""
    import pickle
    import shutil

    from unimp_bench.checkpoint_trust import MANIFEST, verify_checkpoint

    verify_checkpoint(cli_run / "checkpoints" / "step_00000003")  # what we wrote verifies
    pwned = tmp_path / "pwned"

    def tampered(name: str, change) -> Path:
        run = tmp_path / name
        shutil.copytree(cli_run, run)
        change(run / "checkpoints" / "step_00000003")
        return run

    def plant(folder: Path) -> None:
        (folder / "mp_rank_00_model_states.pt").write_bytes(pickle.dumps(_Planted(pwned)))

    def plant_and_redigest(folder: Path) -> None:  # an attacker can recompute digests, not the key
        plant(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["files"]["mp_rank_00_model_states.pt"] = file_sha256(folder / "mp_rank_00_model_states.pt")
        (folder / MANIFEST).write_text(json.dumps(manifest))

    from unimp_bench.fileio import file_sha256

    cases = [
        ("planted", plant, "changed since it was saved"),
        ("redigested", plant_and_redigest, "not signed with this user's key"),
        ("extra", lambda f: (f / "extra.pt").write_bytes(b"x"), "not saved with: extra.pt"),
        ("corrupt", lambda f: (f / "unimp_state.json").write_text("{}"), "changed since"),
        ("unsigned", lambda f: (f / MANIFEST).unlink(), f"no {MANIFEST}"),
    ]
    for name, change, message in cases:
        result = _resume(tampered(name, change), synthetic_data)
        assert result.exit_code == 1, (name, result.output)
        assert message in result.output and "Traceback" not in result.output, (name, result.output)
        assert not pwned.exists()

    run = tampered("escape", lambda f: None)
    (run / "checkpoints" / "latest").write_text("../../elsewhere")
    result = _resume(run, synthetic_data)
    assert result.exit_code == 1 and "not a checkpoint of unimp-bench" in result.output


def test_resume_after_an_interrupted_save_uses_the_last_complete_checkpoint(
    cli_run, synthetic_data, tmp_path
):
    import shutil

    from unimp_bench.checkpoint_trust import MANIFEST

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    half = run / "checkpoints" / "step_00000004"  # killed after DeepSpeed's save, before signing
    shutil.copytree(run / "checkpoints" / "step_00000003", half)
    (half / MANIFEST).unlink()
    (run / "checkpoints" / "latest").write_text("step_00000004")
    result = _resume(run, synthetic_data)
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4]


def test_ablations_run_trains_each_variant_per_seed_and_tables_mean_and_standard_error(
    synthetic_data, synthetic_examples, tmp_path
):
    """Two ablations and the full model, two seeds each: every run carries its ablation's change and
    its seed, the table's mean and standard error are those of the per-seed results, and a second
    call reuses the finished runs."""
    import math

    import polars as pl

    from unimp_bench.training.config import load_run_config

    out = tmp_path / "study"
    args = [
        "ablations",
        "run",
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--data",
        str(synthetic_data),
    ]
    args += [
        "--out",
        str(out),
        "--seeds",
        "2",
        "--ablations",
        "no_vision,late_fusion",
        "--tasks",
        "recommendation",
    ]
    args += ["--limit", "24", *[f"--set={o}" for o in (*SMALL, "train.steps=2", "train.save_every=2")]]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    for variant, fusion in (("full", "cross_attention"), ("no_vision", "none"), ("late_fusion", "late")):
        for seed in (0, 1):
            config = load_run_config(out / "runs" / variant / f"seed{seed}" / "config.yaml")
            assert (config.model.fusion, config.train.seed) == (fusion, seed)
    summary = pl.read_csv(out / "ablations.csv")
    assert summary["variant"].unique(maintain_order=True).to_list() == ["full", "no_vision", "late_fusion"]
    row = summary.filter(pl.col("variant") == "late_fusion", pl.col("metric") == "NDCG@10").row(0, named=True)
    values = [
        json.loads(
            next(
                (out / "results").glob(f"UniMP-late_fusion-seed{s}-first_24__recommendation__test__*.json")
            ).read_text()
        )["scores"]["NDCG@10"]
        for s in (0, 1)
    ]
    mean = sum(values) / 2
    assert math.isclose(row["mean"], mean) and row["seeds"] == 2
    assert math.isclose(row["se"], math.sqrt(sum((v - mean) ** 2 for v in values)) / math.sqrt(2))
    assert "| late_fusion |" in (out / "ablations.md").read_text() and "+-" in first.output
    stamp = (out / "runs" / "full" / "seed0" / "export").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "runs" / "full" / "seed0" / "export").stat().st_mtime_ns == stamp  # reused, not retrained
