"""Result JSON: the scores of one method on one task, split and dataset, with their provenance."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from unimp_bench.errors import UnimpError
from unimp_bench.fileio import write_json_atomic

RESULT_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Result:
    method: str
    task: str
    task_version: int
    split: str
    dataset: dict  # name, domains, content_hash, path
    scores: dict[str, float]
    n_examples: int
    provenance: dict = field(
        default_factory=dict
    )  # package version, seed, config, checkpoint, inputs' hashes

    def to_json(self) -> dict:
        return {
            "result_version": RESULT_VERSION,
            "method": self.method,
            "task": self.task,
            "task_version": self.task_version,
            "split": self.split,
            "dataset": self.dataset,
            "n_examples": self.n_examples,
            "scores": {name: (None if math.isnan(v) else v) for name, v in self.scores.items()},
            "provenance": self.provenance,
        }

    def file_name(self) -> str:
        parts = (self.method, self.task, self.split, self.dataset["name"], self.dataset["content_hash"][:12])
        return "__".join(safe_name(str(p)) for p in parts) + ".json"


def safe_name(text: str) -> str:
    """`text` usable in a file name: runs of other characters than letters, digits, . _ - become -."""
    return _UNSAFE.sub("-", text).strip("-") or "x"


def write_result(result: Result, folder: Path) -> Path:
    path = folder / result.file_name()
    write_json_atomic(path, result.to_json())
    return path


REQUIRED_KEYS = ("method", "task", "task_version", "split", "dataset", "scores", "n_examples", "provenance")


def read_result(path: Path) -> Result:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnimpError(f"{path} is not valid JSON, so it cannot be read as a result") from None
    if not isinstance(payload, dict) or payload.get("result_version") != RESULT_VERSION:
        raise UnimpError(f"{path} is not a unimp-bench result (result_version {RESULT_VERSION} expected)")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise UnimpError(f"{path} is a result without {', '.join(missing)}")
    scores = payload["scores"]
    if not isinstance(scores, dict) or not all(
        v is None or isinstance(v, (int, float)) for v in scores.values()
    ):
        raise UnimpError(f"{path} has scores that are not numbers")
    if not isinstance(payload["dataset"], dict) or "content_hash" not in payload["dataset"]:
        raise UnimpError(f"{path} does not say which dataset it was measured on")
    return Result(
        method=str(payload["method"]),
        task=str(payload["task"]),
        task_version=int(payload["task_version"]),
        split=str(payload["split"]),
        dataset=payload["dataset"],
        scores={k: (math.nan if v is None else float(v)) for k, v in scores.items()},
        n_examples=int(payload["n_examples"]),
        provenance=payload["provenance"],
    )


def find_results(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UnimpError(f"results folder {folder} does not exist")
    return sorted(
        p
        for p in folder.rglob("*.json")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
