"""Typer wiring only: each command parses its options and calls one library function."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from unimp_bench.errors import UnimpError

app = typer.Typer(
    help="unimp-bench: benchmark toolkit for unified multi-modal personalization (UniMP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prepare_app = typer.Typer(
    help="Build the benchmark dataset from raw Amazon dumps or the synthetic corpus.", no_args_is_help=True
)
app.add_typer(prepare_app, name="prepare")
tasks_app = typer.Typer(help="The registered personalization tasks (tasks/*.yaml).", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
baselines_app = typer.Typer(
    help="Baselines scored on the same examples as every other method.", no_args_is_help=True
)
app.add_typer(baselines_app, name="baselines")
SEED_MAX = 2**32 - 1  # numpy's seed range
err = Console(stderr=True, soft_wrap=True, markup=False)  # user text (paths, domains) is never markup
out = Console(soft_wrap=True, markup=False)


def _error(message: str) -> None:
    """One error sentence; the message is user text (paths, ids, domain names), never rich markup."""
    err.print(Text.assemble(("Error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def friendly_errors(command):
    """Print a user error as one sentence and exit 1, never a traceback (UNIMP_BENCH_DEBUG=1 shows it)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            err.print("Interrupted; nothing was written in place of the output.", markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            if isinstance(exc, UnimpError):
                message = str(exc)
            elif isinstance(exc, OSError):  # unreadable input, unwritable output, full disk
                where = f" {exc.filename}" if exc.filename else ""
                message = f"cannot use{where}: {exc.strerror or exc}."
            elif type(exc).__module__.startswith(("polars", "pyarrow")):
                # a damaged data file found only while reading it (its footer was fine)
                message = f"a data file could not be read: {str(exc).splitlines()[0][:200]}"
            else:
                raise
            _error(message)
            if os.environ.get("UNIMP_BENCH_DEBUG"):
                raise
            raise typer.Exit(1) from None

    return wrapper


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _show_progress() -> bool:
    return err.is_terminal and not os.environ.get("UNIMP_BENCH_NO_PROGRESS")


@prepare_app.command("amazon")
@friendly_errors
def prepare_amazon_command(
    raw_dir: Path = typer.Option(
        ..., "--raw-dir", help="Folder with raw review (and meta) files, searched recursively."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Output dataset folder (written atomically)."),
    domains: str = typer.Option(
        None, help="Comma-separated domains to keep, e.g. baby,beauty (default: all found)."
    ),
    recipe: str = typer.Option("unimp_paper", help="Recipe name from data_recipes/ or a YAML path."),
    k_core: int = typer.Option(
        None, "--k-core", min=0, help="Minimum interactions per user and per item (recipe: 5)."
    ),
    new_domain: str = typer.Option(
        None, help="Domain held out for the new_domain split ('none' to disable)."
    ),
    new_user_fraction: float = typer.Option(
        None, help="Share of training-domain users held out as new users."
    ),
    images: Path = typer.Option(None, "--images", help="Folder of local product images named <asin>.<ext>."),
    download_images: bool = typer.Option(
        False, "--download-images", help="Fetch each item's image URL (cached)."
    ),
    image_cache: Path = typer.Option(
        Path.home() / ".cache" / "unimp-bench" / "images", help="Cache folder for downloaded images."
    ),
    download_concurrency: int = typer.Option(8, min=1, help="Parallel image requests."),
    download_timeout: float = typer.Option(10.0, help="Seconds per connection or read before a retry."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of id permutations and the new-user draw."),
    workers: int = typer.Option(
        None, min=1, help="Worker processes, one domain each (default: one per CPU core)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
):
    """Turn raw Amazon dumps (2014, 2018 or 2023 releases, plain or gzip) into the benchmark dataset.

    Example: unimp-bench prepare amazon --raw-dir ~/amazon --out data/amazon --domains baby,beauty
    """
    from unimp_bench.data.api import prepare_amazon_dataset

    manifest = prepare_amazon_dataset(
        raw_dir=raw_dir,
        out=out_dir,
        recipe_name=recipe,
        domains=_split_list(domains),
        k_core=k_core,
        new_domain=new_domain,
        new_user_fraction=new_user_fraction,
        seed=seed,
        images_dir=images,
        download_images=download_images,
        image_cache=image_cache,
        download_concurrency=download_concurrency,
        download_timeout=download_timeout,
        workers=workers,
        overwrite=overwrite,
        show_progress=_show_progress(),
    )
    _print_summary(out_dir, manifest)


@prepare_app.command("synthetic")
@friendly_errors
def prepare_synthetic_command(
    out_dir: Path = typer.Option(..., "--out", help="Output dataset folder (written atomically)."),
    users: int = typer.Option(600, min=1, help="Number of synthetic users before the k-core."),
    items: int = typer.Option(240, min=1, help="Number of synthetic items (split evenly over the domains)."),
    domains: str = typer.Option("Beauty,Sports,Toys,Office", help="Comma-separated domain names."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the generator and of the preparation."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
):
    """Generate the embedded synthetic corpus (raw 2018-format files + PNG images) and prepare it.

    Example: unimp-bench prepare synthetic --out data/synthetic
    """
    from unimp_bench.data.api import prepare_synthetic_dataset

    manifest = prepare_synthetic_dataset(
        out=out_dir,
        users=users,
        items=items,
        domains=_split_list(domains) or [],
        seed=seed,
        overwrite=overwrite,
        show_progress=_show_progress(),
    )
    _print_summary(out_dir, manifest)


@prepare_app.command("sequences")
@friendly_errors
def prepare_sequences_command(
    sequence_file: Path = typer.Argument(
        ..., help="Processed sequences: one `user item item ...` line per user."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Output dataset folder (written atomically)."),
    domain: str = typer.Option(None, help="Domain name of the items (default: the file name, e.g. Beauty)."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the user and item index permutations."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
):
    """Import a processed sequence file (the S3-Rec/SASRec Amazon format) with its published protocol:
    every user kept, last item test, second last valid, no further filtering.

    Example: unimp-bench prepare sequences Beauty.txt --out data/beauty-seq
    """
    from unimp_bench.data.sequences import prepare_sequences_dataset

    manifest = prepare_sequences_dataset(sequence_file, out_dir, domain, seed, overwrite)
    _print_summary(out_dir, manifest)


def _print_summary(out_dir: Path, manifest: dict) -> None:
    totals = manifest["totals"]
    out.print(
        f"Wrote {out_dir}: {totals['users']} users, {totals['items']} items, "
        f"{totals['interactions']} interactions "
        f"in {len(manifest['domains'])} domain(s); content hash {manifest['content_hash'][:16]}."
    )
    rejected = {scope: n for scope, n in manifest["rejected_total"].items() if n}
    if rejected:
        listed = ", ".join(f"{n} {scope}" for scope, n in rejected.items())
        out.print(f"Rejected input: {listed} (reasons and examples in manifest.json).")
    held_out = manifest["new_domain"]
    if held_out["domain"] and not held_out["present"]:
        out.print(
            f"Held-out domain {held_out['domain']} is not among the prepared domains: no new_domain users."
        )
    for name, dropped in manifest.get("dropped_domains", {}).items():
        out.print(f"Dropped domain {name}: {dropped['reason']}.", markup=False)
    for name, why in manifest.get("unreadable_files", {}).items():
        out.print(f"Could not read {name}: {why}; it was left out.", markup=False, highlight=False)


@app.command("stats")
@friendly_errors
def stats_command(
    data: Path = typer.Argument(..., help="A prepared dataset folder."),
    with_paper: bool = typer.Option(
        False, "--with-paper", help="Add the paper's Table 5 numbers for comparison."
    ),
):
    """Print users, items, interactions and sparsity per domain (the paper's Table 5 columns).

    Example: unimp-bench stats data/synthetic
    """
    from unimp_bench.data.api import dataset_statistics_table

    out.print(dataset_statistics_table(data, with_paper=with_paper))


@tasks_app.command("list")
@friendly_errors
def tasks_list_command():
    """List every registered task with its version, metrics and splits.

    Example: unimp-bench tasks list
    """
    from rich.table import Table

    from unimp_bench.tasks import registry

    table = Table("task", "version", "builder", "metrics", "splits")
    for task in registry().tasks.values():
        table.add_row(
            task.name, str(task.version), task.builder, ", ".join(task.metrics), ", ".join(task.splits)
        )
    out.print(table)


@tasks_app.command("show")
@friendly_errors
def tasks_show_command(name: str = typer.Argument(..., help="Task name, e.g. search.")):
    """Print one task's full definition as YAML.

    Example: unimp-bench tasks show selection
    """
    import yaml

    from unimp_bench.config import to_mapping
    from unimp_bench.tasks import registry

    out.print(
        yaml.safe_dump(to_mapping(registry().get(name)), sort_keys=False, allow_unicode=True), highlight=False
    )


@app.command("build")
@friendly_errors
def build_command(
    data: Path = typer.Argument(..., help="A prepared dataset folder."),
    out_dir: Path = typer.Option(..., "--out", help="Output examples folder (written atomically)."),
    tasks: str = typer.Option(None, help="Comma-separated task names (default: every registered task)."),
    splits: str = typer.Option(None, help="Comma-separated splits (default: each task's splits)."),
    seed: int = typer.Option(
        0, min=0, max=SEED_MAX, help="Seed of candidate sampling and random instruction choice."
    ),
    instruction: str = typer.Option(
        "first", help="Instruction template: first, random (seeded per example) or a template index."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
):
    """Materialize task examples (Parquet per task and split) from a prepared dataset.

    Example: unimp-bench build data/synthetic --out data/synthetic-examples --tasks recommendation,search
    """
    from unimp_bench.examples import BuildSettings, build_examples

    manifest = build_examples(
        data,
        out_dir,
        _split_list(tasks),
        _split_list(splits),
        BuildSettings(seed=seed, instruction=instruction),
        overwrite=overwrite,
        show_progress=_show_progress(),
    )
    for name, entry in manifest["tasks"].items():
        parts = []
        for split, info in entry["splits"].items():
            skipped = sum(info["skipped"].values())
            parts.append(f"{split} {info['examples']}" + (f" ({skipped} skipped)" if skipped else ""))
        out.print(f"{name} v{entry['version']}: " + ", ".join(parts))
    reasons = {
        reason
        for entry in manifest["tasks"].values()
        for info in entry["splits"].values()
        for reason in info["skipped"]
    }
    if reasons:
        out.print(
            f"Skipped examples by reason are in {out_dir / 'manifest.json'}: {', '.join(sorted(reasons))}."
        )


def _scoring_settings(
    tie_rule: str,
    bertscore_model: str = "auto",
    bertscore_layers: int | None = None,
    clip_model: str | None = None,
    clip_checkpoint: Path | None = None,
):
    from unimp_bench.clip_scoring import ClipSettings
    from unimp_bench.evaluation.scoring import ScoringSettings
    from unimp_bench.metrics import TIE_RULES

    if tie_rule not in TIE_RULES:
        raise UnimpError(f"--tie-rule must be one of {', '.join(TIE_RULES)}")
    return ScoringSettings(
        tie_rule=tie_rule,
        bertscore_model=bertscore_model,
        bertscore_layers=bertscore_layers,
        clip=ClipSettings(
            model=clip_model or ClipSettings.model,
            checkpoint=str(clip_checkpoint) if clip_checkpoint else None,
        ),
    )


def _print_result(result, path: Path) -> None:
    reason = result.provenance.get("not_applicable")
    scores = (
        f"not applicable: {reason}" if reason else ", ".join(f"{k} {v:.4f}" for k, v in result.scores.items())
    )
    out.print(f"{result.method} {result.task}/{result.split} ({result.n_examples} examples): {scores}")
    out.print(f"  -> {path}", highlight=False)


TIE_RULE_HELP = "Where a target tied with other items lands: expected, pessimistic or optimistic."
CANDIDATES_HELP = (
    "Ranking candidates on new_domain and new_domain_finetune: domain (the held-out domain's catalog, "
    "the protocol) or all (every item; recorded in the method name)."
)


@app.command("score")
@friendly_errors
def score_command(
    predictions: Path = typer.Argument(
        ..., help="Per-example predictions (JSONL or Parquet) keyed by example_id."
    ),
    task: str = typer.Option(..., "--task", help="Task the predictions answer."),
    examples: Path = typer.Option(..., "--examples", help="Examples folder written by `unimp-bench build`."),
    out_dir: Path = typer.Option(Path("results"), "--out", help="Folder for the Result JSON."),
    method: str = typer.Option(None, help="Method name in the result (default: the predictions file name)."),
    split: str = typer.Option(
        None, help="Split the predictions answer (default: read from the example ids)."
    ),
    tie_rule: str = typer.Option("expected", help=TIE_RULE_HELP),
    bertscore_model: str = typer.Option("auto", help="auto, minilm, a local folder or a cached model name."),
    bertscore_layers: int = typer.Option(
        None, min=1, help="Layer of the BERTScore model (needed for custom models)."
    ),
    clip_model: str = typer.Option(None, help="open_clip model of the image metrics (default ViT-L-14)."),
    clip_checkpoint: Path = typer.Option(None, help="Local weights file of that CLIP model."),
):
    """Score per-example predictions of one task and write a Result JSON with provenance.

    Example: unimp-bench score preds.jsonl --task search --examples data/synthetic-examples --method mine
    """
    from unimp_bench.evaluation.run import score_file
    from unimp_bench.examples import open_examples
    from unimp_bench.tasks import registry

    settings = _scoring_settings(tie_rule, bertscore_model, bertscore_layers, clip_model, clip_checkpoint)
    result, path = score_file(
        registry().get(task),
        predictions,
        open_examples(examples),
        method or predictions.name.split(".")[0],
        out_dir,
        split,
        settings,
    )
    _print_result(result, path)


@app.command("leaderboard")
@friendly_errors
def leaderboard_command(
    results: Path = typer.Argument(..., help="Folder of Result JSON files (searched recursively)."),
    csv_path: Path = typer.Option(..., "--csv", help="Wide CSV: one row per method x task x split."),
    markdown_path: Path = typer.Option(None, "--markdown", help="Also write the table as Markdown."),
    plot_path: Path = typer.Option(None, "--plot", help="Also draw the measured results as a PNG."),
    long_path: Path = typer.Option(None, "--long", help="Also write the long table (one row per metric)."),
    with_paper: bool = typer.Option(
        False, "--with-paper", help="Add the paper's reported numbers, marked as such."
    ),
):
    """Collect Result JSONs into one comparable table.

    Example: unimp-bench leaderboard results --csv board.csv --markdown board.md --with-paper
    """
    from unimp_bench.leaderboard import export_leaderboard

    wide = export_leaderboard(results, csv_path, markdown_path, plot_path, long_path, with_paper)
    measured = wide.filter(wide["source"] == "measured").height
    out.print(
        f"Wrote {csv_path}: {measured} measured row(s), {wide.height - measured} reported row(s).",
        highlight=False,
    )


@baselines_app.command("run")
@friendly_errors
def baselines_run_command(
    data: Path = typer.Argument(..., help="A prepared dataset folder."),
    model: str = typer.Option(..., "--model", help="Baseline name (baselines/*.yaml), e.g. pop or bm25."),
    task: str = typer.Option(..., "--task", help="Task to run it on."),
    out_dir: Path = typer.Option(Path("results"), "--out", help="Folder for Result JSONs and predictions."),
    splits: str = typer.Option(
        "test", help="Comma-separated evaluation splits, e.g. valid,test,new_user,new_domain_finetune."
    ),
    examples: Path = typer.Option(None, "--examples", help="Use examples built by `unimp-bench build`."),
    config: Path = typer.Option(None, "--config", help="Baseline YAML to use instead of the shipped one."),
    seed: int = typer.Option(
        0, min=0, max=SEED_MAX, help="Seed of the examples built when --examples is not given."
    ),
    tie_rule: str = typer.Option("expected", help=TIE_RULE_HELP),
    candidates: str = typer.Option("domain", help=CANDIDATES_HELP),
    finetune: str = typer.Option(
        "source+target",
        help="new_domain_finetune: train on the source users plus the held-out users' target train part "
        "(source+target), on that part alone (target, 'scratch'), or both (prints the transfer gain).",
    ),
    target_share: float = typer.Option(
        1.0, min=0.0, max=1.0, help="new_domain_finetune: share of the held-out users trained on."
    ),
    share_seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Which held-out users make up that share."),
):
    """Run a baseline on a task and write one Result JSON per split.

    Example: unimp-bench baselines run data/synthetic --model pop --task recommendation --out results
    """
    from unimp_bench.baselines.runner import run_baseline
    from unimp_bench.data.transfer import REGIMES, FinetuneSettings, transfer_gain

    settings = _scoring_settings(tie_rule)
    if finetune not in (*REGIMES, "both"):
        raise UnimpError(f"--finetune must be one of {', '.join(REGIMES)} or both, not {finetune!r}")
    regimes = REGIMES if finetune == "both" else (finetune,)
    runs = run_baseline(
        model,
        task,
        data,
        out_dir,
        _split_list(splits) or ["test"],
        examples,
        config,
        seed,
        settings,
        show_progress=_show_progress(),
        candidates=candidates,
        finetune=tuple(FinetuneSettings(r, target_share, share_seed) for r in regimes),
    )
    for result, path in runs:
        _print_result(result, path)
    gain = transfer_gain([result for result, _ in runs])
    if gain:
        shown = ", ".join(f"{k} {v:+.4f}" for k, v in gain.items() if k in ("HR@10", "NDCG@10", "MRR@10"))
        out.print(f"transfer gain on new_domain_finetune (source+target minus scratch): {shown}")


@baselines_app.command("list")
@friendly_errors
def baselines_list_command():
    """List the shipped baselines: engine and the tasks each serves."""
    from unimp_bench.baselines.registry import available_baselines, load_baseline

    for name in available_baselines():
        spec = load_baseline(name)
        out.print(f"{spec.name:<12} {spec.engine:<8} {', '.join(spec.kinds)}")


@baselines_app.command("export")
@friendly_errors
def baselines_export_command(
    data: Path = typer.Argument(..., help="A prepared dataset folder."),
    out_dir: Path = typer.Option(
        ..., "--out", help="Folder for the RecBole atomic files (RecBole's data_path)."
    ),
    layout: str = typer.Option("sequential", help="sequential (pre-augmented item_id_list rows) or general."),
    max_history: int = typer.Option(
        50, "--max-history", min=1, help="Items kept in each sequential history."
    ),
    name: str = typer.Option("unimp", help="RecBole dataset name (the files' prefix)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export."),
):
    """Write RecBole atomic files with OUR train/valid/test split, for running RecBole yourself
    (set benchmark_filename: [train, valid, test] and load_col: ~ in its config)."""
    from unimp_bench.baselines.recbole_export import export_recbole
    from unimp_bench.data.contract import open_dataset

    exported = export_recbole(open_dataset(data), out_dir, layout, max_history, name, overwrite)
    for part, path in exported.files.items():
        out.print(f"{part:<6} {path}", highlight=False)


@app.command("train")
@friendly_errors
def train_command(
    config: Path = typer.Option(..., "--config", help="Training preset, e.g. configs/tiny.yaml."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder."),
    run_dir: Path = typer.Option(..., "--out", help="Run folder (checkpoints, export, logs)."),
    gpus: int = typer.Option(
        0, "--gpus", min=0, help="GPUs per node; 0 runs the same DeepSpeed engine on the CPU."
    ),
    hostfile: Path | None = typer.Option(None, "--hostfile", help="DeepSpeed hostfile for multi-node runs."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest checkpoint."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Stop after this many optimizer steps."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override any config key, e.g. --set train.lr=1e-4 --set model.mask=previous."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
):
    """Train UniMP on all configured tasks at once.

    Example: unimp-bench train --config tiny --data data/synthetic --out runs/tiny --max-steps 200
    """
    from unimp_bench.train import run_training

    summary = run_training(
        config, data, run_dir, gpus, hostfile, resume, max_steps, overrides, overwrite, _show_progress()
    )
    stages = ", ".join(f"{s['name']} {s['steps']}/{s['total_steps']}" for s in summary["stages"])
    out.print(f"trained {summary['steps']} steps ({stages}); export: {summary['export']}")


@app.command("eval")
@friendly_errors
def eval_command(
    task: str = typer.Option(..., "--task", help="Task to evaluate, e.g. recommendation or search."),
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        help="Run folder of `train` (its latest export), one of its checkpoints or an export.",
    ),
    data: Path = typer.Option(..., "--data", help="The prepared dataset the model was trained on."),
    split: str = typer.Option("test", help="test, valid, new_user, new_domain or new_domain_finetune."),
    out_dir: Path = typer.Option(
        Path("results"), "--out", help="Folder for the Result JSON and predictions."
    ),
    limit: int = typer.Option(None, min=1, help="Evaluate only the first N examples (a quick look)."),
    examples: Path = typer.Option(None, "--examples", help="Use examples built by `unimp-bench build`."),
    seed: int = typer.Option(
        0, min=0, max=SEED_MAX, help="Seed of the examples built when --examples is not given."
    ),
    method: str = typer.Option(None, help="Method name in the result (default: UniMP-<run> plus options)."),
    ranking: str = typer.Option(
        "exact", help="Ranking tasks: exact (full ranking, one pass), beam (constrained) or unconstrained."
    ),
    beams: int = typer.Option(10, min=1, help="Beams of beam and unconstrained ranking."),
    seen_items: str = typer.Option(
        "exclude",
        help="exclude (the protocol) or keep the items the user had before the target (recorded).",
    ),
    candidates: str = typer.Option("domain", help=CANDIDATES_HELP),
    text_decoding: str = typer.Option("greedy", help="Explanation decoding: greedy or beam."),
    text_beams: int = typer.Option(4, min=1, help="Beams of beam explanation decoding."),
    max_new_tokens: int = typer.Option(80, min=1, help="Length cap of generated explanations, in tokens."),
    drop_text_attrs: float = typer.Option(0.0, help="Robustness: fraction of item attributes removed."),
    mismatch_images: float = typer.Option(
        0.0, help="Robustness: fraction of history images replaced by other products' images."
    ),
    perturbation_seed: int = typer.Option(
        0, min=0, max=SEED_MAX, help="Seed of the robustness perturbations."
    ),
    batch_size: int = typer.Option(16, min=1, help="Examples per forward pass."),
    shard_size: int = typer.Option(256, min=1, help="Examples per resumable shard."),
    tie_rule: str = typer.Option("expected", help=TIE_RULE_HELP),
    bertscore_model: str = typer.Option("auto", help="auto, minilm, a local folder or a cached model name."),
    bertscore_layers: int = typer.Option(
        None, min=1, help="Layer of the BERTScore model (needed for custom models)."
    ),
):
    """Evaluate a trained UniMP on one task and split: predictions Parquet + Result JSON.

    An interrupted evaluation resumes from its finished shards when run again with the same options.

    Example: unimp-bench eval --task recommendation --checkpoint runs/tiny --data data/synthetic --limit 100
    """
    from unimp_bench.evaluation.checkpoint import evaluate_checkpoint
    from unimp_bench.models.predictor import ModelEvalSettings
    from unimp_bench.robustness import Perturbation

    settings = ModelEvalSettings(
        ranking=ranking,
        beams=beams,
        seen_items=seen_items,
        candidates=candidates,
        text_decoding=text_decoding,
        text_beams=text_beams,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        shard_size=shard_size,
        limit=limit,
        perturbation=Perturbation(drop_text_attrs, mismatch_images, perturbation_seed),
    )
    result, path, report = evaluate_checkpoint(
        task,
        checkpoint,
        data,
        split,
        out_dir,
        settings,
        _scoring_settings(tie_rule, bertscore_model, bertscore_layers),
        examples,
        seed,
        method,
        _show_progress(),
    )
    if report["reused_shards"]:
        out.print(f"resumed: {report['reused_shards']} shard(s) were already done")
    robustness = report["robustness"]
    if "dropped_attributes" in robustness:
        out.print(
            f"perturbed: {robustness['dropped_attributes']} of {robustness['attribute_slots']} attributes "
            f"dropped, {robustness['swapped_images']} of {robustness['history_image_slots']} history "
            "images swapped"
        )
    _print_result(result, path)


@app.command("demo")
@friendly_errors
def demo_command(
    out_dir: Path = typer.Option(
        Path("demo"), "--out", help="Folder for the dataset, examples, results and leaderboard."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing demo folder."),
    with_model: bool = typer.Option(
        False, "--with-model", help="Also train the tiny UniMP on the CPU and evaluate it on every task."
    ),
    model_steps: int = typer.Option(
        600, min=1, help="Optimizer steps of that training (600: about 6 CPU minutes)."
    ),
):
    """Run the whole benchmark on the embedded synthetic corpus (CPU, about a minute; with
    --with-model about ten).

    Example: unimp-bench demo --out demo --overwrite --with-model
    """
    from rich.table import Table

    from unimp_bench.demo import run_demo

    steps = model_steps if with_model else None
    wide = run_demo(out_dir, overwrite, out.print, show_progress=_show_progress(), model_steps=steps)
    headline = [m for m in ("HR@10", "NDCG@10", "MAE", "F1", "ROUGE-L") if m in wide.columns]
    table = Table("method", "task", "split", "examples", *headline)
    from unimp_bench.tasks import registry

    for row in wide.iter_rows(named=True):
        scored = set(registry().get(row["task"]).metrics)  # a not-applicable row shows n/a in those
        values = [
            f"{row[m]:.4f}" if row[m] is not None else ("n/a" if row.get("note") and m in scored else "")
            for m in headline
        ]
        table.add_row(row["method"], row["task"], row["split"], str(row["n_examples"]), *values)
    out.print(table)
    out.print(
        f"Leaderboard: {out_dir / 'leaderboard.csv'} (also .md and .png); results in {out_dir / 'results'}."
    )


if __name__ == "__main__":  # pragma: no cover
    app()
