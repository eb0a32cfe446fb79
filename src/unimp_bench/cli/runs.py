"""Commands that produce results: `score`, `baselines run`, `train`, `eval`, `leaderboard`, `demo`."""

from pathlib import Path
from typing import Annotated

import typer

from unimp_bench.cli.common import (
    BertscoreLayers,
    BertscoreModel,
    Candidates,
    ClipCheckpoint,
    ClipModel,
    Data,
    DataOption,
    Examples,
    Overwrite,
    StrictMetrics,
    TaskName,
    TieRule,
    app,
    baselines_app,
    friendly_errors,
    out,
    out_option,
    print_listing,
    print_result,
    scoring_settings,
    seed_option,
    show_progress,
    split_list,
)
from unimp_bench.demo import DemoSettings  # the defaults of `demo`s options (a light import)
from unimp_bench.errors import UnimpError

ResultsOut = out_option("Folder for the Result JSONs and predictions.")
ExamplesSeed = seed_option("Seed of the examples built when --examples is not given.")


@app.command("score")
@friendly_errors
def score_command(
    predictions: Annotated[
        Path, typer.Argument(help="Per-example predictions (JSONL or Parquet) keyed by example_id.")
    ],
    task: TaskName,
    examples: Annotated[
        Path, typer.Option("--examples", help="Examples folder written by `unimp-bench build`.")
    ],
    out_dir: ResultsOut = Path("results"),
    method: Annotated[
        str | None, typer.Option(help="Method name in the result (default: the predictions file name).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split the predictions answer (default: read from the example ids).")
    ] = None,
    tie_rule: TieRule = "expected",
    bertscore_model: BertscoreModel = "auto",
    bertscore_layers: BertscoreLayers = None,
    clip_model: ClipModel = None,
    clip_checkpoint: ClipCheckpoint = None,
    strict_metrics: StrictMetrics = False,
):
    """Score per-example predictions of one task and write a Result JSON with provenance.

    Example: unimp-bench score preds.jsonl --task search --examples data/synthetic-examples --method mine
    """
    from unimp_bench.evaluation.run import score_file
    from unimp_bench.examples import open_examples
    from unimp_bench.tasks import registry

    result, path = score_file(
        registry().get(task),
        predictions,
        open_examples(examples),
        method=method or predictions.name.split(".")[0],
        out=out_dir,
        split=split,
        settings=scoring_settings(
            tie_rule, bertscore_model, bertscore_layers, clip_model, clip_checkpoint, strict_metrics
        ),
    )
    print_result(result, path)


@app.command("leaderboard")
@friendly_errors
def leaderboard_command(
    results: Annotated[Path, typer.Argument(help="Folder of Result JSON files (searched recursively).")],
    csv_path: Annotated[Path, typer.Option("--csv", help="Wide CSV: one row per method x task x split.")],
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the table as Markdown.")
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the measured results as a PNG.")
    ] = None,
    long_path: Annotated[
        Path | None, typer.Option("--long", help="Also write the long table (one row per metric).")
    ] = None,
    with_paper: Annotated[
        bool, typer.Option("--with-paper", help="Add the paper's reported numbers, marked as such.")
    ] = False,
    compare_to: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Pair every method with this one on the same examples: difference, paired-bootstrap "
            "interval and permutation p-value per metric (CSV.compare.csv and the Markdown).",
        ),
    ] = None,
    html_path: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write a self-contained HTML report: tables with intervals, charts, training "
            "curves (--run), dataset statistics (--data) and contact sheets.",
        ),
    ] = None,
    runs: Annotated[
        list[Path] | None, typer.Option("--run", help="A training run folder whose curves the report shows.")
    ] = None,
    datasets: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", help="A dataset whose statistics the report shows next to the paper's Table 5."
        ),
    ] = None,
):
    """Collect Result JSONs into one comparable table.

    Example: unimp-bench leaderboard results --csv board.csv --markdown board.md --with-paper
    """
    from unimp_bench.leaderboard import compare_path, export_leaderboard

    wide = export_leaderboard(
        results,
        csv_path,
        markdown_path=markdown_path,
        plot_path=plot_path,
        long_path=long_path,
        with_paper=with_paper,
        compare_to=compare_to,
    )
    if compare_to:
        out.print(f"Wrote {compare_path(csv_path)}: every method paired with {compare_to}.", highlight=False)
    if html_path:
        from unimp_bench.report import write_report

        write_report(results, html_path, runs=runs or [], datasets=datasets or [])
        out.print(f"Wrote {html_path}.", highlight=False)
    measured = wide.filter(wide["source"] == "measured").height
    out.print(
        f"Wrote {csv_path}: {measured} measured row(s), {wide.height - measured} reported row(s).",
        highlight=False,
    )


