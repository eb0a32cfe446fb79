"""Content hashes of what the pipeline writes, to show that a refactoring changed no output byte.

Prepares the synthetic corpus and the real raw files under ../shared/data (when present), builds every
registered task's examples on both (default settings, and random instructions with another seed), and
runs `pop` on recommendation and selection. Prints one JSON object: dataset content hashes, the
sha256 of every examples file, and each result's scores and predictions sha256. Run it before and
after a change and diff the two outputs:

    python benchmarks/content_hashes.py > before.json   # on the old commit
    python benchmarks/content_hashes.py > after.json    # on the new one
    diff before.json after.json && echo unchanged
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_RAW = REPO.parent / "shared" / "data" / "amazon-raw"
REAL_FOLDERS = ("ncloud50__giftcard", "OoEthanoO__LSTMSentimentModel", "Miggy070498__Amazon-Reviews")


def cli(*args: str) -> None:
    command = [sys.executable, "-m", "unimp_bench.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def examples_hashes(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        f"{task}/{split}": [entry["examples"], entry["sha256"]]
        for task, block in manifest["tasks"].items()
        for split, entry in block["splits"].items()
    }


def dataset_hashes(name: str, data: Path, work: Path) -> dict:
    manifest = json.loads((data / "manifest.json").read_text())
    report: dict = {"content_hash": manifest["content_hash"]}
    for label, extra in (("default", []), ("random_seed3", ["--instruction", "random", "--seed", "3"])):
        out = work / f"{name}-examples-{label}"
        cli("build", str(data), "--out", str(out), *extra)
        report[f"examples_{label}"] = examples_hashes(out)
    results = work / f"{name}-results"
    for task in ("recommendation", "selection"):
        examples = work / f"{name}-examples-default"
        cli(
            "baselines",
            "run",
            "--model",
            "pop",
            "--task",
            task,
            str(data),
            "--examples",
            str(examples),
            "--out",
            str(results),
        )
    report["results"] = results_hashes(results)
    return report


def results_hashes(results: Path) -> dict:
    """Each result's scores and the sha256 of its predictions (None for a not-applicable result)."""
    found = {}
    for path in sorted(results.rglob("*.json")):
        result = json.loads(path.read_text())
        predictions = result["provenance"].get("predictions") or {}
        found[path.name] = [result["scores"], predictions.get("sha256")]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-real", action="store_true", help="only the synthetic corpus")
    parser.add_argument(
        "--with-model",
        action="store_true",
        help="also `demo` with its model: a tiny UniMP trained (4 steps) and evaluated",
    )
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory(prefix="unimp-hashes-") as scratch:
        work = Path(scratch)
        synthetic = work / "synthetic"
        cli("prepare", "synthetic", "--out", str(synthetic))
        report["synthetic"] = dataset_hashes("synthetic", synthetic, work)
        if not args.skip_real and SHARED_RAW.is_dir():
            raw = work / "raw"
            raw.mkdir()
            for folder in REAL_FOLDERS:
                for source in sorted((SHARED_RAW / folder).glob("*.json*")):
                    (raw / source.name).symlink_to(source)
            real = work / "real"
            cli("prepare", "amazon", "--raw-dir", str(raw), "--out", str(real), "--workers", "1")
            report["real"] = dataset_hashes("real", real, work)
        if args.with_model:
            demo = work / "demo"
            cli("demo", "--out", str(demo), "--model-steps", "4", "--finetune-steps", "2")
            report["demo"] = results_hashes(demo / "results")
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
