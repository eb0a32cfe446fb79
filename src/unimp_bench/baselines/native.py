"""The native (torch / numpy) baselines, by the name their YAML gives them."""

from __future__ import annotations

from unimp_bench.baselines.bm25 import BM25Predictor
from unimp_bench.baselines.content_knn import ContentKNNPredictor
from unimp_bench.baselines.explanation import ReviewRetrievalPredictor
from unimp_bench.baselines.image_references import ImageReferencePredictor
from unimp_bench.baselines.personal_search import PersonalBM25Predictor, ZAMPredictor
from unimp_bench.baselines.popularity import PopularityPredictor
from unimp_bench.baselines.rating import BiasedMFPredictor, MeanRatingPredictor
from unimp_bench.baselines.uniform import UniformPredictor
from unimp_bench.baselines.vbpr import VBPRPredictor

NATIVE = {
    "pop": PopularityPredictor,
    "bm25": BM25Predictor,
    "bm25-personal": PersonalBM25Predictor,
    "zam": ZAMPredictor,
    "global-mean": MeanRatingPredictor,
    "user-mean": MeanRatingPredictor,
    "item-mean": MeanRatingPredictor,
    "biasedmf": BiasedMFPredictor,
    "review-retrieval": ReviewRetrievalPredictor,
    "vbpr": VBPRPredictor,
    "vbpr-thumbnail": VBPRPredictor,
    "content-knn": ContentKNNPredictor,
    "uniform": UniformPredictor,
    "image-random": ImageReferencePredictor,
    "image-retrieved": ImageReferencePredictor,
    "image-tokenizer": ImageReferencePredictor,
}
