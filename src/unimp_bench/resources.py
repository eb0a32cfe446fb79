"""Locate data shipped with the package (recipes, tasks, baseline configs) in a wheel or a checkout."""

from pathlib import Path

# top-level folder in the source checkout -> folder inside the installed package
PACKAGED_NAMES = {
    "data_recipes": "data_recipes",
    "tasks": "task_definitions",
    "baselines": "baseline_configs",
    "reference": "reference",
    "configs": "training_presets",
}


def resource_dir(name: str) -> Path:
    package = Path(__file__).resolve().parent
    packaged = package / PACKAGED_NAMES.get(name, name)
    if packaged.is_dir():
        return packaged
    checkout = package.parents[1] / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"package data folder {name!r} is missing from this installation")
