"""RecBole 1.2.1 on numpy 2 and torch >= 2.6: the compatibility shims, in this one place.

- numpy 2 removed the aliases np.float_, np.complex_ and np.unicode_ (and numpy 1.24 removed
  np.float), which RecBole still uses at import time and in its metric classes; they are restored
  as aliases of the types they always meant before RecBole is imported.
- recbole.quick_start is never imported: it pulls in ray, which needs pkg_resources.
"""

from __future__ import annotations

import numpy as np

_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_, "float": float}


def apply_numpy_aliases() -> None:
    for name, value in _ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def import_recbole_metrics():
    """recbole.evaluator.metrics, importable on numpy 2."""
    apply_numpy_aliases()
    from recbole.evaluator import metrics

    return metrics
