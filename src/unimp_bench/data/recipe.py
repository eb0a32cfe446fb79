"""Data recipes: which domains, how their files are named in each release, k-core and hold-outs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from unimp_bench.config import check_choices, from_mapping, load_yaml
from unimp_bench.errors import UnimpError
from unimp_bench.resources import resource_dir

RELEASES = ("2014", "2018", "2023")


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    description: str = ""
    k_core: int = 5
    new_user_fraction: float = 0.1
    new_domain: str | None = "Office"
    # drop: items with no meta row leave before the k-core; keep: they stay
    items_without_meta: Literal["drop", "keep"] = "drop"
    domains: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {release: file stem}
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k_core < 0:
            raise UnimpError(f"k_core must be 0 or more, got {self.k_core}")
        if not 0 <= self.seed < 2**32:
            raise UnimpError(f"seed must be in [0, 2**32), got {self.seed}")
        if not 0.0 <= self.new_user_fraction < 1.0:
            raise UnimpError(f"new_user_fraction must be in [0, 1), got {self.new_user_fraction}")
        check_choices(self)
        for name, stems in self.domains.items():
            unknown = sorted(set(stems) - set(RELEASES))
            if unknown:
                raise UnimpError(
                    f"domain {name} names unknown release(s) {', '.join(unknown)}; use {RELEASES}"
                )

    def domain_name(self, stem: str, release: str) -> str:
        """The recipe's short name of a file stem, or the stem itself for a domain it does not list."""
        for name, stems in self.domains.items():
            if stems.get(release) == stem or stem == name:
                return name
        return stem


def available_recipes() -> list[str]:
    return sorted(p.stem for p in resource_dir("data_recipes").glob("*.yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    path = Path(name_or_path)
    if not path.suffix:
        path = resource_dir("data_recipes") / f"{name_or_path}.yaml"
        if not path.exists():
            raise UnimpError(
                f"unknown recipe {name_or_path!r}; known recipes: {', '.join(available_recipes())}"
            )
    return from_mapping(Recipe, load_yaml(path), f"recipe {path.name}")


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """The recipe with every non-None override applied (CLI flags win over the YAML)."""
    return dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