@baselines_app.command("run")
@friendly_errors
def baselines_run_command(
    data: Data,
    model: Annotated[
        str, typer.Option("--model", help="Baseline name (baselines/*.yaml), e.g. pop or bm25.")
    ],
    task: TaskName,
    out_dir: ResultsOut = Path("results"),
    splits: Annotated[
        str,
        typer.Option(help="Comma-separated evaluation splits, e.g. valid,test,new_user,new_domain_finetune."),
    ] = "test",
    examples: Examples = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Baseline YAML to use instead of the shipped one.")
    ] = None,
    seed: ExamplesSeed = 0,
    tie_rule: TieRule = "expected",
    candidates: Candidates = "domain",
    finetune: Annotated[
        str,
        typer.Option(
            help="new_domain_finetune: train on the source users plus the held-out users' target train "
            "part (source+target), on that part alone (target, 'scratch'), or both (prints the transfer "
            "gain)."
        ),
    ] = "source+target",
    target_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="new_domain_finetune: share of the held-out users trained on."),
    ] = 1.0,
    share_seed: seed_option("Which held-out users make up that share.") = 0,
    clip_model: ClipModel = None,
    clip_checkpoint: ClipCheckpoint = None,
    strict_metrics: StrictMetrics = False,
):
    """Run a baseline on a task and write one Result JSON per split.

    Example: unimp-bench baselines run data/synthetic --model pop --task recommendation --out results
    """
    from unimp_bench.baselines.runner import run_baseline
    from unimp_bench.data.transfer import REGIMES, FinetuneSettings, transfer_gain

    settings = scoring_settings(
        tie_rule, clip_model=clip_model, clip_checkpoint=clip_checkpoint, strict_metrics=strict_metrics
    )
    if finetune not in (*REGIMES, "both"):
        raise UnimpError(f"--finetune must be one of {', '.join(REGIMES)} or both, not {finetune!r}")
    regimes = REGIMES if finetune == "both" else (finetune,)
    runs = run_baseline(
        model,
        task,
        data,
        out_dir,
        split_list(splits) or ["test"],
        examples_dir=examples,
        config=config,
        seed=seed,
        scoring=settings,
        show_progress=show_progress(),
        candidates=candidates,
        finetune=tuple(FinetuneSettings(r, target_share, share_seed) for r in regimes),
    )
    for result, path in runs:
        print_result(result, path)
    gain = transfer_gain([result for result, _ in runs])
    if gain:
        shown = ", ".join(f"{k} {v:+.4f}" for k, v in gain.items() if k in ("HR@10", "NDCG@10", "MRR@10"))
        out.print(f"transfer gain on new_domain_finetune (source+target minus scratch): {shown}")


