"""The native (torch / numpy) baselines, by the name their YAML gives them."""

from __future__ import annotations

from unimp_bench.baselines.bm25 import BM25Predictor
from unimp_bench.baselines.popularity import PopularityPredictor

NATIVE = {"pop": PopularityPredictor, "bm25": BM25Predictor}
