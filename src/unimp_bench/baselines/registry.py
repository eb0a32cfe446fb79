"""Baseline definitions (data in baselines/*.yaml) and the predictors that implement them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unimp_bench.config import from_mapping, load_yaml
from unimp_bench.errors import UnimpError
from unimp_bench.resources import resource_dir
from unimp_bench.task_kinds import KINDS

Engine = Literal["native", "recbole"]


@dataclass(frozen=True)
class BaselineSpec:
    name: str
    description: str
    engine: Engine  # checked by the config loader, like every Literal field
    kinds: tuple[str, ...]  # the task kinds it serves (task_kinds.KINDS): every task of those kinds
    params: dict[str, Any] = field(default_factory=dict)


def available_baselines() -> dict[str, Path]:
    return {path.stem.lower(): path for path in sorted(resource_dir("baselines").glob("*.yaml"))}


def load_baseline(model: str, config: Path | None = None) -> BaselineSpec:
    """The spec of `model` from baselines/<model>.yaml, or from `config` when given."""
    if config is None:
        known = available_baselines()
        if model.lower() not in known:
            raise UnimpError(f"unknown baseline {model!r}; available: {', '.join(known)}")
        config = known[model.lower()]
    mapping = load_yaml(config)
    if isinstance(mapping, dict) and "tasks" in mapping:
        raise UnimpError(f"{config}: name the task kinds the baseline serves under kinds: (formerly tasks:)")
    spec = from_mapping(BaselineSpec, mapping, config.name)
    if spec.name.lower() != model.lower():
        raise UnimpError(f"{config} defines baseline {spec.name!r}, not {model!r}")
    unknown = [kind for kind in spec.kinds if kind not in KINDS]
    if unknown:
        raise UnimpError(f"{config}: unknown task kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    return spec


def predictor_class(spec: BaselineSpec) -> type:
    """The class that serves a baseline: what it can answer before anything is trained."""
    if spec.engine == "recbole":
        from unimp_bench.baselines.recbole.predictor import RecBolePredictor

        return RecBolePredictor
    from unimp_bench.baselines.native import NATIVE

    if spec.name.lower() not in NATIVE:
        raise UnimpError(f"baseline {spec.name} has no native implementation")
    return NATIVE[spec.name.lower()]


def make_predictor(spec: BaselineSpec, dataset):
    """The predictor of a baseline, its parameters checked by its own dataclass, ready to predict: a
    RecBole baseline is built, then trained here on the dataset's train split."""
    predictor = predictor_class(spec).from_spec(spec, dataset)
    return predictor.fit() if spec.engine == "recbole" else predictor