@app.command("train")
@friendly_errors
def train_command(
    config: Annotated[
        Path, typer.Option("--config", help="Training preset, e.g. configs/tiny.yaml or tiny.")
    ],
    data: DataOption,
    run_dir: out_option("Run folder (checkpoints, export, logs).", required=True),
    gpus: Annotated[
        int, typer.Option("--gpus", min=0, help="GPUs per node; 0 runs the same DeepSpeed engine on the CPU.")
    ] = 0,
    hostfile: Annotated[
        Path | None, typer.Option("--hostfile", help="DeepSpeed hostfile for multi-node runs.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run folder's latest checkpoint.")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after this many optimizer steps.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override any config key, e.g. --set train.lr=1e-4 --set model.mask=previous."
        ),
    ] = None,
    overwrite: Overwrite = False,
    ablation: Annotated[
        str | None,
        typer.Option(
            help="Lay a shipped ablation (configs/ablations/NAME.yaml) over the preset, e.g. no_vision."
        ),
    ] = None,
):
    """Train UniMP on all configured tasks at once.

    Example: unimp-bench train --config tiny --data data/synthetic --out runs/tiny --max-steps 200
    """
    from unimp_bench.training.launcher import run_training

    summary = run_training(
        config,
        data,
        run_dir,
        gpus=gpus,
        hostfile=hostfile,
        resume=resume,
        max_steps=max_steps,
        overrides=overrides or [],
        overwrite=overwrite,
        show_progress=show_progress(),
        ablation=ablation,
    )
    stages = ", ".join(f"{s['name']} {s['steps']}/{s['total_steps']}" for s in summary["stages"])
    out.print(f"trained {summary['steps']} steps ({stages}); export: {summary['export']}")


@app.command("eval")
@friendly_errors
def eval_command(
    task: TaskName,
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="Run folder of `train` (its latest export), one of its checkpoints or an export.",
        ),
    ],
    data: Annotated[Path, typer.Option("--data", help="The prepared dataset the model was trained on.")],
    split: Annotated[
        str, typer.Option(help="test, valid, new_user, new_domain or new_domain_finetune.")
    ] = "test",
    out_dir: ResultsOut = Path("results"),
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N examples (a quick look).")
    ] = None,
    examples: Examples = None,
    seed: ExamplesSeed = 0,
    method: Annotated[
        str | None,
        typer.Option(help="Method name in the result (default: UniMP-<run>); the options' tags follow it."),
    ] = None,
    ranking: Annotated[
        str,
        typer.Option(
            help="Ranking tasks: exact (full ranking, one pass), beam (constrained) or unconstrained."
        ),
    ] = "exact",
    beams: Annotated[int, typer.Option(min=1, help="Beams of beam and unconstrained ranking.")] = 10,
    seen_items: Annotated[
        str,
        typer.Option(
            help="exclude (the protocol) or keep the items the user had before the target (recorded)."
        ),
    ] = "exclude",
    candidates: Candidates = "domain",
    text_decoding: Annotated[str, typer.Option(help="Explanation decoding: greedy or beam.")] = "greedy",
    text_beams: Annotated[int, typer.Option(min=1, help="Beams of beam explanation decoding.")] = 4,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Length cap of generated explanations, in tokens.")
    ] = 80,
    drop_text_attrs: Annotated[
        float, typer.Option(help="Robustness: fraction of item attributes removed.")
    ] = 0.0,
    mismatch_images: Annotated[
        float, typer.Option(help="Robustness: fraction of history images replaced by other products' images.")
    ] = 0.0,
    perturbation_seed: seed_option("Seed of the robustness perturbations.") = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 16,
    shard_size: Annotated[int, typer.Option(min=1, help="Examples per resumable shard.")] = 256,
    image_decoding: Annotated[
        str, typer.Option(help="Image generation: greedy, beam or sample (top-k) over the image codes.")
    ] = "greedy",
    image_beams: Annotated[int, typer.Option(min=1, help="Beams of beam image decoding.")] = 4,
    top_k: Annotated[int, typer.Option(min=1, help="Codes sampled from, per step, by sample decoding.")] = 50,
    sample_seed: seed_option("Seed of sample image decoding.") = 0,
    retrieval: Annotated[
        str,
        typer.Option(
            help="Image generation's retrieval: model (its own search instruction, paper eq. 9) or bm25 "
            "(the items the examples were built with)."
        ),
    ] = "model",
    retrieved: Annotated[
        int | None, typer.Option(min=1, help="Items retrieved for image generation (default: the task's).")
    ] = None,
    contact_sheets: Annotated[
        int, typer.Option(min=0, help="Image generation: contact sheets of the first N users (0: none).")
    ] = 8,
    tie_rule: TieRule = "expected",
    bertscore_model: BertscoreModel = "auto",
    bertscore_layers: BertscoreLayers = None,
    clip_model: ClipModel = None,
    clip_checkpoint: ClipCheckpoint = None,
    strict_metrics: StrictMetrics = False,
    gpus: Annotated[
        int,
        typer.Option(
            "--gpus", min=0, help="Predict the shards on this many GPUs per host (DeepSpeed launcher)."
        ),
    ] = 0,
    hostfile: Annotated[
        Path | None, typer.Option("--hostfile", help="DeepSpeed hostfile: every GPU of every host is a rank.")
    ] = None,
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="Predict the shards in this many CPU processes.")
    ] = 1,
):
    """Evaluate a trained UniMP on one task and split: predictions Parquet + Result JSON.

    An interrupted evaluation resumes from its finished shards when run again with the same options.
    With --gpus, --hostfile or --processes every rank predicts every N-th shard; the predictions and
    the result are those of one process.

    Example: unimp-bench eval --task recommendation --checkpoint runs/tiny --data data/synthetic --limit 100
    """
    from unimp_bench.evaluation.checkpoint import evaluate_checkpoint
    from unimp_bench.evaluation.parallel import Parallel
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
        image_decoding=image_decoding,
        image_beams=image_beams,
        top_k=top_k,
        sample_seed=sample_seed,
        retrieval=retrieval,
        retrieved=retrieved,
        contact_sheets=contact_sheets,
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
        settings=settings,
        scoring=scoring_settings(
            tie_rule, bertscore_model, bertscore_layers, clip_model, clip_checkpoint, strict_metrics
        ),
        examples_dir=examples,
        seed=seed,
        method=method,
        show_progress=show_progress(),
        parallel=Parallel(gpus, hostfile, processes),
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
    print_result(result, path)


