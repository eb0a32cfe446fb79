"""Locate data shipped with the package (recipes, tasks) in a wheel or a source checkout."""

from pathlib import Path


def resource_dir(name: str) -> Path:
    packaged = Path(__file__).resolve().parent / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"package data folder {name!r} is missing from this installation")
