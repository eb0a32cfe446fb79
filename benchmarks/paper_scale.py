"""Throughput of the paper's shape: a random-init UniMP with the `paper` preset's architecture
(configs/paper-shape.yaml: a 3B GPT-NeoX LM, ViT-L-14, the 64-latent resampler of depth 6,
cross-attention every 2 layers; bf16, ZeRO-2, LM and ViT frozen as in the paper) trained for a few
steps through the real trainer, then evaluated with exact ranking. Nothing is downloaded.

With a GPU it runs full size on every visible GPU (through the DeepSpeed launcher, as `train --gpus`
does). Without one it runs the same code at a reduced width (LM 256 x 4 layers, ViT width 128 x 2
layers) and says so: those figures show that the path works, not the paper's speed.

Model FLOPs per trained token = 2 x (forward) + 2 x (backward through activations) times the matmul
weights a token passes (the LM's linear layers with its output head, the cross-attention blocks),
+ 2 x the trainable ones among them (weight gradients), + the attention scores (12 x layers x
length x hidden for forward and backward). The vision tower and the resampler run once per image and
are left out, so MFU is a lower bound. MFU is given against the device's peak (a table of dense bf16
peaks for known GPUs) and against a bf16 matmul measured in the same run.

    python benchmarks/paper_scale.py [--steps 6] [--eval-examples 64] [--out bench-out/paper-scale]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch

from unimp_bench.data.api import prepare_synthetic_dataset
from unimp_bench.evaluation.checkpoint import evaluate_checkpoint
from unimp_bench.evaluation.parallel import Parallel
from unimp_bench.models.predictor import ModelEvalSettings
from unimp_bench.training.launcher import run_training

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "paper-shape.yaml"
REDUCED = [  # the CPU's stand-in: same code and structure, reduced width and depth
    "model.lm.hidden_size=256", "model.lm.layers=4", "model.lm.heads=4", "model.lm.intermediate_size=1024",
    "model.vision.width=128", "model.vision.layers=2", "model.vision.heads=4",
    "model.resampler.depth=2", "train.micro_batch=4", "train.grad_accum=1",
]  # fmt: skip
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def matmul_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """The bf16 rate of one square matmul on `device`: the reference MFU is also given against."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    a @ b  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def flops_per_token(run: Path, length: float) -> tuple[float, dict]:
    """Training FLOPs per token of the exported model (see the module's docstring), and its sizes."""
    from unimp_bench.models.export import load_exported

    model = load_exported(run / "export").model
    config = model.config
    matmul = trainable = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("lm."):
            matmul += module.weight.numel()
            trainable += module.weight.numel() if module.weight.requires_grad else 0
    rows = model.added_output.numel()  # the item and rating output rows, trained
    matmul, trainable = matmul + rows, trainable + rows
    attention = 12 * config.lm.layers * length * config.lm.hidden_size
    sizes = {
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "parameters_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "matmul_parameters_per_token": matmul,
        "lm_hidden": config.lm.hidden_size,
        "lm_layers": config.lm.layers,
        "vision_width": config.vision.width,
    }
    return 4 * matmul + 2 * trainable + attention, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "paper-scale")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("UNIMP_BENCH_NO_PROGRESS", "1")
    gpus = torch.cuda.device_count()
    full = gpus > 0
    device = torch.device("cuda" if full else "cpu")
    name = torch.cuda.get_device_name(0) if full else "CPU"
    emit("device", name, gpus=gpus, size="full (paper shape)" if full else "reduced width: no GPU here")
    data = args.out / "data"
    if not (data / "manifest.json").exists():
        prepare_synthetic_dataset(data, overwrite=True)
    run = args.out / "run"
    overrides = ([] if full else REDUCED) + [f"train.max_steps={args.steps}", "train.tasks=[recommendation]"]
    started = time.perf_counter()
    summary = run_training(
        PRESET, data, run, gpus=gpus, overrides=overrides, overwrite=True, show_progress=False
    )
    emit("training wall seconds (start-up, steps, checkpoint and export)", time.perf_counter() - started,
         steps=summary["steps"])  # fmt: skip
    records = [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]
    steady = records[1:] or records  # the first window includes start-up
    per_rank = statistics.median(r["tokens_per_s"] for r in steady)
    emit("training tokens/s per rank (median of steps after the first)", per_rank, ranks=max(1, gpus))
    emit("training tokens/s, all ranks", per_rank * max(1, gpus))
    length = statistics.mean(r["tokens_per_example"] for r in records)
    per_token, sizes = flops_per_token(run, length)
    emit("model", "random init", **sizes, mean_training_length=round(length, 1))
    achieved = per_rank * per_token / 1e12
    emit("achieved model TFLOP/s per rank", achieved, flops_per_token=per_token)
    reference = matmul_tflops(device, 8192 if full else 1024)
    emit("bf16 matmul TFLOP/s measured here (reference)", reference)
    emit("MFU against the measured bf16 matmul", achieved / reference)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    if peak:
        emit(f"MFU against the {name} dense bf16 peak ({peak} TFLOP/s)", achieved / peak)
    memory = max((r.get("peak_gpu_memory_gib", 0.0) for r in records), default=0.0)
    emit("peak GPU memory GiB (rank 0)" if full else "peak process RSS GiB",
         memory if full else max(r["peak_rss_gib"] for r in records))  # fmt: skip
    settings = ModelEvalSettings(limit=args.eval_examples, batch_size=8, contact_sheets=0)
    started = time.perf_counter()
    evaluate_checkpoint(
        "recommendation", run, data, "test", args.out / "results", settings=settings,
        parallel=Parallel(gpus=gpus), method="paper-shape",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    rate = args.eval_examples / seconds
    emit("exact-ranking examples/s (with model load)", rate, examples=args.eval_examples)


def emit(figure: str, value, **extra) -> None:
    value = float(f"{value:.4g}") if isinstance(value, float) else value
    print(json.dumps({"figure": figure, "value": value, **extra}), flush=True)


if __name__ == "__main__":
    main()