@app.command("demo")
@friendly_errors
def demo_command(
    out_dir: out_option("Folder for the dataset, examples, runs, results, leaderboard and report.") = Path(
        "demo"
    ),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Skip the model: prepare, build, baselines, leaderboard."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Redo every stage, even those whose outputs are up to date.")
    ] = False,
    model_steps: Annotated[
        int, typer.Option(min=1, help="Optimizer steps of the tiny UniMP's multi-task training.")
    ] = DemoSettings.model_steps,
    finetune_steps: Annotated[
        int, typer.Option(min=1, help="Steps fine-tuning it on the held-out domain (new_domain_finetune).")
    ] = DemoSettings.finetune_steps,
):
    """Run the whole benchmark on the embedded synthetic corpus on the CPU: prepare, build, train and
    evaluate the tiny UniMP on every task, the baselines, the leaderboard and an HTML report. Run
    again, stages whose outputs are up to date are skipped.

    Example: unimp-bench demo --out demo
    """
    from unimp_bench.demo import run_demo
    from unimp_bench.tasks import registry

    settings = DemoSettings(
        model_steps=0 if quick else model_steps, finetune_steps=finetune_steps, force=force
    )
    wide = run_demo(out_dir, out.print, settings, show_progress=show_progress())
    headline = [m for m in ("HR@10", "NDCG@10", "MAE", "F1", "ROUGE-L") if m in wide.columns]
    rows = []
    for row in wide.iter_rows(named=True):
        scored = set(registry().get(row["task"]).metrics)  # a not-applicable row shows n/a in those
        values = [
            f"{row[m]:.4f}" if row[m] is not None else ("n/a" if row.get("note") and m in scored else "")
            for m in headline
        ]
        rows.append([row["method"], row["task"], row["split"], str(row["n_examples"]), *values])
    print_listing(["method", "task", "split", "examples", *headline], rows, whole=("method", "task", "split"))
    out.print(
        f"Leaderboard: {out_dir / 'leaderboard.csv'} (also .md and .png); report: {out_dir / 'report.html'}; "
        f"results in {out_dir / 'results'}."
    )
