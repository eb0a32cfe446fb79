"""`unimp-bench generate`: one personalized image for a user and a query."""

from pathlib import Path
from typing import Annotated

import typer

from unimp_bench.cli.common import DataOption, app, friendly_errors, out, seed_option
from unimp_bench.errors import UnimpError


@app.command("generate")
@friendly_errors
def generate_command(
    checkpoint: Annotated[Path, typer.Option(help="Run folder of `train` (trained on image_generation).")],
    data: DataOption,
    user: Annotated[str, typer.Option(help="The user: a raw user_id or a user_idx.")],
    query: Annotated[str, typer.Option(help='What the user searches for, e.g. "low top sneaker".')],
    image: Annotated[Path, typer.Option("--out", help="The PNG to write; a JSON of the same name says how.")],
    beams: Annotated[int | None, typer.Option(min=1, help="Beam search over the image codes.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample the codes (top-k) instead.")] = False,
    top_k: Annotated[int, typer.Option(min=1, help="Codes sampled from, per step.")] = 50,
    seed: seed_option("Seed of sampling.") = 0,
    retrieval: Annotated[
        str, typer.Option(help="model (its own search instruction, paper eq. 9) or bm25 (item text).")
    ] = "model",
    retrieved: Annotated[
        int | None, typer.Option(min=1, help="Items retrieved (default: the task's, 2).")
    ] = None,
):
    """Generate the image a user would want for a query: the model retrieves items with its search
    instruction, then writes the image's codes, which the run's image tokenizer decodes.

    Example: unimp-bench generate --checkpoint runs/tiny --data data/synthetic --user 12 --query sneaker
    --out x.png
    """
    from unimp_bench.data.contract import open_dataset
    from unimp_bench.fileio import write_json_atomic
    from unimp_bench.models.export import load_exported, resolve_export
    from unimp_bench.models.image_generation import generate_for_user
    from unimp_bench.models.predictor import ModelEvalSettings, UniMPPredictor

    if image.suffix.lower() != ".png":
        raise UnimpError(f"--out must name a .png file, got {image}")
    if sample and beams is not None:
        raise UnimpError("pass --beams or --sample, not both")
    decoding = "sample" if sample else "beam" if beams is not None else "greedy"
    settings = ModelEvalSettings(
        image_decoding=decoding,
        image_beams=beams or 4,
        top_k=top_k,
        sample_seed=seed,
        retrieval=retrieval,
        retrieved=retrieved,
    )
    loaded = load_exported(resolve_export(checkpoint))
    reason = UniMPPredictor.cannot_serve(_image_task(), loaded.meta)
    if reason:
        raise UnimpError(f"{checkpoint} cannot generate images: {reason}")
    predictor = UniMPPredictor(loaded, open_dataset(data), settings, "UniMP")
    report = generate_for_user(predictor, user, query, image)
    report |= {"checkpoint": str(resolve_export(checkpoint).resolve()), "seed": seed if sample else None}
    write_json_atomic(image.with_suffix(".json"), report)
    titles = ", ".join(item["title"] or item["asin"] for item in report["retrieved"])
    out.print(f"Wrote {image} (retrieved: {titles}) and {image.with_suffix('.json')}.", highlight=False)


def _image_task():
    from unimp_bench.tasks import registry

    return registry().get("image_generation")
