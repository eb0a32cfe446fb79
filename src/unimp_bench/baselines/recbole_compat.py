"""RecBole 1.2.1 on numpy 2 and torch >= 2.6: the compatibility shims, in this one place.

- numpy 2 removed the aliases np.float_, np.complex_ and np.unicode_ (and numpy 1.24 removed
  np.float), which RecBole still uses at import time and in its metric classes; they are restored
  as aliases of the types they always meant before RecBole is imported.
- recbole.quick_start is never imported: it pulls in ray, which needs pkg_resources.
- Graph models (LightGCN, NGCF, ...) fill their adjacency with scipy's private
  `dok_matrix._update`, which newer scipy removed; it is restored as an update of the matrix's
  own key -> value store.
- RecBole's Config reads `--key=value` options from sys.argv, which would let our own command line
  leak into its configuration; it is given an empty command line while it is built.
- Importing RecBole's sequential models runs `torch.autograd.set_detect_anomaly(True)` (a debugging
  leftover at the top of sine.py), which switches anomaly mode on for the whole process: every op then
  records a Python stack trace and every backward checks for NaNs (about 10% of a SASRec step was
  spent formatting stack traces). The models are imported once here and the mode is put back.
- RecBole's Config runs `eval` on every string value of the options it is given (so a baseline YAML
  could run code); `literal_config` builds it with a conversion that parses Python literals only
  (ast.literal_eval), with RecBole's own fallbacks (`"true"`/`"false"`, anything else stays a string).
- pandas 3's copy-on-write silently ignores RecBole's in-place column fills: pandas stays below 3
  (pyproject.toml).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_, "float": float}


def apply_numpy_aliases() -> None:
    for name, value in _ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    _restore_dok_update()


def _restore_dok_update() -> None:
    import scipy.sparse as sparse

    if not hasattr(sparse.dok_matrix, "_update"):

        def _update(self, entries) -> None:
            self._dict.update(entries)

        sparse.dok_matrix._update = _update


@functools.cache
def prepare_recbole() -> None:
    """Make RecBole importable and harmless: the numpy aliases, and its sequential model package (the
    one whose sine.py sets anomaly mode) imported once with torch's anomaly mode left as it was."""
    import importlib

    import torch

    apply_numpy_aliases()
    anomaly = torch.is_anomaly_enabled()
    try:
        importlib.import_module("recbole.model.sequential_recommender")
    finally:
        torch.autograd.set_detect_anomaly(anomaly)


def import_recbole_metrics():
    """recbole.evaluator.metrics, importable on numpy 2."""
    apply_numpy_aliases()
    from recbole.evaluator import metrics

    return metrics


@contextlib.contextmanager
def quiet_recbole() -> Iterator[None]:
    """RecBole calls with our command line hidden from it and its pandas deprecation noise muted."""
    arguments = sys.argv
    sys.argv = arguments[:1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.argv = arguments


_LITERAL_TYPES = (str, int, float, list, tuple, dict, bool)


def literal_value(value: Any) -> Any:
    """RecBole's conversion of a string option, without code execution: a Python literal is parsed,
    "true"/"false" (any case) are booleans, anything else stays the string it was."""
    if not isinstance(value, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        lowered = value.strip().lower()
        return {"true": True, "false": False}.get(lowered, value)
    return parsed if parsed is None or isinstance(parsed, _LITERAL_TYPES) else value


@functools.cache
def _literal_config_class():
    prepare_recbole()
    from recbole.config import Config

    class LiteralConfig(Config):
        """RecBole's Config whose string options are parsed as literals, never evaluated."""

        def _convert_config_dict(self, config_dict):
            return {key: literal_value(value) for key, value in config_dict.items()}

        def _load_cmd_line(self):  # our command line is not RecBole's
            return {}

    return LiteralConfig


def literal_config(model, dataset: str, options: dict[str, Any]):
    """RecBole's Config for `model` on `dataset` with `options`; nothing in them is evaluated."""
    with quiet_recbole():
        return _literal_config_class()(model=model, dataset=dataset, config_dict=options)
